"""scripts/pack_miniature.py: the packed parts, joined and unpacked, give every shipped weight in fp16 and a
named stage's newest complete checkpoint byte for byte (so a later command resumes it); a command that trained
the VAE alone packs its checkpoint only; an earlier pack's extra parts are not left to join this one's."""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load, save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import pack_miniature  # noqa: E402

from iasa.errors import InputError  # noqa: E402


def write_checkpoint(folder: Path, step: int, complete: bool = True) -> Path:
    path = folder / "checkpoints" / f"step-{step:08d}"
    path.mkdir(parents=True)
    save_file({"decoder.head.weight": torch.randn(4, 3)}, str(path / "trainable.safetensors"))
    save_file({"vae.state.0.exp_avg": torch.randn(4, 3)}, str(path / "optimizers.safetensors"))
    if complete:
        (path / "state.json").write_text(json.dumps({"step": step}))
    return path


def unpacked(out: Path) -> dict[str, bytes]:
    data = b"".join(part.read_bytes() for part in sorted(out.glob("miniature.tar.part-*")))
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return {member.name: archive.extractfile(member).read() for member in archive.getmembers() if member.isfile()}


def test_weights_in_fp16_and_the_newest_complete_checkpoint_as_it_is(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    runs = Path("runs")
    (runs / "teacher" / "model").mkdir(parents=True)
    weight = torch.randn(64, 64)
    save_file({"blocks.0.weight": weight, "steps": torch.arange(3)}, str(runs / "teacher" / "model" / "dit.safetensors"))
    write_checkpoint(runs / "vae", 4)
    newest = write_checkpoint(runs / "vae", 9)
    write_checkpoint(runs / "vae", 12, complete=False)  # cut short: no state.json
    out = Path("out")
    out.mkdir()
    (out / "miniature.tar.part-07").write_bytes(b"an earlier pack's part")
    parts = pack_miniature.main(["--runs", str(runs), "--out", str(out), "--checkpoints", "vae", "--part-mib", "0.004"])
    assert len(parts) > 1 and sorted(out.glob("miniature.tar.part-*")) == sorted(parts)
    files = unpacked(out)
    dit = load(files["runs/teacher/model/dit.safetensors"])
    assert dit["blocks.0.weight"].dtype == torch.float16 and torch.equal(dit["blocks.0.weight"], weight.half())
    assert torch.equal(dit["steps"], torch.arange(3))  # integers stay as they are
    checkpoint = {name for name in files if "/checkpoints/" in name}
    assert checkpoint == {f"{newest}/{name}" for name in ("trainable.safetensors", "optimizers.safetensors", "state.json")}
    for name in checkpoint:
        assert files[name] == Path(name).read_bytes()


def test_a_vae_only_command_packs_its_checkpoint_and_nothing_to_pack_is_an_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    runs = Path("runs")
    with pytest.raises(InputError, match="--checkpoints"):
        pack_miniature.main(["--runs", str(runs), "--out", "out"])
    with pytest.raises(InputError, match="no complete checkpoint"):
        pack_miniature.main(["--runs", str(runs), "--out", "out", "--checkpoints", "vae"])
    newest = write_checkpoint(runs / "vae", 3)
    pack_miniature.main(["--runs", str(runs), "--out", "out", "--checkpoints", "vae"])
    assert set(unpacked(Path("out"))) == {f"{newest}/{name}" for name in ("trainable.safetensors", "optimizers.safetensors", "state.json")}
