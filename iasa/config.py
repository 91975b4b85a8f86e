"""Typed configs: dataclasses are the schema and the single place for defaults.

A config is loaded from YAML with OmegaConf, merged over the dataclass defaults and then over
``key=value`` command-line overrides. Unknown keys are errors that name the key, so a typo in a
YAML file never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from iasa.errors import InputError

ConfigT = TypeVar("ConfigT")


class ConfigError(InputError, ValueError):
    """A config file or override that does not match its schema."""


def load_config(
    schema: type[ConfigT],
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> ConfigT:
    """Build a ``schema`` instance from defaults, an optional YAML file and ``key=value`` overrides.

    Nested keys use dots (``attention.top_k=4``). Values are parsed as YAML scalars, so
    ``flag=false`` and ``k=8`` become a bool and an int.
    """
    merged: DictConfig = OmegaConf.structured(schema)
    sources: list[tuple[str, DictConfig]] = []
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; pass an existing YAML file (see config/)")
        sources.append((str(path), OmegaConf.load(path)))
    if overrides:
        bad = [item for item in overrides if "=" not in item]
        if bad:
            raise ConfigError(f"overrides must look like key=value, got {bad}")
        sources.append(("command line", OmegaConf.from_dotlist(list(overrides))))
    for origin, source in sources:
        try:
            merged = OmegaConf.merge(merged, source)
        except ConfigKeyError as error:
            raise ConfigError(f"unknown config key {error.full_key!r} in {origin}") from error
        except ValidationError as error:
            raise ConfigError(f"bad value for {error.full_key!r} in {origin}: {str(error.msg).splitlines()[0]}") from error
    return OmegaConf.to_object(merged)  # type: ignore[return-value]


def config_to_yaml(config: Any) -> str:
    """The YAML text of a config instance: what a run saves next to its outputs."""
    if not dataclasses.is_dataclass(config):
        raise TypeError(f"expected a dataclass config, got {type(config).__name__}")
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def split_config_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split command-line arguments into (``key=value`` overrides, everything else)."""
    overrides = [arg for arg in argv if "=" in arg and not arg.startswith("-")]
    rest = [arg for arg in argv if arg not in overrides]
    return overrides, rest
