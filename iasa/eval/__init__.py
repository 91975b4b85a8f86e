"""Evaluation metrics.

Co-speech motion, as defined by EMAGE's evaluation tools (emage_evaltools): beat_consistency (BC, audio
onsets vs. upper-body speed minima), diversity (L1 diversity of joint positions), frechet (Frechet distance
between Gaussian fits of two feature sets), fgd_autoencoder (the skeleton-conv autoencoder whose latents
FGD compares).

Generated video against its ground truth (the miniature Table 2 on the synthetic avatar): video_metrics
(PSNR, SSIM, flicker, per clip and aggregated), region_masks (face, mouth and hand pixels from keypoints),
lip_sync (the mouth opening read off the image, compared over time), comparison_grid (the ground truth
beside each variant, as a PNG), speed (frames per second on a GPU or capped CPU threads).
miniature puts them together: the miniature's Table 2 (scripts/eval_miniature.py), each variant generating the
held-out clips through the real inference path.
"""
