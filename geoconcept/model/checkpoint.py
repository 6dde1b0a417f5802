"""Model and training-state files (safetensors, never pickle).

* A model file (`final.safetensors`) holds the model's state dict under its own names, and
  metadata (all strings): `format` = "geoconcept-model", `format_version`, `variant`,
  `contrastive_space`, `feature_dim`, `dim`, `sigmas` (JSON), `concept_ids` (JSON),
  `bank_sha256`, `backbone` (feature tag, e.g. "ViT-B-32__none"), `backbone_model`,
  `backbone_pretrained`, `backbone_seed` (to rebuild the backbone for new images, see
  `Backbone.from_metadata`), `temperature`, `config` (JSON of the training config),
  `geoconcept_version`.
* A training checkpoint (`checkpoints/step-NNNNNN.safetensors`, `last.safetensors`) holds the
  same model metadata plus `format` = "geoconcept-training-state", `step`, `epoch`,
  `optimizer_param_groups` (JSON) and `log_terms` (JSON); tensors `model/<name>`,
  `optimizer/<param index>/<state name>`, `queue/<buffer>`, `rng/torch`, `rng/noise`,
  `log/sums`. Everything a resumed run needs to continue exactly as if uninterrupted.

`load_model` reads either kind and fails with an `InputError` naming the file and the problem.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

import geoconcept
from geoconcept.errors import InputError
from geoconcept.hashing import file_sha256
from geoconcept.model.geoconcept_model import GeoConceptModel
from geoconcept.model.location_encoder import flush_subnormals_
from geoconcept.model.queue import GPSQueue
from geoconcept.model.tensor_files import json_metadata, read_tensors, require_metadata, save_tensors

FINAL_CHECKPOINT = "final.safetensors"  # a finished run's model file, in its run folder
MODEL_FORMAT = "geoconcept-model"
TRAINING_FORMAT = "geoconcept-training-state"
FORMAT_VERSION = "1"
MODEL_PREFIX = "model/"
_MODEL_KEYS = ["variant", "contrastive_space", "feature_dim", "dim", "sigmas", "concept_ids"]


def model_metadata(
    model: GeoConceptModel,
    *,
    config: dict | None = None,
    bank_sha256: str | None = None,
    backbone: str | None = None,
    backbone_spec: dict[str, str] | None = None,
) -> dict[str, str]:
    facts = model.describe()
    spec = backbone_spec or {}
    return {
        "format_version": FORMAT_VERSION,
        "variant": model.variant,
        "contrastive_space": model.contrastive_space,
        "feature_dim": str(model.feature_dim),
        "dim": str(model.dim),
        "sigmas": json.dumps(facts["sigmas"]),
        "concept_ids": json.dumps(model.concept_ids),
        "bank_sha256": bank_sha256 or "",
        "backbone": backbone or model.backbone or "",
        "backbone_model": spec.get("model", ""),
        "backbone_pretrained": spec.get("pretrained", ""),
        "backbone_seed": spec.get("seed", ""),
        "temperature": repr(model.temperature),
        "config": json.dumps(config or {}, sort_keys=True),
        "geoconcept_version": geoconcept.__version__,
    }


def save_model(model: GeoConceptModel, path: str | os.PathLike[str], **metadata: object) -> str:
    """Write the model alone (atomically); returns the file's sha256. Keyword args: see `model_metadata`."""
    meta = model_metadata(model, **metadata) | {"format": MODEL_FORMAT}  # type: ignore[arg-type]
    save_tensors(path, dict(model.state_dict()), meta)
    return file_sha256(path)


def _model_from(tensors: dict[str, torch.Tensor], meta: dict[str, str], path: Path) -> GeoConceptModel:
    require_metadata(meta, _MODEL_KEYS, path, "checkpoint")
    try:
        model = GeoConceptModel(
            variant=meta["variant"],
            feature_dim=int(meta["feature_dim"]),
            concept_ids=json_metadata(meta, "concept_ids", path, "checkpoint"),  # type: ignore[arg-type]
            contrastive_space=meta["contrastive_space"],
            sigmas=json_metadata(meta, "sigmas", path, "checkpoint"),  # type: ignore[arg-type]
            dim=int(meta["dim"]),
        )
    except (ValueError, TypeError) as exc:
        raise InputError(f"checkpoint {path}: inconsistent metadata ({exc})") from None
    expected = set(model.state_dict())
    if set(tensors) != expected:
        missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise InputError(
            f"checkpoint {path}: tensors do not match a {model.variant} model "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        problems = [line.strip() for line in str(exc).splitlines()[1:]] or [str(exc)]
        raise InputError(f"checkpoint {path}: tensors do not fit its metadata ({problems[0]})") from None
    return model


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """The model file a checkpoint argument names: a file as given, or a run folder's `final.safetensors`.

    The one place that reads "checkpoint" arguments (predict, gallery, evaluate, their configs), so
    each accepts the same things and says the same when it cannot. The name `geoclip-pretrained`
    is GeoCLIP's published model, assembled once under the data root (see geoclip_pretrained).
    """
    from geoconcept.model import geoclip_pretrained  # here: that module imports this one

    if str(path) == geoclip_pretrained.GEOCLIP_PRETRAINED:
        return geoclip_pretrained.geoclip_pretrained_checkpoint()
    path = Path(path)
    if path.is_dir():
        final = path / FINAL_CHECKPOINT
        if not final.is_file():
            raise InputError(f"checkpoint {path} is a directory without {FINAL_CHECKPOINT} (not a finished run folder)")
        return final
    if not path.exists():
        raise InputError(f"checkpoint {path} not found")
    return path


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> GeoConceptModel:
    """A model from `final.safetensors`, a training checkpoint or a run folder, in eval mode on `device`."""
    path = resolve_checkpoint(path)
    tensors, meta = read_tensors(path, "checkpoint")
    kind = meta.get("format")
    if kind == TRAINING_FORMAT:
        tensors = {k.removeprefix(MODEL_PREFIX): v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
    elif kind != MODEL_FORMAT:
        raise InputError(f"checkpoint {path} is not a geoconcept model file (format {kind!r})")
    model = _model_from(tensors, meta, path)
    # Subnormal weights only cost time on CPUs (see flush_subnormals_); inference drops them.
    flush_subnormals_(model)
    model.checkpoint_sha256 = file_sha256(path)
    model.backbone = meta.get("backbone") or None
    model.checkpoint_metadata = meta
    return model.to(device).eval()


# training state -------------------------------------------------------------------------
@dataclass
class TrainingState:
    step: int  # optimizer steps completed
    epoch: int
    log_sums: dict[str, float]  # loss sums since the last log line, and their count ("n")


def save_training_state(
    path: str | os.PathLike[str],
    *,
    model: GeoConceptModel,
    optimizer: torch.optim.Optimizer,
    queue: GPSQueue,
    noise: torch.Generator,
    state: TrainingState,
    metadata: dict[str, str],
) -> None:
    tensors: dict[str, torch.Tensor] = {MODEL_PREFIX + k: v for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for index, values in opt["state"].items():
        for name, value in values.items():
            tensors[f"optimizer/{index}/{name}"] = torch.as_tensor(value)
    for name, buf in queue.state_dict().items():
        tensors[f"queue/{name}"] = buf
    tensors["rng/torch"] = torch.get_rng_state()
    tensors["rng/noise"] = noise.get_state()
    names = sorted(state.log_sums)
    tensors["log/sums"] = torch.tensor([state.log_sums[n] for n in names], dtype=torch.float64)
    meta = metadata | {
        "format": TRAINING_FORMAT,
        "step": str(state.step),
        "epoch": str(state.epoch),
        "optimizer_param_groups": json.dumps(opt["param_groups"]),
        "log_terms": json.dumps(names),
    }
    save_tensors(path, tensors, meta)


def load_training_state(
    path: str | os.PathLike[str],
    *,
    model: GeoConceptModel,
    optimizer: torch.optim.Optimizer,
    queue: GPSQueue,
    noise: torch.Generator,
) -> tuple[TrainingState, dict[str, str]]:
    """Restore everything `save_training_state` wrote into the given objects; returns the step info."""
    path = Path(path)
    tensors, meta = read_tensors(path, "training checkpoint")
    if meta.get("format") != TRAINING_FORMAT:
        raise InputError(
            f"training checkpoint {path} is not a geoconcept training state (format {meta.get('format')!r})"
        )
    require_metadata(meta, ["step", "epoch", "optimizer_param_groups", "log_terms"], path, "training checkpoint")
    model_tensors = {k.removeprefix(MODEL_PREFIX): v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
    if set(model_tensors) != set(model.state_dict()):
        raise InputError(f"training checkpoint {path} holds a different model than the configured one")
    model.load_state_dict(model_tensors)
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer/"):
            _, index, key = name.split("/", 2)
            opt_state.setdefault(int(index), {})[key] = value
    groups = json_metadata(meta, "optimizer_param_groups", path, "training checkpoint")
    try:
        optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
        queue.load_state_dict({k.removeprefix("queue/"): v for k, v in tensors.items() if k.startswith("queue/")})
        torch.set_rng_state(tensors["rng/torch"])
        noise.set_state(tensors["rng/noise"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise InputError(f"training checkpoint {path} does not fit this run ({exc})") from None
    names = json_metadata(meta, "log_terms", path, "training checkpoint")
    sums = dict(zip(names, tensors["log/sums"].tolist(), strict=True))  # type: ignore[arg-type]
    return TrainingState(step=int(meta["step"]), epoch=int(meta["epoch"]), log_sums=sums), meta
