"""Configuration of the motion -> 2D keypoints -> pose images path (body model, camera framing, alignment to a
reference pose, drawing style) and of the DWPose detector that finds a reference pose in a photo or video."""

from __future__ import annotations

from dataclasses import dataclass

from iasa.config import check, check_choice


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
    # How the motion is laid onto a reference pose (iasa.pose.alignment): "unianimate" gives the skeleton the
    # reference's limb lengths and puts its neck on the reference's (UniAnimate's run_align_pose.py);
    # "similarity" moves the whole skeleton by the scale, rotation and translation fitted on align_body_points.
    alignment: str = "unianimate"
    # The "similarity" fit of the projected skeleton of the first frame to the reference keypoints uses
    # these body points (names from iasa.pose.keypoints.BODY_NAMES).
    align_body_points: tuple[str, ...] = (
        "nose", "neck", "right_shoulder", "left_shoulder", "right_hip", "left_hip",
        "right_eye", "left_eye", "right_ear", "left_ear",
    )  # fmt: skip
    # Reference points with a lower score are left out of the alignment (DWPose draws points above 0.3).
    align_min_score: float = 0.3
    # Pose images (iasa.pose.style): "unianimate" (body, feet, hands: what UniAnimate's checkpoint was trained
    # on), "face" (also the 68 face points) or "auto" (what the loaded weights were trained on: the style a
    # LoRA file records, else "unianimate").
    style: str = "auto"

    def validate(self) -> None:
        from iasa.pose.keypoints import BODY_NAMES
        from iasa.pose.pipeline import ALIGNMENTS
        from iasa.pose.style import AUTO_STYLE, POSE_STYLES

        for key in ("image_height", "image_width", "smplx_chunk_frames"):
            check(getattr(self, key) >= 1, key, getattr(self, key), "must be >= 1")
        for key in ("camera_distance_m", "framed_height_m"):
            check(getattr(self, key) > 0, key, getattr(self, key), "must be > 0 metres")
        unknown = [name for name in self.align_body_points if name not in BODY_NAMES]
        check(not unknown, "align_body_points", list(self.align_body_points),
              f"unknown points {unknown}; choose from {list(BODY_NAMES)}")  # fmt: skip
        check(0 <= self.align_min_score <= 1, "align_min_score", self.align_min_score, "must be in [0, 1]")
        check_choice("alignment", self.alignment, ALIGNMENTS)
        check_choice("style", self.style, (*POSE_STYLES, AUTO_STYLE))


@dataclass
class DetectorConfig:
    """The DWPose whole-body detector (iasa.pose.detection): two ONNX files from yzd-v/DWPose, run locally."""

    # YOLOX-L person detector (yolox_l.onnx of https://huggingface.co/yzd-v/DWPose).
    person_model: str = "checkpoints/dwpose/yolox_l.onnx"
    # DWPose whole-body model, 133 COCO-WholeBody points (dw-ll_ucoco_384.onnx of yzd-v/DWPose).
    pose_model: str = "checkpoints/dwpose/dw-ll_ucoco_384.onnx"
    # A box is a person when objectness x person-class probability exceeds this (DWPose's 0.3).
    person_score_threshold: float = 0.3
    # Person boxes overlapping a higher-scoring one by more than this IoU are dropped (DWPose's 0.45).
    nms_iou_threshold: float = 0.45
    # onnxruntime execution providers: auto (CUDA when onnxruntime has it, else CPU), cuda or cpu.
    providers: str = "auto"

    def validate(self) -> None:
        from iasa.pose.detection import PROVIDERS

        check_choice("providers", self.providers, PROVIDERS)
        for key in ("person_score_threshold", "nms_iou_threshold"):
            check(0 <= getattr(self, key) <= 1, key, getattr(self, key), "must be in [0, 1]")
