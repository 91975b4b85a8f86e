"""Synthetic talking-avatar data made on the CPU from seeds: speech-like audio (speech), a cartoon person's
look (identity) drawn from whole-body keypoints (avatar), gesture styles of the procedural motion
(gestures), and the dataset of clips that the training stages read (dataset,
scripts/make_synthetic_dataset.py)."""
