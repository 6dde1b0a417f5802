"""The trainer: `geoconcept train --config FILE [--set key=value ...]`, `python -m geoconcept.train`,
or `torchrun --nproc_per_node N -m geoconcept.train ...`.

It reads cached features (never the backbone), trains one variant with a fixed seed and writes a
run folder:

* `config.yaml` — the resolved config;
* `metrics.jsonl` — one JSON object per log step (`kind` = "train": step, epoch, loss terms, lr,
  temperature, logit_scale, samples_per_s) and a last one with the validation metrics
  (`kind` = "val");
* `checkpoints/step-NNNNNN.safetensors` and `last.safetensors` — full training state (model,
  optimizer, GPS queue, RNG, partial log sums): a re-run of the same command resumes from
  `last.safetensors` and ends with exactly the weights an uninterrupted run would have;
* `final.safetensors` — the model alone, with its metadata (see geoconcept.model.checkpoint).

`on_event(kind, payload)` is called on rank 0 with kind "message" ({"text"}), "log" (the
metrics line), "checkpoint" ({"step", "path"}), "val" (validation metrics) and "done"
({"final", "sha256", "steps", "val"}); the Dagster launcher forwards them through Pipes.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from tqdm import tqdm

from geoconcept import atomic
from geoconcept.errors import ConfigError
from geoconcept.model.checkpoint import (
    TrainingState,
    load_training_state,
    model_metadata,
    save_model,
    save_training_state,
)
from geoconcept.model.concept_module import concept_text_basis
from geoconcept.model.geoconcept_model import GeoConceptModel
from geoconcept.model.location_encoder import LocationEncoder
from geoconcept.model.losses import concept_divergence, masked_bce, training_losses
from geoconcept.model.queue import GPSQueue
from geoconcept.train import distributed
from geoconcept.train.data import Batch, Samples, TrainingData, load_training_data
from geoconcept.train.params import RUN_IDENTITY, TrainConfig, config_yaml, parse_args

EventHandler = Callable[[str, dict[str, Any]], None]
KM_PER_DEGREE = 6371.0 * math.pi / 180  # along a meridian, mean Earth radius
DATA_FINGERPRINT = "data.sha256"
RUN_FILES = ("config.yaml", DATA_FINGERPRINT, "metrics.jsonl", "last.safetensors", "final.safetensors")


@dataclass
class TrainResult:
    run_dir: Path
    final_path: Path
    final_sha256: str
    steps: int
    resumed_from: int | None
    val: dict[str, float]
    warnings: list[str] = field(default_factory=list)


def main(argv: Sequence[str] | None = None, on_event: EventHandler | None = None) -> int:
    train(parse_args(argv), on_event)
    return 0


def jitter(latlon: torch.Tensor, km: float, generator: torch.Generator) -> torch.Tensor:
    """Gaussian displacement of `km` standard deviation on the ground (GeoCLIP-style GPS augmentation)."""
    noise = torch.randn(latlon.shape, generator=generator, dtype=latlon.dtype) * (km / KM_PER_DEGREE)
    lat = (latlon[:, 0] + noise[:, 0]).clamp(-90.0, 90.0)
    lon_scale = torch.cos(torch.deg2rad(latlon[:, 0])).clamp_min(0.01)
    lon = torch.remainder(latlon[:, 1] + noise[:, 1] / lon_scale + 180.0, 360.0) - 180.0
    return torch.stack((lat, lon), dim=1)


def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int, total: int) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.lr_schedule == "step":
        return config.lr * config.lr_gamma ** (step // steps_per_epoch)
    if config.lr_schedule == "cosine":
        progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
        return config.lr * 0.5 * (1 + math.cos(math.pi * progress))
    return config.lr


def build_model(config: TrainConfig, data: TrainingData) -> GeoConceptModel:
    concept_ids = data.concepts.info.concept_ids if data.concepts else []
    model = GeoConceptModel(
        variant=config.variant,
        feature_dim=data.feature_dim,
        concept_ids=concept_ids,
        contrastive_space=config.space,
        sigmas=config.sigmas,
        temperature_init=config.temperature_init,
    )
    if config.location_init == "geoclip":
        model.location_encoder.load_state_dict(LocationEncoder.from_geoclip().state_dict())
    if config.image_head_init == "geoclip":
        try:
            model.image_head.load_geoclip()
        except ValueError as exc:
            raise ConfigError(f"image_head_init 'geoclip': {exc}") from None
    if model.concepts is not None and data.concepts is not None:
        with torch.no_grad():
            basis = concept_text_basis(data.concepts.embeddings, model.dim, center=config.center_concepts)
            model.concepts.text_basis.copy_(basis.T)
    if model.calibration is not None and data.train.prevalence is not None:
        # Start each concept's logit at its prevalence among the training points (the usual prior
        # init): most concepts are rare, and a bias learned from 0 at a small lr takes thousands of steps.
        prevalence = data.train.prevalence.clamp(1e-3, 1 - 1e-3)
        with torch.no_grad():
            model.calibration.bias.copy_(torch.nan_to_num(torch.logit(prevalence), nan=0.0))
    model.logit_scale.requires_grad_(config.learn_temperature)
    model.backbone = data.backbone
    return model


def make_optimizer(model: GeoConceptModel, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; like open_clip, no weight decay on biases, gains and the logit scale (1-d / 0-d tensors)."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in params if p.ndim >= 2]
    rest = [p for n, p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    # The fused kernel is ~40x faster than the default per-tensor loop on CPU, and deterministic.
    return torch.optim.AdamW(groups, lr=config.lr, fused=True)


@torch.inference_mode()
def validation_metrics(model: GeoConceptModel, val: Samples, config: TrainConfig) -> dict[str, float]:
    """Image→location retrieval among the validation set's own locations, and the concept terms.

    A location counts as retrieved when no *other* coordinate scores higher than the true one
    (duplicates of the true coordinate are not competitors).
    """
    n = len(val)
    if n == 0:
        return {}
    model.eval()
    q = model.retrieval_image_vectors(val.features)
    k = model.retrieval_location_vectors(val.latlon)
    scale = model.logit_scale.exp()
    loss = top1 = top5 = 0.0
    for rows in torch.arange(n).split(config.val_batch_size):
        logits = scale * q[rows] @ k.T
        loss += float(F.cross_entropy(logits, rows, reduction="sum"))
        true = logits[torch.arange(len(rows)), rows]
        same = (val.latlon[rows][:, None, :] == val.latlon[None, :, :]).all(-1)
        better = ((logits > true[:, None]) & ~same).sum(1)
        top1 += float((better < 1).sum())
        top5 += float((better < 5).sum())
    out = {"val_samples": float(n), "val_loss_contrastive": loss / n, "val_top1": top1 / n, "val_top5": top5 / n}
    if model.concepts is not None:
        z_img, z_loc = model.image_concepts(val.features), model.location_concepts(val.latlon)
        chunks = torch.arange(n).split(config.val_batch_size)
        out["val_loss_concept"] = float(
            sum(concept_divergence(z_img[c], z_loc[c], config.sigma, config.concept_loss) * len(c) for c in chunks) / n
        )
        if model.calibration is not None and val.labels is not None:
            out["val_bce_image"] = float(masked_bce(model.calibration(z_img), val.labels))
            out["val_bce_location"] = float(masked_bce(model.calibration(z_loc), val.labels))
    return out


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return lines


def _write_metrics(path: Path, metrics: list[dict[str, Any]]) -> None:
    atomic.write_text(path, "".join(json.dumps(m, sort_keys=True) + "\n" for m in metrics))


def _changes_since(run: Path, config: TrainConfig, data_sha256: str) -> list[str]:
    """What differs between the run recorded in `run` and this one: config keys, or the data."""
    path = run / "config.yaml"
    if not path.exists():
        return []
    before = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    now = config.to_dict()
    changed = [k for k in RUN_IDENTITY if before.get(k) != now.get(k)]
    recorded = run / DATA_FINGERPRINT
    if recorded.exists() and recorded.read_text().strip() != data_sha256:
        changed.append("training data (features, labels, split or concept embeddings)")
    return changed


def _check_same_run(run: Path, config: TrainConfig, data_sha256: str) -> bool:
    """True if the recorded run may be resumed. Resuming a different run would silently mix two
    runs: refuse, naming what changed, or (restart_if_changed) start over."""
    changed = _changes_since(run, config, data_sha256)
    if changed and not config.restart_if_changed:
        raise ConfigError(
            f"run folder {run} holds a run with a different config or data ({', '.join(changed)} changed): "
            "use another output folder, or --set resume=false (or restart_if_changed=true) to start over"
        )
    return not changed


def train(config: TrainConfig, on_event: EventHandler | None = None) -> TrainResult:
    info = distributed.init_distributed(config.device)
    try:
        return _train(config, info, on_event)
    finally:
        distributed.shutdown(info)


def _train(config: TrainConfig, info: distributed.DistInfo, on_event: EventHandler | None) -> TrainResult:
    def emit(kind: str, payload: dict[str, Any]) -> None:
        if on_event is not None and info.is_main:
            on_event(kind, payload)

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    run = Path(config.output)
    data = load_training_data(config)
    warnings = [data.backbone_warning] if data.backbone_warning else []
    for text in warnings:
        emit("message", {"text": f"warning: {text}"})
    n, batch = len(data.train), config.batch_size
    if n < batch:
        raise ConfigError(f"the training split has {n} samples, fewer than batch_size {batch}")
    if batch % info.world_size:
        raise ConfigError(f"batch_size {batch} must be a multiple of the number of processes ({info.world_size})")
    steps_per_epoch = n // batch  # the last partial batch of an epoch is dropped, as in GeoCLIP
    total = config.steps or config.epochs * steps_per_epoch

    torch.manual_seed(config.seed)
    model = build_model(config, data).to(info.device)
    optimizer = make_optimizer(model, config)
    queue = GPSQueue(config.queue_size).to(info.device)
    noise = torch.Generator().manual_seed(config.seed)
    state = TrainingState(step=0, epoch=0, log_sums={})
    metrics: list[dict[str, Any]] = []
    resumed_from = None
    last = run / "last.safetensors"
    if info.is_main:
        run.mkdir(parents=True, exist_ok=True)
        atomic.remove_stale_temps(run, RUN_FILES)
        stale = {p.name.split(atomic.TEMP_MARKER)[0] for p in run.glob(f"checkpoints/step-*{atomic.TEMP_MARKER}*")}
        atomic.remove_stale_temps(run / "checkpoints", stale)
    data_sha256 = data.fingerprint
    if config.resume and last.exists() and _check_same_run(run, config, data_sha256):
        state, _ = load_training_state(last, model=model, optimizer=optimizer, queue=queue, noise=noise)
        metrics = [
            m for m in _read_metrics(run / "metrics.jsonl") if m.get("kind") == "train" and m["step"] <= state.step
        ]
        resumed_from = state.step
        emit("message", {"text": f"resuming from {last} at step {state.step}"})
    if info.is_main:
        atomic.write_text(run / "config.yaml", config_yaml(config))
        atomic.write_text(run / DATA_FINGERPRINT, data_sha256 + "\n")
    distributed.barrier(info)

    bank_sha = data.concepts.info.bank_sha256 if data.concepts else None
    model_meta = {
        "config": config.to_dict(),
        "bank_sha256": bank_sha,
        "backbone": data.backbone,
        "backbone_spec": data.backbone_spec,
    }
    ddp = distributed.wrap(model, info)
    model.train()
    sums = dict(state.log_sums)
    clock, seen = time.perf_counter(), 0
    bar = tqdm(total=total, initial=state.step, disable=not (config.progress and info.is_main), file=sys.stderr)
    batches: Iterator[Batch] | None = None
    for step in range(state.step, total):
        epoch, pos = divmod(step, steps_per_epoch)
        if batches is None or pos == 0:
            batches = data.train.batches(
                seed=config.seed,
                epoch=epoch,
                batch_size=batch,
                buffer=config.shuffle_buffer,
                start=pos,
                rank=info.rank,
                world=info.world_size,
            )
        item = next(batches)
        # Every process draws the same global batch and jitter, and pushes all of it into its queue.
        latlon = data.train.latlon[item.ids]
        if config.gps_noise_km > 0:
            latlon = jitter(latlon, config.gps_noise_km, noise)
        my_latlon = latlon.tensor_split(info.world_size)[info.rank]
        features = item.features.to(info.device)
        candidates = torch.cat([my_latlon.to(info.device), queue.entries()])
        lr = learning_rate(config, step, steps_per_epoch, total)
        for group in optimizer.param_groups:
            group["lr"] = lr

        out = ddp(features, candidates)
        terms = training_losses(
            out,
            item.labels.to(info.device) if item.labels is not None else None,
            lambda_concept=config.lambda_concept,
            sigma=config.sigma,
            concept_loss=config.concept_loss,
            supervised_weight=config.supervised_weight,
            ranks=info.ranks,
        )
        optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        optimizer.step()
        model.clamp_logit_scale()
        queue.push(latlon.to(info.device))

        for name, value in terms.as_floats().items():
            sums[name] = sums.get(name, 0.0) + value
        sums["n"] = sums.get("n", 0.0) + 1
        seen += len(item.ids)
        done = step + 1
        bar.update(1)
        if done % config.log_interval == 0 or done == total:
            count = sums.pop("n")
            means = distributed.mean_across_ranks({k: v / count for k, v in sums.items()}, info)
            now = time.perf_counter()
            record = {
                "kind": "train",
                "step": done,
                "epoch": done / steps_per_epoch,
                **means,
                "lr": lr,
                "temperature": model.temperature,
                "logit_scale": 1 / model.temperature,
                "samples_per_s": seen / max(now - clock, 1e-9),
            }
            clock, seen, sums = now, 0, {}
            metrics.append(record)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            if info.is_main:
                _write_metrics(run / "metrics.jsonl", metrics)
            emit("log", record)
        if done % config.checkpoint_interval == 0 or done == total:
            if info.is_main:
                path = run / "checkpoints" / f"step-{done:06d}.safetensors"
                save_training_state(
                    path,
                    model=model,
                    optimizer=optimizer,
                    queue=queue,
                    noise=noise,
                    state=TrainingState(step=done, epoch=epoch, log_sums=sums),
                    metadata=model_metadata(model, **model_meta),  # type: ignore[arg-type]
                )
                atomic.write_bytes(last, path.read_bytes())
            distributed.barrier(info)
            emit("checkpoint", {"step": done, "path": str(run / "checkpoints" / f"step-{done:06d}.safetensors")})
    bar.close()

    val = validation_metrics(model, data.val, config)
    final = run / "final.safetensors"
    sha = ""
    if info.is_main:
        sha = save_model(model, final, **model_meta)  # type: ignore[arg-type]
        metrics.append({"kind": "val", "step": total, **val})
        _write_metrics(run / "metrics.jsonl", metrics)
    distributed.barrier(info)
    emit("val", val)
    emit("done", {"final": str(final), "sha256": sha, "steps": total, "val": val})
    return TrainResult(run, final, sha, total, resumed_from, val, warnings)
