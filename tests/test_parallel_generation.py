"""Sequence-parallel generation on CPU processes over gloo (torchrun): 2 and 4 processes generate the clip one
process generates (tiny 4-head model, float32), dense and IASA; a process count that does not divide the
heads is a clear error on every rank; a process that dies or hangs ends the run on every rank."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from test_generate import write_speech

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")
WORKER = Path(__file__).with_name("parallel_generate_worker.py")
GENERATE = ROOT / "scripts" / "generate.py"
# Generous: up to 5 processes start on 2 shared CPU cores. Only a hang reaches it.
LAUNCH_LIMIT_S = 900
ENVIRONMENT = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}

needs_torchrun = pytest.mark.skipif(not TORCHRUN.is_file(), reason="torchrun not installed next to python")


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, **ENVIRONMENT, **extra}


def run_worker(out_dir: Path, processes: int) -> None:
    out_dir.mkdir()
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node", str(processes), str(WORKER), "check", str(out_dir)]
    result = subprocess.run(command, cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=LAUNCH_LIMIT_S)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The worker's `check` as one process, in this one (no WORLD_SIZE: a group of one, as plain python runs it),
    on one thread as under OMP_NUM_THREADS=1."""
    from iasa.video.config import ARCHITECTURES

    out_dir = tmp_path_factory.mktemp("parallel") / "one"
    out_dir.mkdir()
    assert "WORLD_SIZE" not in os.environ
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    import parallel_generate_worker as worker  # adds its 4-head model size to ARCHITECTURES

    try:
        worker.run(out_dir, None)
    finally:
        torch.set_num_threads(threads)
        ARCHITECTURES.pop(worker.MODEL_SIZE)
        sys.modules.pop("parallel_generate_worker")
    return out_dir


@needs_torchrun
@pytest.mark.parametrize("processes", [2, 4])
def test_sequence_parallel_generation_equals_one_process(tmp_path: Path, one_process: Path, processes: int) -> None:
    run_worker(tmp_path / "run", processes)
    expected, expected_video = load_file(str(one_process / "latents0.safetensors")), load_file(str(one_process / "video0.safetensors"))
    assert not torch.allclose(expected["dense"], expected["iasa"], atol=1e-2)  # the layout is sparse enough to matter
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        *(f"latents{rank}.safetensors" for rank in range(processes)), "video0.safetensors"
    ]  # only rank 0 decodes
    for rank in range(processes):
        got = load_file(str(tmp_path / "run" / f"latents{rank}.safetensors"))
        for attention in ("dense", "iasa"):
            torch.testing.assert_close(got[attention], expected[attention], atol=1e-5, rtol=1e-5, msg=f"rank {rank} {attention}")
        # Rank 1's weights changed: the result moves on every rank, so rank 1 computed part of every forward.
        assert not torch.allclose(got["iasa_rank1_changed"], expected["iasa"], atol=1e-3)
        torch.testing.assert_close(got["iasa_rank1_changed"], load_file(str(tmp_path / "run" / "latents0.safetensors"))["iasa_rank1_changed"])
    video = load_file(str(tmp_path / "run" / "video0.safetensors"))
    for name in ("dense", "iasa"):
        torch.testing.assert_close(video[name], expected_video[name], atol=1e-5, rtol=1e-5)
        assert (video[f"{name}_uint8"].int() - expected_video[f"{name}_uint8"].int()).abs().max() <= 1


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_ranks(command: list[str], processes: int, cwd: Path) -> list[subprocess.Popen]:
    """`processes` plain processes with torchrun's variables: no torchrun agent to stop the others, so only
    the run's own checks, errors and collective timeouts end them."""
    port = str(free_port())
    return [
        subprocess.Popen(
            command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=environment(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(rank), LOCAL_RANK=str(rank),
                            WORLD_SIZE=str(processes)),
        )  # fmt: skip
        for rank in range(processes)
    ]


def write_image(path: Path) -> Path:
    import imageio.v2 as imageio
    import numpy as np

    imageio.imwrite(path, np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    return path


def smoke_command(tmp_path: Path, launcher: list[str]) -> list[str]:
    write_speech(tmp_path / "speech.wav", seconds=0.3)
    return [
        *launcher, str(GENERATE), "--config", str(ROOT / "config" / "infer_iasa.yaml"), "--smoke", "--no-progress",
        f"audio={tmp_path / 'speech.wav'}", f"image={write_image(tmp_path / 'person.png')}",
        f"out={tmp_path / 'out' / 'video.mp4'}",
    ]  # fmt: skip


@needs_torchrun
def test_torchrun_generate_writes_one_video_from_rank_0(tmp_path: Path) -> None:
    from iasa.motion.audio import load_audio
    from iasa.motion.procedural import ProceduralMotionGenerator
    from iasa.video.video_io import probe_video

    command = smoke_command(tmp_path, [str(TORCHRUN), "--standalone", "--nproc_per_node", "2"])
    result = subprocess.run(command, cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=LAUNCH_LIMIT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("stage timings") == 1 and result.stdout.count("[iasa] video generation") == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["video.mp4"]
    info = probe_video(tmp_path / "out" / "video.mp4")
    assert info.frames == ProceduralMotionGenerator()(load_audio(tmp_path / "speech.wav")).num_frames
    assert (info.height, info.width) == (64, 64) and info.has_audio


def test_a_process_count_that_does_not_divide_the_heads_fails_every_rank(tmp_path: Path) -> None:
    ranks = launch_ranks(smoke_command(tmp_path, [sys.executable]), 3, tmp_path)
    outputs = [process.communicate(timeout=LAUNCH_LIMIT_S) for process in ranks]
    for process, (_, stderr) in zip(ranks, outputs):
        assert process.returncode == 1, stderr[-2000:]
        assert "error: 3 processes cannot share the DiT's 2 attention heads evenly" in stderr
        assert "run torchrun --nproc_per_node with one of [1, 2]" in stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("mode", ["kill", "hang"])
def test_a_process_that_dies_or_hangs_ends_the_generation_on_every_rank(mode: str) -> None:
    ranks = launch_ranks([sys.executable, str(WORKER), mode], 2, ROOT)
    try:
        stdout, stderr = ranks[0].communicate(timeout=LAUNCH_LIMIT_S)
    finally:
        for process in ranks:
            if process.poll() is None:
                process.kill()  # the hanging rank 1 (or both, if rank 0 hung)
        ranks[1].communicate()
    assert ranks[0].returncode != 0 and ranks[1].returncode != 0
    assert "CollectiveError: rank 0 of 2:" in stderr, stderr[-3000:]
    assert "Another process has most likely died or hangs (collectives wait 3 s" in stderr
