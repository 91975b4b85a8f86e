"""Resuming training from checkpoints that are damaged, crafted, or from another run: a fallback that says so
or a one-line error, never code run from a file and never a run folder changed by a refused resume."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from crafted_files import CodeRunner
from iasa.config import load_config
from iasa.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    resume_checkpoint,
    rng_state,
    save_checkpoint,
)
from iasa.tensor_files import IncompleteFileError
from iasa.train.config import FinetuneConfig
from iasa.train.state_file import load_state, save_state
from iasa.train.tasks import main


def stepped_optimizer() -> tuple[torch.nn.Parameter, torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    weight = torch.nn.Parameter(torch.randn(3, 2))
    optimizer = torch.optim.AdamW([weight], lr=0.1, betas=(0.8, 0.99))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 3))
    for _ in range(2):
        weight.grad = torch.randn_like(weight)
        optimizer.step()
        scheduler.step()
    return weight, optimizer, scheduler


def test_state_file_round_trip_keeps_values_and_types(tmp_path: Path) -> None:
    _, optimizer, scheduler = stepped_optimizer()
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()}
    save_state(tmp_path / "state.safetensors", state)
    loaded = load_state(tmp_path / "state.safetensors")
    assert loaded["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]  # betas stay a tuple
    assert list(loaded["optimizer"]["state"]) == [0]  # integer keys stay integers
    for key, value in state["optimizer"]["state"][0].items():
        assert torch.equal(loaded["optimizer"]["state"][0][key], value), key
    assert loaded["scheduler"] == state["scheduler"]
    assert loaded["rng"]["python"] == state["rng"]["python"]
    numpy_state = loaded["rng"]["numpy"]
    assert numpy_state[0] == "MT19937" and np.array_equal(numpy_state[1], state["rng"]["numpy"][1])
    assert numpy_state[1].dtype == np.uint32 and numpy_state[2:] == state["rng"]["numpy"][2:]
    assert torch.equal(loaded["rng"]["torch"], state["rng"]["torch"])


def test_an_old_pickled_checkpoint_is_refused_without_running_code(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    folder = tmp_path / "run" / "checkpoints" / "step-00000002"
    folder.mkdir(parents=True)
    save_file({"w": torch.zeros(3, 2)}, str(folder / "trainable.safetensors"))
    torch.save({"optimizer": CodeRunner(marker)}, folder / "optimizers.pt")
    torch.save(CodeRunner(marker), folder / "rng-0.pt")
    (folder / "state.json").write_text('{"step": 2}')
    weight, optimizer, _ = stepped_optimizer()
    with pytest.raises(CheckpointError, match="earlier version .* could run code"):
        load_checkpoint(folder, {"w": weight}, {"optimizer": optimizer})
    assert not marker.exists()


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(tmp_path: Path) -> None:
    weight, optimizer, scheduler = stepped_optimizer()
    values = {}
    for step in (1, 2, 3):
        with torch.no_grad():
            weight.add_(1)
        values[step] = (weight.detach().clone(), random.random())
        random.seed(step)  # the RNG state each checkpoint holds differs
        save_checkpoint(tmp_path, step, {"w": weight}, {"optimizer": optimizer, "scheduler": scheduler}, keep=3)
    newest = tmp_path / "checkpoints" / "step-00000003" / "optimizers.safetensors"
    newest.write_bytes(newest.read_bytes()[:-10])
    reports: list[str] = []
    contents = resume_checkpoint(tmp_path, "auto", report=reports.append)
    assert contents.step == 2 and torch.equal(contents.tensors["w"], values[2][0])
    assert "step-00000003 cannot be resumed" in reports[0] and str(newest) in reports[0] and "incomplete" in reports[0]
    assert "resuming from step-00000002" in reports[1]
    # A checkpoint named explicitly is not replaced by another one.
    with pytest.raises(IncompleteFileError, match="incomplete"):
        resume_checkpoint(tmp_path, str(newest.parent))


def test_train_falls_back_past_a_damaged_checkpoint_and_refuses_another_lora_shape(
    tiny_cache: Path, stage_overrides, tmp_path: Path, capsys
) -> None:
    output = tmp_path / "train"
    run = [f"run.output_dir={output}", "run.max_steps=4", "run.mixed_precision=fp32", "run.checkpoint_every=2",
           "run.log_every=1", "run.report_to=none", "run.keep_checkpoints=2"]  # fmt: skip
    settings = ["--config", "config/train_sparseattn_lora.yaml", *stage_overrides(tiny_cache), "lora.rank=4", "lora.alpha=4", *run]
    main(settings)
    step_four = output / "checkpoints" / "step-00000004" / "trainable.safetensors"
    expected = {key: value.clone() for key, value in load_file(str(step_four)).items()}  # not views of the file
    step_four.write_bytes(step_four.read_bytes()[:-100])  # a crash before the file reached the disk
    capsys.readouterr()
    main(settings)
    printed = capsys.readouterr().out
    assert "step-00000004 cannot be resumed" in printed and "resuming from step-00000002" in printed
    got = load_file(str(step_four))  # written again by steps 3 and 4 from checkpoint 2: the same weights
    assert expected.keys() == got.keys() and all(torch.equal(expected[key], got[key]) for key in expected)

    saved_config = (output / "config.yaml").read_text()
    for changed, key in (("lora.alpha=8", "lora.alpha"), ("lora.rank=8", "lora.rank"), ("lora.targets=[q,k]", "lora.targets")):
        with pytest.raises(CheckpointError, match=f"written with {key}=") as error:
            main([*settings, changed, "run.max_steps=6"])
        assert "run.resume=none" in str(error.value)
        assert (output / "config.yaml").read_text() == saved_config, "a refused resume rewrote config.yaml"
    assert load_config(FinetuneConfig, output / "config.yaml").lora.alpha == 4
