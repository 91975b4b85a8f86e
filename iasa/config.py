"""Typed configs: dataclasses are the schema and the single place for defaults.

A config is loaded from YAML with OmegaConf, merged over the dataclass defaults and then over
``key=value`` command-line overrides. Unknown keys are errors that name the key, so a typo in a
YAML file never silently falls back to a default.

Values are checked when the config is read, before any model is loaded: a config dataclass may define
``validate(self)``, which states the allowed values of its own keys with `check` / `check_choice`
(next to the keys' defaults); `validate_config` runs it for every nested dataclass and names the key by
its full dotted path (``sampler.num_steps``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError
from yaml import YAMLError

from iasa.errors import InputError

ConfigT = TypeVar("ConfigT")


class ConfigError(InputError, ValueError):
    """A config file or override that does not match its schema."""


class ConfigValueError(ConfigError):
    """A value its key does not allow; `key` is the dotted name below the dataclass whose check failed."""

    def __init__(self, key: str, value: Any, rule: str) -> None:
        self.key, self.value, self.rule = key, value, rule
        super().__init__(f"bad value {key}={value!r}: {rule}")


def check(allowed: bool, key: str, value: Any, rule: str) -> None:
    """Raise ConfigValueError(key, value, rule) unless `allowed`; rule says what the key takes."""
    if not allowed:
        raise ConfigValueError(key, value, rule)


def check_choice(key: str, value: Any, choices: Sequence[Any]) -> None:
    check(value in choices, key, value, f"choose one of {list(choices)}")


def validate_config(config: Any, prefix: str = "") -> None:
    """Run ``validate()`` of `config` and of every dataclass inside it (inner ones first)."""
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if dataclasses.is_dataclass(value):
            validate_config(value, f"{prefix}{item.name}.")
    validate = getattr(config, "validate", None)
    if validate is None:
        return
    try:
        validate()
    except ConfigValueError as error:
        raise ConfigValueError(prefix + error.key, error.value, error.rule) from None


def read_yaml(path: Path) -> DictConfig:
    try:
        source = OmegaConf.load(path)
    except YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}{where}: not valid YAML ({problem})") from None
    if not isinstance(source, DictConfig):
        raise ConfigError(f"{path} holds a YAML list or value; a config file is a mapping of keys (see config/)")
    return source


def load_config(
    schema: type[ConfigT],
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> ConfigT:
    """Build a ``schema`` instance from defaults, an optional YAML file and ``key=value`` overrides.

    Nested keys use dots (``attention.top_k=4``). Values are parsed as YAML scalars, so
    ``flag=false`` and ``k=8`` become a bool and an int. Every value is checked (`validate_config`).
    """
    merged: DictConfig = OmegaConf.structured(schema)
    sources: list[tuple[str, DictConfig]] = []
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; pass an existing YAML file (see config/)")
        sources.append((str(path), read_yaml(path)))
    if overrides:
        bad = [item for item in overrides if "=" not in item]
        if bad:
            raise ConfigError(f"overrides must look like key=value, got {bad}")
        for item in overrides:
            try:
                OmegaConf.from_dotlist([item])
            except YAMLError as error:
                problem = getattr(error, "problem", None) or str(error).splitlines()[0]
                raise ConfigError(f"override {item!r}: its value is not valid YAML ({problem})") from None
        sources.append(("command line", OmegaConf.from_dotlist(list(overrides))))
    for origin, source in sources:
        try:
            merged = OmegaConf.merge(merged, source)
        except ConfigKeyError as error:
            raise ConfigError(f"unknown config key {error.full_key!r} in {origin}") from error
        except ValidationError as error:
            raise ConfigError(f"bad value for {error.full_key!r} in {origin}: {str(error.msg).splitlines()[0]}") from error
    config = OmegaConf.to_object(merged)
    validate_config(config)
    return config  # type: ignore[return-value]


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
