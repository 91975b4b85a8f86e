"""infer_motion.py after kill -9, Ctrl-C and SIGTERM: no hidden temporaries stay behind and finished files are
kept, and a --save_folder that is a file is a one-line error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import soundfile

from iasa.motion.motion_file import SmplxMotion
from iasa.pose import drawing
from iasa.pose.keypoints import WholeBodyKeypoints
from motion_cli import SR, infer_motion, run, speech_like

ROOT = Path(__file__).resolve().parents[1]


def finished_process_id() -> int:
    """The id of a process that has exited (and been reaped): what a run killed with SIGKILL leaves in a name."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_temporaries_of_a_killed_run_are_removed_on_the_next_start(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "audio"
    folder.mkdir()
    soundfile.write(folder / "clip.wav", speech_like(0.3), SR)
    out = tmp_path / "out"
    out.mkdir()
    dead, alive = finished_process_id(), infer_motion.os.getpid()
    stale = [out / f".clip_output-{dead}-x1y2.npz", out / f".clip_skeleton-{dead}-video-abc.mp4"]
    kept = [out / f".clip_keypoints-{alive}-inuse.npz", out / f".other_output-{dead}-notours.npz", out / "notes.txt"]
    for path in stale + kept:
        path.write_bytes(b"partial")
    code, _ = run(capsys, "--model", "procedural", "--audio_folder", str(folder), "--save_folder", str(out))
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(["clip_output.npz", "clip_keypoints.npz", *(p.name for p in kept)])


def test_sigterm_stops_like_ctrl_c_and_leaves_no_temporary(tmp_path: Path) -> None:
    folder = tmp_path / "audio"
    folder.mkdir()
    soundfile.write(folder / "long.wav", speech_like(40.0), SR)
    out = tmp_path / "out"
    command = [sys.executable, str(ROOT / "infer_motion.py"), "--model", "procedural", "--audio_folder", str(folder),
               "--save_folder", str(out), "--visualization", "pose.image_height=512", "pose.image_width=512"]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list(out.glob(".long_skeleton-*")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # wait until the skeleton video is being written
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "interrupted (SIGTERM)" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == []  # neither temporaries nor half of this file's outputs


def clips_a_b_c(tmp_path: Path) -> Path:
    """A folder of three half-second clips, a, b and c (15 frames each), processed in that order."""
    folder = tmp_path / "audio"
    folder.mkdir()
    for seed, name in enumerate(("a", "b", "c")):
        soundfile.write(folder / f"{name}.wav", speech_like(0.5, seed), SR)
    return folder


def run_with_videos(capsys, folder: Path, out: Path) -> tuple[int, str]:
    return run(capsys, "--model", "procedural", "--audio_folder", str(folder), "--save_folder", str(out),
               "--visualization", "pose.image_height=64", "pose.image_width=64")  # fmt: skip


def assert_only_a_is_kept(out: Path) -> None:
    """a, finished before the stop, is whole; b, being written, left nothing, not even a temporary."""
    import imageio.v2 as imageio

    assert sorted(p.name for p in out.iterdir()) == ["a_keypoints.npz", "a_output.npz", "a_skeleton.mp4"]
    assert SmplxMotion.load(out / "a_output.npz").num_frames == 15
    assert WholeBodyKeypoints.load(out / "a_keypoints.npz").num_frames == 15
    assert sum(1 for _ in imageio.get_reader(out / "a_skeleton.mp4")) == 15  # list() would ask len(): inf


def test_ctrl_c_in_the_middle_of_a_video_keeps_the_files_before_it(tmp_path: Path, capsys, monkeypatch) -> None:
    real_frames, videos = drawing.iter_pose_frames, []

    def frames_with_ctrl_c(keypoints, style):
        videos.append(keypoints.num_frames)
        for index, frame in enumerate(real_frames(keypoints, style)):
            if len(videos) == 2 and index == 5:  # in the middle of b's video
                raise KeyboardInterrupt  # what Python's SIGINT handler raises
            yield frame

    monkeypatch.setattr(drawing, "iter_pose_frames", frames_with_ctrl_c)
    out = tmp_path / "out"
    code, err = run_with_videos(capsys, clips_a_b_c(tmp_path), out)
    assert code == 128 + signal.SIGINT and "Traceback" not in err
    assert err.rstrip().endswith(f"interrupted (SIGINT); files finished so far are in {out}")
    assert videos == [15, 15]  # c was never started
    assert_only_a_is_kept(out)


class SigtermWhenCollected:
    """Sends this process SIGTERM from __del__, where Python drops any exception raised (as it would one raised
    while imageio's writer closes ffmpeg from its __del__): a signal handler that raised there lost the stop."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_inside_code_that_drops_exceptions_stops_at_the_next_frame(tmp_path: Path, capsys, monkeypatch) -> None:
    real_frames, videos = drawing.iter_pose_frames, []

    def frames_with_sigterm(keypoints, style):
        videos.append(keypoints.num_frames)
        try:
            for index, frame in enumerate(real_frames(keypoints, style)):
                if len(videos) == 2 and index == 5:  # in the middle of b's video
                    SigtermWhenCollected()  # collected at once
                yield frame
        except GeneratorExit:  # the video is abandoned: a second SIGTERM while stopping
            os.kill(os.getpid(), signal.SIGTERM)
            raise

    monkeypatch.setattr(drawing, "iter_pose_frames", frames_with_sigterm)
    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", dropped.append)
    stray = []  # a SIGTERM that reached no handler of infer_motion's would end pytest itself
    previous = signal.signal(signal.SIGTERM, lambda number, frame: stray.append(number))
    out = tmp_path / "out"
    try:
        code, err = run_with_videos(capsys, clips_a_b_c(tmp_path), out)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 128 + signal.SIGTERM and dropped == [] and stray == []
    assert err.rstrip().endswith(f"interrupted (SIGTERM); files finished so far are in {out}")
    assert err.count("interrupted") == 1 and "Traceback" not in err
    assert videos == [15, 15]  # c was never started
    assert_only_a_is_kept(out)

def test_a_save_folder_that_is_a_file_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "audio"
    folder.mkdir()
    soundfile.write(folder / "clip.wav", speech_like(0.3), SR)
    (tmp_path / "out").write_text("a file")
    code, err = run(capsys, "--model", "procedural", "--audio_folder", str(folder), "--save_folder", str(tmp_path / "out"))
    assert code == infer_motion.EXIT_USAGE and err.strip() == f"error: --save_folder {tmp_path / 'out'} is a file; pass a folder (it is created)"
