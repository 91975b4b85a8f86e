"""EMAGE configs as read from the official ``config.json`` files of H-Liu1997/emage_audio.

The checkpoint folder holds one config for the audio model (root ``config.json``) and one per motion
VQ-VAE (``emage_vq/<part>/config.json``). The official files also carry transformers bookkeeping and
training-only keys; only the keys below shape the network or the inference, the rest are ignored.
Defaults are the official values, so ``EmageAudioConfig()`` and ``OFFICIAL_VQ_CONFIGS`` describe the
released ~139 M parameter model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from iasa.errors import InputError

CONFIG_NAME = "config.json"
VQ_SUBFOLDER = "emage_vq"
BODY_PARTS = ("face", "upper", "hands", "lower", "global")
NUM_JOINTS = 55  # SMPL-X joints
ROT6D_DIMS = 6

ConfigT = TypeVar("ConfigT")


class EmageCheckpointError(InputError, ValueError):
    """An EMAGE checkpoint folder, config or weight file that is missing or does not match the model."""


DOWNLOAD_HINT = (
    "download the official EMAGE weights with "
    "`git lfs install && git clone https://huggingface.co/H-Liu1997/emage_audio` "
    "and pass that folder (the one holding config.json and emage_vq/) as --ckpt"
)


@dataclass
class EmageAudioConfig:
    """The audio-to-motion transformer (root config.json).

    The per-part flags come from the official training config: ``c<part> > 0`` means the part is
    decoded from the argmax of its codebook classifier; otherwise from the nearest codebook entry of
    its regressed latent (needs ``l<part> > 0``). Parts: f face, u upper body, h hands, l lower body.
    """

    hidden_size: int = 768
    audio_f: int = 256  # channels of the waveform encoders
    motion_f: int = 256  # channels of the seed-motion encoder
    pose_dims: int = 330  # 55 joints x rot6d
    pose_length: int = 64  # frames per window
    seed_frames: int = 4  # frames of the previous window fed as the seed of the next
    vae_codebook_size: int = 256  # classifier classes and regressed latent width
    speaker_dims: int = 1
    audio_sr: int = 16000
    pose_fps: int = 30
    lf: int = 3
    cf: int = 0
    lu: int = 3
    cu: int = 1
    lh: int = 3
    ch: int = 1
    ll: int = 3
    cl: int = 1

    def decodes_from_classifier(self, part: str) -> bool:
        """True when ``part`` (face, upper, hands, lower) uses classifier indices, False for latents."""
        letter = {"face": "f", "upper": "u", "hands": "h", "lower": "l"}[part]
        if getattr(self, f"c{letter}") > 0:
            return True
        if getattr(self, f"l{letter}") > 0:
            return False
        raise EmageCheckpointError(
            f"config sets c{letter} = l{letter} = 0: the {part} part has no prediction to decode"
        )


@dataclass
class EmageVQConfig:
    """One motion VQ-VAE (or, for ``global``, the plain conv autoencoder) of ``emage_vq/<part>``.

    vae_test_dim: features per frame; vae_layer: conv stages in encoder and decoder; vae_length:
    latent channels; vae_codebook_size: codebook entries (unused by ``global``)."""

    vae_test_dim: int
    vae_layer: int
    vae_length: int = 256
    vae_codebook_size: int = 256


# Feature layout per part: face = jaw rot6d + 100 expressions; upper = 13 joints x 6; hands =
# 30 joints x 6; lower and global = 9 joints x 6 + translation (3) + foot contact (4).
OFFICIAL_VQ_CONFIGS = {
    "face": EmageVQConfig(vae_test_dim=106, vae_layer=2),
    "upper": EmageVQConfig(vae_test_dim=78, vae_layer=2),
    "hands": EmageVQConfig(vae_test_dim=180, vae_layer=2),
    "lower": EmageVQConfig(vae_test_dim=61, vae_layer=4),
    "global": EmageVQConfig(vae_test_dim=61, vae_layer=4),
}


@dataclass
class EmageConfig:
    """Everything needed to build the EMAGE networks: the audio model and the five motion models."""

    audio: EmageAudioConfig = dataclasses.field(default_factory=EmageAudioConfig)
    parts: dict[str, EmageVQConfig] = dataclasses.field(
        default_factory=lambda: {part: dataclasses.replace(config) for part, config in OFFICIAL_VQ_CONFIGS.items()}
    )

    def validate(self) -> None:
        """Raise EmageCheckpointError when the audio model and the VQ models do not fit together."""
        missing = [part for part in BODY_PARTS if part not in self.parts]
        if missing:
            raise EmageCheckpointError(f"EMAGE config lacks motion models {missing}")
        for part, official in OFFICIAL_VQ_CONFIGS.items():
            if self.parts[part].vae_test_dim != official.vae_test_dim:
                raise EmageCheckpointError(
                    f"{VQ_SUBFOLDER}/{part}: vae_test_dim is {self.parts[part].vae_test_dim}, the SMPL-X "
                    f"layout needs {official.vae_test_dim}"
                )
        if self.audio.pose_dims != NUM_JOINTS * ROT6D_DIMS:
            raise EmageCheckpointError(
                f"pose_dims is {self.audio.pose_dims}, the SMPL-X layout needs {NUM_JOINTS * ROT6D_DIMS}"
            )
        if not 0 < self.audio.seed_frames < self.audio.pose_length:
            raise EmageCheckpointError(
                f"seed_frames ({self.audio.seed_frames}) must be between 0 and pose_length ({self.audio.pose_length})"
            )
        for part in ("face", "upper", "hands", "lower"):
            vq = self.parts[part]
            if self.audio.decodes_from_classifier(part):
                width, name = vq.vae_codebook_size, "vae_codebook_size"
            else:
                width, name = vq.vae_length, "vae_length"
            if width != self.audio.vae_codebook_size:
                raise EmageCheckpointError(
                    f"{VQ_SUBFOLDER}/{part}: {name} is {width} but the audio model predicts "
                    f"{self.audio.vae_codebook_size} values per frame for it"
                )


def read_config(schema: type[ConfigT], path: Path, optional: tuple[str, ...] = ()) -> ConfigT:
    """A ``schema`` instance from the keys of a JSON file; keys the schema lacks are ignored. A schema
    field missing from the file is an error naming the file and the keys (the official model code
    reads every one of them, so the official files hold them all), except the ``optional`` ones,
    which keep their defaults."""
    if not path.is_file():
        raise EmageCheckpointError(f"{path} does not exist; {DOWNLOAD_HINT}")
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise EmageCheckpointError(f"{path} is not readable JSON ({error}); {DOWNLOAD_HINT}") from error
    if not isinstance(values, dict):
        raise EmageCheckpointError(f"{path} must hold a JSON object; {DOWNLOAD_HINT}")
    names = [field.name for field in dataclasses.fields(schema)]  # type: ignore[arg-type]
    missing = [name for name in names if name not in values and name not in optional]
    if missing:
        raise EmageCheckpointError(f"{path} lacks the keys {missing}; {DOWNLOAD_HINT}")
    given = {name: values[name] for name in names if name in values}
    # Every EMAGE setting is a whole number (sizes, counts, rates, flags).
    not_integers = {name: value for name, value in given.items() if type(value) is not int}
    if not_integers:
        raise EmageCheckpointError(f"{path}: these keys must be integers: {not_integers}")
    return schema(**given)


def read_emage_config(checkpoint_dir: str | Path) -> EmageConfig:
    """Read the root config and the five ``emage_vq/<part>/config.json`` files of a checkpoint folder."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        raise EmageCheckpointError(f"EMAGE checkpoint folder {root} does not exist; {DOWNLOAD_HINT}")
    audio = read_config(EmageAudioConfig, root / CONFIG_NAME)
    parts = {
        # The global model has no codebook, so its config need not name a codebook size.
        part: read_config(
            EmageVQConfig, root / VQ_SUBFOLDER / part / CONFIG_NAME, ("vae_codebook_size",) if part == "global" else ()
        )
        for part in BODY_PARTS
    }
    config = EmageConfig(audio=audio, parts=parts)
    config.validate()
    return config


def write_emage_config(config: EmageConfig, checkpoint_dir: str | Path) -> None:
    """Write the root and per-part ``config.json`` files in the official folder layout."""
    root = Path(checkpoint_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / CONFIG_NAME).write_text(
        json.dumps({"model_type": "emage_audio", **dataclasses.asdict(config.audio)}, indent=2)
    )
    for part, vq in config.parts.items():
        folder = root / VQ_SUBFOLDER / part
        folder.mkdir(parents=True, exist_ok=True)
        model_type = "emage_vaeconv" if part == "global" else "emage_vqvaeconv"
        (folder / CONFIG_NAME).write_text(json.dumps({"model_type": model_type, **dataclasses.asdict(vq)}, indent=2))
