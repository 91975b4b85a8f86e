"""Command line of examples/IASA/train_iasa.py: read `task` from the config, load that stage's schema,
load the networks the stage runs and run it."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from accelerate import PartialState

from iasa.config import ConfigError, load_config, read_yaml, split_config_args
from iasa.train.config import (
    SCHEMAS,
    TASKS,
    DataProcessConfig,
    DistillConfig,
    FinetuneConfig,
    PretrainConfig,
    TaeDistillConfig,
    VaePretrainConfig,
)

if TYPE_CHECKING:
    from iasa.video.assembly import WanComponents

StageConfig = DataProcessConfig | FinetuneConfig | DistillConfig | PretrainConfig | VaePretrainConfig | TaeDistillConfig
ComponentsFactory = Callable[[StageConfig], "WanComponents"]


def read_task(config_path: str | None, overrides: Sequence[str]) -> str:
    """The `task` key, from the overrides if given there, else from the YAML file."""
    for item in overrides:
        if item.startswith("task="):
            task = item.split("=", 1)[1]
            break
    else:
        if config_path is None or not Path(config_path).is_file():
            raise ConfigError(f"config file {config_path} does not exist; pass --config config/<stage>.yaml")
        task = read_yaml(Path(config_path)).get("task")
    if task not in TASKS:
        raise ConfigError(f"task must be one of {TASKS}, got {task!r} (set `task:` in the config or task=... on the command line)")
    return task


def parts_needed(config: StageConfig) -> tuple[str, ...]:
    """The networks a stage runs: encoders to cache data; the DiT and the pose guider to train (+ the VAE decoder
    for the region loss); pretrain_vae the VAE, and the DiT and text encoder it writes with random weights;
    distill_tae the VAE it distils."""
    if isinstance(config, DataProcessConfig):
        return ("text_encoder", "vae", "image_encoder")
    if isinstance(config, VaePretrainConfig):
        return ("dit", "text_encoder", "vae")
    if isinstance(config, TaeDistillConfig):
        return ("vae",)
    if isinstance(config, DistillConfig) and config.region.weight > 0:
        return ("dit", "pose_guider", "vae")
    return ("dit", "pose_guider")


def default_components(config: StageConfig) -> "WanComponents":
    from iasa.train.model import load_training_components

    return load_training_components(config.model, parts_needed(config))


def main(argv: Sequence[str] | None = None, components_factory: ComponentsFactory = default_components) -> Path | int:
    parser = argparse.ArgumentParser(
        description="IASA training: data_process | train | distill | pretrain | pretrain_vae | distill_tae (key=value overrides)"
    )
    parser.add_argument("--config", required=True, help="YAML config of one stage (config/*.yaml)")
    overrides, rest = split_config_args(list(argv) if argv is not None else __import__("sys").argv[1:])
    args = parser.parse_args(rest)
    task = read_task(args.config, overrides)
    config = load_config(SCHEMAS[task], args.config, overrides)
    # Before any model is built: under accelerate launch this binds each process to its own GPU.
    state = PartialState(cpu=not torch.cuda.is_available())
    if task != "data_process":
        # Random base weights (model_dir null) must be the same in an interrupted and a resumed run.
        torch.manual_seed(config.run.seed)
    components = components_factory(config)
    if task == "data_process":
        from iasa.train.data_process import process_dataset

        return process_dataset(config, components, rank=state.process_index, world_size=state.num_processes)
    if task in ("train", "pretrain"):
        from iasa.train.finetune import run_finetune

        return run_finetune(config, components)
    if task == "pretrain_vae":
        from iasa.train.vae_pretrain import run_vae_pretrain

        return run_vae_pretrain(config, components)
    if task == "distill_tae":
        from iasa.train.tae_distill import run_tae_distill

        return run_tae_distill(config, components)
    from iasa.train.distill import run_distill

    return run_distill(config, components)
