"""infer_motion.py after kill -9 and under SIGTERM: no hidden temporaries stay behind, and a --save_folder that is
a file is a one-line error."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import soundfile

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


def test_a_save_folder_that_is_a_file_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "audio"
    folder.mkdir()
    soundfile.write(folder / "clip.wav", speech_like(0.3), SR)
    (tmp_path / "out").write_text("a file")
    code, err = run(capsys, "--model", "procedural", "--audio_folder", str(folder), "--save_folder", str(tmp_path / "out"))
    assert code == infer_motion.EXIT_USAGE and err.strip() == f"error: --save_folder {tmp_path / 'out'} is a file; pass a folder (it is created)"
