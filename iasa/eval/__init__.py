"""Co-speech motion metrics as defined by EMAGE's evaluation tools (emage_evaltools).

beat_consistency: BC, audio onsets vs. upper-body speed minima. diversity: L1 diversity of joint
positions. frechet: Frechet distance between Gaussian fits of two feature sets. fgd_autoencoder: the
skeleton-conv autoencoder whose latents FGD compares.
"""
