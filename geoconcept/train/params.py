"""Trainer configuration: a YAML file and/or `--set key=value` overrides → a typed `TrainConfig`.

Like open_clip_train's params, `parse_args` takes an argument *list*, so tests and the Dagster
launcher call `main([...])` directly. Unknown keys and wrong types fail with a `ConfigError` that
names the key and where it came from. Relative paths in the file are taken relative to the
file's folder; relative paths given with `--set` relative to the working directory. The run
folder's `config.yaml` records the resolved config (absolute paths, defaults filled in).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from geoconcept.errors import ConfigError
from geoconcept.yaml_files import read_yaml

Variant = Literal["geoclip", "concept", "concept+supervised"]
Space = Literal["embedding", "concept"]
ConceptLoss = Literal["cauchy_schwarz", "paper_eq6"]
Schedule = Literal["constant", "cosine", "step"]
LocationInit = Literal["geoclip", "random"]
ImageHeadInit = Literal["random", "geoclip"]

_YAML11_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
PATH_KEYS = ("features", "labels", "split", "concept_embeddings", "concept_bank", "output")


@dataclass
class TrainConfig:
    # inputs and output
    features: list[str]  # feature folders (one per source), shard-NNNNNN.safetensors
    split: str  # Parquet with columns key, split (train/val/test)
    output: str  # run folder
    labels: list[str] = field(default_factory=list)  # label folders, same order as `features`
    concept_embeddings: str | None = None  # embeddings.safetensors of the concept bank
    concept_bank: str | None = None  # bank YAML: if given, its sha256 must match the embeddings'
    # model
    variant: Variant = "concept"
    contrastive_space: Space | None = None  # None: embedding for geoclip, concept for the concept variants
    sigmas: list[float] = field(default_factory=lambda: [1.0, 16.0, 256.0])
    location_init: LocationInit = "geoclip"  # GeoCLIP's pretrained location encoder, or random
    image_head_init: ImageHeadInit = "random"  # "geoclip" needs 768-d (ViT-L-14) features
    center_concepts: bool = True  # remove the concepts' common text direction from E (concept_text_basis)
    temperature_init: float = 0.07  # logit scale starts at log(1 / temperature_init)
    learn_temperature: bool = True
    # losses
    lambda_concept: float = 1.0
    sigma: float = 1.0  # Gaussian-kernel bandwidth of the concept divergence
    concept_loss: ConceptLoss = "cauchy_schwarz"
    supervised_weight: float = 1.0
    gps_noise_km: float = 0.0  # std of Gaussian jitter added to training GPS (0 = off)
    # optimisation (defaults: GeoCLIP's)
    seed: int = 0
    epochs: int = 10
    steps: int | None = None  # total optimizer steps; overrides epochs
    batch_size: int = 512
    lr: float = 3e-5
    lr_schedule: Schedule = "step"  # step: × lr_gamma every epoch (GeoCLIP); cosine: to 0 after warmup
    lr_gamma: float = 0.87
    warmup_steps: int = 0
    weight_decay: float = 1e-6
    queue_size: int = 4096
    # Samples shuffled together in memory (whole shards; see geoconcept.train.data): the order's
    # randomness vs RAM (768-d float32 features: 3 KB a sample, so 32768 ≈ 100 MB, twice that while
    # the next window is read). >= the training split: one permutation of all of it.
    shuffle_buffer: int = 32768
    # bookkeeping
    log_interval: int = 10
    checkpoint_interval: int = 500
    val_batch_size: int = 1024
    device: str = "cpu"
    num_threads: int | None = None
    progress: bool = True
    resume: bool = True
    # When the run folder holds a run with another config or other training data: false = refuse
    # (a ConfigError naming what changed), true = start that run over (the pipeline's choice).
    restart_if_changed: bool = False

    @property
    def space(self) -> str:
        return self.contrastive_space or ("embedding" if self.variant == "geoclip" else "concept")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# fields whose change makes an existing run folder a different run (resume refuses)
RUN_IDENTITY = (
    "features", "labels", "split", "concept_embeddings", "variant", "contrastive_space", "sigmas",
    "location_init", "image_head_init", "center_concepts", "temperature_init", "learn_temperature",
    "lambda_concept", "sigma", "concept_loss", "supervised_weight", "gps_noise_km", "seed", "epochs", "steps",
    "batch_size", "lr", "lr_schedule", "lr_gamma", "warmup_steps", "weight_decay", "queue_size",
    "shuffle_buffer",
)  # fmt: skip


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", type(None): "null"}.get(
        tp, str(tp)
    )


def _coerce(value: Any, tp: Any) -> Any:
    """`value` as type `tp`, or raise TypeError. YAML already gives ints, floats, bools and lists."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise TypeError
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option)
            except TypeError:
                continue
        raise TypeError
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            value = [value]  # one folder may be given without brackets
        if not isinstance(value, list):
            raise TypeError
        return [_coerce(v, item) for v in value]
    if tp is type(None):
        if value is None:
            return None
        raise TypeError
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if tp is float:
        if isinstance(value, str) and _YAML11_FLOAT.match(value.strip()):
            value = float(value)  # PyYAML (YAML 1.1) reads 1e-4 as a string; accept it as the number it is
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise TypeError
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError
    raise TypeError


_HINTS = typing.get_type_hints(TrainConfig)
_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _resolve_path(value: str, base: Path) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def build_config(entries: list[tuple[str, Any, str, Path]]) -> TrainConfig:
    """(key, value, where it came from, base folder for relative paths) entries → a checked config."""
    values: dict[str, Any] = {}
    for key, value, origin, base in entries:
        if key not in _FIELDS:
            close = difflib.get_close_matches(key, list(_FIELDS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown config key {key!r} in {origin}{hint}")
        try:
            value = _coerce(value, _HINTS[key])
        except TypeError:
            raise ConfigError(
                f"config key {key!r} in {origin} must be {_type_name(_HINTS[key])}, got {value!r}"
            ) from None
        if key in PATH_KEYS and value is not None:
            value = [_resolve_path(v, base) for v in value] if isinstance(value, list) else _resolve_path(value, base)
        values[key] = value
    missing = [
        name
        for name, f in _FIELDS.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and name not in values
    ]
    if missing:
        raise ConfigError(f"missing config key(s): {', '.join(missing)}")
    config = TrainConfig(**values)
    check(config)
    return config


def check(config: TrainConfig) -> None:
    """Rules that involve more than one key, or value ranges."""
    positive = ["epochs", "batch_size", "log_interval", "checkpoint_interval", "val_batch_size", "shuffle_buffer"]
    for key in positive:
        if getattr(config, key) < 1:
            raise ConfigError(f"config key {key!r} must be >= 1, got {getattr(config, key)}")
    for key in ["lr", "sigma", "temperature_init"]:
        if getattr(config, key) <= 0:
            raise ConfigError(f"config key {key!r} must be > 0, got {getattr(config, key)}")
    for key in ["weight_decay", "lambda_concept", "supervised_weight", "gps_noise_km", "warmup_steps", "queue_size"]:
        if getattr(config, key) < 0:
            raise ConfigError(f"config key {key!r} must be >= 0, got {getattr(config, key)}")
    if config.steps is not None and config.steps < 1:
        raise ConfigError(f"config key 'steps' must be >= 1, got {config.steps}")
    if not config.features:
        raise ConfigError("config key 'features' must name at least one feature folder")
    if config.labels and len(config.labels) != len(config.features):
        raise ConfigError(
            f"config keys 'labels' and 'features' must list the same number of folders "
            f"({len(config.labels)} vs {len(config.features)}), in the same order"
        )
    if config.variant == "geoclip" and config.contrastive_space == "concept":
        raise ConfigError("contrastive_space 'concept' needs a concept variant, not 'geoclip'")
    if config.variant != "geoclip" and config.concept_embeddings is None:
        raise ConfigError(f"variant {config.variant!r} needs config key 'concept_embeddings'")
    if config.variant == "concept+supervised" and not config.labels:
        raise ConfigError("variant 'concept+supervised' needs config key 'labels' (concept label folders)")
    if config.location_init == "geoclip" and [float(s) for s in config.sigmas] != [1.0, 16.0, 256.0]:
        raise ConfigError("location_init 'geoclip' loads GeoCLIP's weights, trained with sigmas [1, 16, 256]")
    if not config.sigmas or any(s <= 0 for s in config.sigmas):
        raise ConfigError("config key 'sigmas' must list positive numbers")


def load_yaml(path: Path) -> dict[str, Any]:
    raw = read_yaml(path, "config file")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return raw


def parse_override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE, got {text!r}")
    try:
        return key.strip(), yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        return key.strip(), value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML training config (keys: see geoconcept.train.params)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config key (value parsed as YAML, e.g. --set lr=1e-4 --set variant=geoclip)",
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    entries: list[tuple[str, Any, str, Path]] = []
    if args.config is not None:
        path = args.config.resolve()
        entries += [(k, v, str(path), path.parent) for k, v in load_yaml(path).items()]
    for text in args.overrides:
        key, value = parse_override(text)
        entries.append((key, value, f"--set {text}", Path.cwd()))
    return build_config(entries)


def parse_args(argv: Sequence[str] | None) -> TrainConfig:
    parser = argparse.ArgumentParser(prog="geoconcept train", description="Train a geoconcept model.")
    add_arguments(parser)
    return config_from_args(parser.parse_args(argv))


def config_yaml(config: TrainConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=True)
