"""Audio to SMPL-X motion: the EMAGE model, a procedural fallback, audio loading and the motion file format."""
