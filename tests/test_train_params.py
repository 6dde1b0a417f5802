"""Trainer config: typed, with errors that name the key and where it came from."""

from __future__ import annotations

import pytest

from geoconcept.errors import ConfigError
from geoconcept.train.params import parse_args

REQUIRED = ["--set", "features=f", "--set", "split=s.parquet", "--set", "output=run", "--set", "variant=geoclip"]


def write(tmp_path, text: str):
    path = tmp_path / "conf" / "train.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def test_yaml_file_with_relative_paths_and_overrides(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(
        tmp_path,
        "features: [feat/a, feat/b]\nlabels: [lab/a, lab/b]\nsplit: split.parquet\noutput: runs/x\n"
        "concept_embeddings: emb.safetensors\nlr: 1e-4\nsteps: 20\nsigmas: [1, 16, 256]\n",
    )
    config = parse_args(["--config", str(path), "--set", "batch_size=64", "--set", "output=elsewhere"])
    assert config.features == [str(tmp_path / "conf/feat/a"), str(tmp_path / "conf/feat/b")]
    assert config.output == str(tmp_path / "elsewhere")  # --set paths are relative to the working directory
    assert config.lr == 1e-4 and isinstance(config.lr, float) and config.steps == 20 and config.batch_size == 64
    assert config.variant == "concept" and config.space == "concept" and config.concept_loss == "cauchy_schwarz"
    assert config.temperature_init == 0.07 and config.sigmas == [1.0, 16.0, 256.0]


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    path = write(tmp_path, "features: f\nsplit: s\noutput: o\nvariant: geoclip\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'learning_rate' in .*train\.yaml"):
        parse_args(["--config", str(path)])
    with pytest.raises(
        ConfigError, match=r"unknown config key 'bach_size' in --set bach_size=3 \(did you mean 'batch_size'\?\)"
    ):
        parse_args([*REQUIRED, "--set", "bach_size=3"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("lr=fast", r"'lr' in --set lr=fast must be a number, got 'fast'"),
        ("batch_size=1.5", r"'batch_size' .* must be an integer"),
        ("progress=maybe", r"'progress' .* must be true or false"),
        ("variant=clip", r"'variant' .* must be one of 'geoclip', 'concept', 'concept\+supervised'"),
        ("concept_loss=kl", r"'concept_loss' .* one of 'cauchy_schwarz', 'paper_eq6'"),
        ("steps=ten", r"'steps' .* must be an integer or null"),
        ("batch_size=0", r"'batch_size' must be >= 1"),
        ("lr=-1", r"'lr' must be > 0"),
    ],
)
def test_wrong_types_and_ranges(override, message):
    with pytest.raises(ConfigError, match=message):
        parse_args([*REQUIRED, "--set", override])


def test_cross_key_rules():
    with pytest.raises(ConfigError, match="missing config key"):
        parse_args(["--set", "features=f"])
    with pytest.raises(ConfigError, match="needs config key 'concept_embeddings'"):
        parse_args([*REQUIRED, "--set", "variant=concept"])
    with pytest.raises(ConfigError, match="needs config key 'labels'"):
        parse_args([*REQUIRED, "--set", "variant=concept+supervised", "--set", "concept_embeddings=e"])
    with pytest.raises(ConfigError, match="same number of folders"):
        parse_args([*REQUIRED, "--set", "labels=[a, b]"])
    with pytest.raises(ConfigError, match="sigmas"):
        parse_args([*REQUIRED, "--set", "sigmas=[1, 2]"])
    assert parse_args([*REQUIRED, "--set", "sigmas=[1, 2]", "--set", "location_init=random"]).sigmas == [1.0, 2.0]
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_args([*REQUIRED, "--set", "justakey"])


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        parse_args(["--config", str(tmp_path / "none.yaml")])
    with pytest.raises(ConfigError, match="mapping"):
        parse_args(["--config", str(write(tmp_path, "- a\n- b\n"))])
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_args(["--config", str(write(tmp_path, "a: [\n"))])
