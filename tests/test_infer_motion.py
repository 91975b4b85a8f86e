"""infer_motion.py end to end on generated audio (procedural model, and EMAGE with a tiny checkpoint)."""

from pathlib import Path

import numpy as np
import pytest
import soundfile

from iasa.motion.motion_file import SmplxMotion
from iasa.pose.keypoints import WholeBodyKeypoints
from motion_cli import SR, infer_motion, run, speech_like

@pytest.fixture()
def audio_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "audio"
    folder.mkdir()
    soundfile.write(folder / "speech.wav", speech_like(2.13), SR)
    soundfile.write(folder / "short.flac", speech_like(0.1), SR)
    soundfile.write(folder / "quiet.wav", np.zeros(SR), SR)
    (folder / "broken.wav").write_bytes(b"RIFF....WAVEfmt definitely not audio" * 4)
    (folder / "notes.txt").write_text("not an audio file and not picked up")
    return folder


def test_procedural_folder_with_a_corrupt_file(audio_folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code, err = run(capsys, "--model", "procedural", "--audio_folder", str(audio_folder), "--save_folder", str(out))
    assert code == infer_motion.EXIT_SOME_FILES_FAILED
    assert "broken.wav" in err and "skipped" in err
    assert "very short audio (0.10 s)" in err and "quiet.wav: the audio is silent" in err
    expected_frames = {"speech": 64, "short": 3, "quiet": 30}  # round(seconds * 30)
    for name, frames in expected_frames.items():
        motion = SmplxMotion.load(out / f"{name}_output.npz")
        keypoints = WholeBodyKeypoints.load(out / f"{name}_keypoints.npz")
        assert motion.num_frames == frames and keypoints.num_frames == frames
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{name}_{kind}.npz" for name in expected_frames for kind in ("output", "keypoints")
    )  # nothing for broken.wav, no temporaries


def test_visualization_writes_a_video_with_audio(tmp_path: Path, capsys) -> None:
    import imageio.v2 as imageio

    folder = tmp_path / "audio"
    folder.mkdir()
    soundfile.write(folder / "clip.wav", speech_like(1.0), SR)
    out = tmp_path / "out"
    code, _ = run(
        capsys, "--model", "procedural", "--audio_folder", str(folder), "--save_folder", str(out), "--visualization",
        "pose.image_height=256", "pose.image_width=160",
    )  # fmt: skip
    assert code == 0
    reader = imageio.get_reader(out / "clip_skeleton.mp4")
    meta = reader.get_meta_data()
    frames = [frame for frame in reader]
    assert meta["audio_codec"] == "aac" and meta["fps"] == 30.0
    assert len(frames) == 30 and frames[0].shape == (256, 160, 3)
    assert frames[10].max() > 200 and frames[10].mean() < 60  # a bright skeleton on black
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_without_model_or_checkpoint_says_what_to_download(audio_folder: Path, tmp_path: Path, capsys) -> None:
    code, err = run(capsys, "--audio_folder", str(audio_folder), "--save_folder", str(tmp_path / "out"))
    assert code == infer_motion.EXIT_USAGE
    assert "huggingface.co/H-Liu1997/emage_audio" in err and "smpl-x.is.tue.mpg.de" in err
    assert "--model procedural" in err
    assert not (tmp_path / "out").exists()


def test_emage_with_a_missing_checkpoint_is_an_error(audio_folder: Path, tmp_path: Path, capsys) -> None:
    code, err = run(
        capsys, "--model", "emage", "--ckpt", str(tmp_path / "absent"), "--audio_folder", str(audio_folder),
        "--save_folder", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == infer_motion.EXIT_USAGE and "does not exist" in err and "H-Liu1997/emage_audio" in err


def test_missing_smplx_model_is_an_error_before_any_work(audio_folder: Path, tmp_path: Path, capsys) -> None:
    code, err = run(
        capsys, "--model", "procedural", "--smplx_dir", str(tmp_path), "--audio_folder", str(audio_folder),
        "--save_folder", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == infer_motion.EXIT_USAGE and "SMPLX_NEUTRAL_2020.npz" in err and "smpl-x.is.tue.mpg.de" in err


def test_unknown_config_key_is_an_error(audio_folder: Path, tmp_path: Path, capsys) -> None:
    code, err = run(
        capsys, "--model", "procedural", "--audio_folder", str(audio_folder), "--save_folder", str(tmp_path / "o"),
        "pose.image_heigth=10",
    )  # fmt: skip
    assert code == infer_motion.EXIT_USAGE and "image_heigth" in err


def test_emage_checkpoint_runs_through_the_cli(tmp_path: Path, capsys, write_emage_checkpoint, tiny_emage_config) -> None:
    checkpoint = tmp_path / "emage_audio"
    write_emage_checkpoint(checkpoint, tiny_emage_config())
    folder = tmp_path / "audio"
    folder.mkdir()
    soundfile.write(folder / "speech.wav", speech_like(2.13), SR)
    out = tmp_path / "out"
    code, _ = run(capsys, "--ckpt", str(checkpoint), "--device", "cpu", "--audio_folder", str(folder), "--save_folder", str(out))
    assert code == 0
    motion = SmplxMotion.load(out / "speech_output.npz")
    assert motion.num_frames == 64 and WholeBodyKeypoints.load(out / "speech_keypoints.npz").num_frames == 64


def test_reference_keypoints_set_the_image_size_and_alignment(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "audio"
    folder.mkdir()
    soundfile.write(folder / "clip.wav", speech_like(0.5), SR)
    first = tmp_path / "first"
    assert run(capsys, "--model", "procedural", "--audio_folder", str(folder), "--save_folder", str(first))[0] == 0
    default = WholeBodyKeypoints.load(first / "clip_keypoints.npz")
    # A reference: the first frame shifted right by 10% of a 600x600 image.
    reference = default.slice_frames(0, 1)
    scale = np.array(default.image_size[::-1]) / 600.0
    reference = WholeBodyKeypoints(
        body=reference.body * scale + [0.1, 0.0], body_score=reference.body_score, hands=reference.hands * scale,
        hands_score=reference.hands_score, face=reference.face * scale, face_score=reference.face_score,
        image_size=(600, 600),
    )  # fmt: skip
    reference.save(tmp_path / "reference.npz")
    second = tmp_path / "second"
    code, _ = run(
        capsys, "--model", "procedural", "--audio_folder", str(folder), "--save_folder", str(second),
        f"reference_keypoints={tmp_path / 'reference.npz'}",
    )  # fmt: skip
    assert code == 0
    aligned = WholeBodyKeypoints.load(second / "clip_keypoints.npz")
    assert aligned.image_size == (600, 600)
    nose_and_shoulders = [0, 2, 5]
    np.testing.assert_allclose(aligned.body[0, nose_and_shoulders], reference.body[0, nose_and_shoulders], atol=1e-3)


def test_pose_package_exports_the_video_stage_calls() -> None:
    import iasa.pose
    from iasa.pose.drawing import draw_pose_frames
    from iasa.pose.pipeline import motion_to_keypoints

    assert iasa.pose.motion_to_keypoints is motion_to_keypoints and iasa.pose.draw_pose_frames is draw_pose_frames
