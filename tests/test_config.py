from pathlib import Path

import pytest

from iasa.attention.config import SparseAttentionConfig
from iasa.config import ConfigError, config_to_yaml, load_config


def test_yaml_and_overrides_merge_over_defaults(tmp_path: Path) -> None:
    path = tmp_path / "attention.yaml"
    path.write_text("top_k: 2\ndirection: both\nregions: [face, hands]\n")
    config = load_config(SparseAttentionConfig, path, ["top_k=8", "keep_first_frame=false"])
    assert config.top_k == 8
    assert config.direction == "both"
    assert config.keep_first_frame is False
    assert tuple(config.regions) == ("face", "hands")
    assert config.block_size == SparseAttentionConfig().block_size


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("topk: 2\n")
    with pytest.raises(ConfigError, match="topk"):
        load_config(SparseAttentionConfig, path)
    with pytest.raises(ConfigError, match="blocksize"):
        load_config(SparseAttentionConfig, overrides=["blocksize=64"])


def test_bad_value_and_missing_file_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="top_k"):
        load_config(SparseAttentionConfig, overrides=["top_k=many"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(SparseAttentionConfig, tmp_path / "absent.yaml")


def test_yaml_round_trip(tmp_path: Path) -> None:
    config = load_config(SparseAttentionConfig, overrides=["top_k=3", "dilation_tokens=0"])
    path = tmp_path / "saved.yaml"
    path.write_text(config_to_yaml(config))
    assert load_config(SparseAttentionConfig, path) == config
