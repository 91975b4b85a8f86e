"""Configuration of the motion -> 2D keypoints path: body model, camera framing, alignment."""

from __future__ import annotations

from dataclasses import dataclass

from iasa.config import check


@dataclass
class PoseConfig:
    # Output image size in pixels; a reference keypoint file replaces it with the reference's size.
    image_height: int = 832
    image_width: int = 480
    # Folder holding smplx/SMPLX_NEUTRAL_2020.npz; empty = the built-in skeleton (iasa.pose.skeleton).
    smplx_dir: str = ""
    # BEAT2 / EMAGE poses store hand rotations relative to SMPL-X's mean hand pose (smplx's default).
    smplx_flat_hand_mean: bool = False
    # Frames per forward pass of the SMPL-X model (bounds memory on long clips).
    smplx_chunk_frames: int = 256
    # Camera distance from the framed point, along +Z (the direction the person faces), in metres.
    camera_distance_m: float = 2.5
    # Metres of the body, at the person's depth, that fill the image height (sets the focal length).
    framed_height_m: float = 1.1
    # The image centre sits this far above the rest-pose pelvis: head to hips in an upper-body shot.
    frame_center_above_pelvis_m: float = 0.3
    # Turn the clip about the vertical axis so that the person faces the camera on average.
    face_camera: bool = True
    # Fit a similarity transform (scale, rotation, translation) of the projected skeleton of the first
    # frame to the reference keypoints on these body points (names from iasa.pose.keypoints.BODY_NAMES).
    align_body_points: tuple[str, ...] = (
        "nose", "neck", "right_shoulder", "left_shoulder", "right_hip", "left_hip",
        "right_eye", "left_eye", "right_ear", "left_ear",
    )  # fmt: skip
    # Reference points with a lower score are left out of the alignment.
    align_min_score: float = 0.3

    def validate(self) -> None:
        from iasa.pose.keypoints import BODY_NAMES

        for key in ("image_height", "image_width", "smplx_chunk_frames"):
            check(getattr(self, key) >= 1, key, getattr(self, key), "must be >= 1")
        for key in ("camera_distance_m", "framed_height_m"):
            check(getattr(self, key) > 0, key, getattr(self, key), "must be > 0 metres")
        unknown = [name for name in self.align_body_points if name not in BODY_NAMES]
        check(not unknown, "align_body_points", list(self.align_body_points),
              f"unknown points {unknown}; choose from {list(BODY_NAMES)}")  # fmt: skip
        check(0 <= self.align_min_score <= 1, "align_min_score", self.align_min_score, "must be in [0, 1]")
