"""Reading and writing EMAGE checkpoints in the official Hugging Face layout of H-Liu1997/emage_audio:

    <dir>/config.json, <dir>/model.safetensors or <dir>/pytorch_model.bin      (audio model)
    <dir>/emage_vq/<part>/config.json, .../model.safetensors or pytorch_model.bin
        for part in face, upper, hands, lower, global

Loading is weights-only (safetensors, or torch.load with weights_only=True) and strict: the state
dict must hold exactly the keys of the module, else the error names the missing and unexpected keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import save_file
from torch import nn

from iasa.atomic_io import atomic_output
from iasa.motion.emage_config import (
    BODY_PARTS,
    DOWNLOAD_HINT,
    VQ_SUBFOLDER,
    EmageCheckpointError,
    EmageConfig,
    read_emage_config,
    write_emage_config,
)
from iasa.motion.emage_model import EmageAudioModel
from iasa.tensor_files import TensorFileError, read_tensors
from iasa.motion.emage_vq import EmageMotionDecoder

SAFETENSORS_NAME = "model.safetensors"
PYTORCH_NAME = "pytorch_model.bin"
KEYS_SHOWN = 10  # keys listed per kind in a mismatch message


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The state dict stored in ``folder`` (model.safetensors preferred over pytorch_model.bin)."""
    safetensors_path, pytorch_path = folder / SAFETENSORS_NAME, folder / PYTORCH_NAME
    for path in (safetensors_path, pytorch_path):
        if path.is_file():
            try:
                return read_tensors(path, what="EMAGE weights")
            except TensorFileError as error:
                raise EmageCheckpointError(f"{error}; {DOWNLOAD_HINT}") from error
    raise EmageCheckpointError(f"{folder} has neither {SAFETENSORS_NAME} nor {PYTORCH_NAME}; {DOWNLOAD_HINT}")


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:KEYS_SHOWN])
    return f"{shown} (+{len(keys) - KEYS_SHOWN} more)" if len(keys) > KEYS_SHOWN else shown


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], folder: Path) -> None:
    """Copy ``state`` into ``module``; any missing or unexpected key or wrong shape is an error that
    names the keys and the folder that should hold a matching checkpoint."""
    expected, given = set(module.state_dict()), set(state)
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:
        raise EmageCheckpointError(
            f"weights in {folder} do not match the EMAGE model: missing keys [{_listed(missing)}], "
            f"unexpected keys [{_listed(unexpected)}]; expected the official H-Liu1997/emage_audio layout "
            f"in {folder}"
        )
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise EmageCheckpointError(f"weights in {folder} do not fit the config next to them: {error}") from error


def load_emage(checkpoint_dir: str | Path) -> tuple[EmageConfig, EmageAudioModel, EmageMotionDecoder]:
    """Build the audio model and the motion decoder from a checkpoint folder, in eval mode on CPU."""
    root = Path(checkpoint_dir)
    config = read_emage_config(root)
    audio_model = EmageAudioModel(config.audio)
    load_strict(audio_model, load_weights(root), root)
    motion_decoder = EmageMotionDecoder(config)
    for part in BODY_PARTS:
        folder = root / VQ_SUBFOLDER / part
        load_strict(motion_decoder.parts[part], load_weights(folder), folder)
    return config, audio_model.eval(), motion_decoder.eval()


def _save_atomically(state: dict[str, torch.Tensor], path: Path) -> None:
    tensors = {key: value.detach().contiguous().cpu() for key, value in state.items()}
    with atomic_output(path) as temporary:
        if path.name == SAFETENSORS_NAME:
            save_file(tensors, str(temporary))
        else:
            torch.save(tensors, temporary)


def save_emage(
    checkpoint_dir: str | Path,
    config: EmageConfig,
    audio_model: EmageAudioModel,
    motion_decoder: EmageMotionDecoder,
    weights_format: Literal["safetensors", "pytorch"] = "safetensors",
) -> None:
    """Write configs and weights in the official layout (e.g. to convert pytorch_model.bin files)."""
    root = Path(checkpoint_dir)
    write_emage_config(config, root)
    name = SAFETENSORS_NAME if weights_format == "safetensors" else PYTORCH_NAME
    _save_atomically(audio_model.state_dict(), root / name)
    for part in BODY_PARTS:
        _save_atomically(motion_decoder.parts[part].state_dict(), root / VQ_SUBFOLDER / part / name)
