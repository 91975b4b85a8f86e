"""SMPL-X motion to 2D whole-body keypoints, skeleton drawing and keypoint files."""
