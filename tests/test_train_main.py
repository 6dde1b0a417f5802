"""The trainer end to end on tiny synthetic inputs: determinism, resume, variants, events (DDP: own file)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from _model_inputs import concept_values, train_args, write_dataset
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score

from geoconcept.cli import main as cli_main
from geoconcept.errors import ConfigError
from geoconcept.model.checkpoint import load_model
from geoconcept.train.data import load_training_data
from geoconcept.train.main import build_model, main, train, validation_metrics
from geoconcept.train.params import parse_args

TIMING = {"samples_per_s"}


class Crash(Exception):
    pass


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def without_timing(lines: list[dict]) -> list[dict]:
    return [{k: v for k, v in line.items() if k not in TIMING} for line in lines]


def weights(path) -> dict[str, torch.Tensor]:
    return load_file(path)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("inputs"), n=96)


def test_same_seed_same_metrics_and_weights(paths, tmp_path):
    main(train_args(paths, tmp_path / "a"))
    main(train_args(paths, tmp_path / "b"))
    a, b = metrics(tmp_path / "a"), metrics(tmp_path / "b")
    assert without_timing(a) == without_timing(b)
    assert [m["step"] for m in a] == [2, 4, 6, 6] and a[-1]["kind"] == "val"
    wa, wb = weights(tmp_path / "a/final.safetensors"), weights(tmp_path / "b/final.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    main(train_args(paths, tmp_path / "c", seed=1))
    assert without_timing(metrics(tmp_path / "c")) != without_timing(a)


@pytest.mark.parametrize("buffer", [65536, 30])  # the whole split in one window, or windows of one shard
def test_resume_gives_exactly_the_uninterrupted_result(paths, tmp_path, buffer):
    main(train_args(paths, tmp_path / "whole", shuffle_buffer=buffer))

    def crash_after_first_checkpoint(kind, payload):
        if kind == "checkpoint" and payload["step"] == 3:
            raise Crash

    args = train_args(paths, tmp_path / "resumed", shuffle_buffer=buffer)
    with pytest.raises(Crash):
        main(args, on_event=crash_after_first_checkpoint)
    assert not (tmp_path / "resumed/final.safetensors").exists()
    events = []
    result = train(parse_args(args), on_event=lambda kind, payload: events.append(kind))
    assert result.resumed_from == 3 and events[0] == "message"
    whole, resumed = weights(tmp_path / "whole/final.safetensors"), weights(tmp_path / "resumed/final.safetensors")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert without_timing(metrics(tmp_path / "whole")) == without_timing(metrics(tmp_path / "resumed"))
    # the checkpoint holds the queue and the optimizer, not only the weights
    state = load_file(tmp_path / "resumed/checkpoints/step-000003.safetensors")
    assert int(state["queue/count"]) == 24 and any(k.endswith("/exp_avg") for k in state)


def test_resume_refuses_a_different_config(paths, tmp_path):
    main(train_args(paths, tmp_path / "run"))
    with pytest.raises(ConfigError, match=r"different config or data \(lr changed\)"):
        main(train_args(paths, tmp_path / "run", lr=0.01))
    main(train_args(paths, tmp_path / "run", lr=0.01, resume=False))  # starting over is allowed
    assert json.loads(load_model(tmp_path / "run/final.safetensors").checkpoint_metadata["config"])["lr"] == 0.01


def test_changed_training_data_under_the_same_paths_is_refused_or_restarted(tmp_path):
    paths = write_dataset(tmp_path / "inputs", n=96)
    main(train_args(paths, tmp_path / "run"))
    before = weights(tmp_path / "run/final.safetensors")
    write_dataset(tmp_path / "inputs", n=96, seed=7)  # same files, other content
    with pytest.raises(ConfigError, match="training data"):
        main(train_args(paths, tmp_path / "run"))
    main(train_args(paths, tmp_path / "run", restart_if_changed=True))
    after = weights(tmp_path / "run/final.safetensors")
    assert not all(torch.equal(before[k], after[k]) for k in before)
    main(train_args(paths, tmp_path / "run"))  # unchanged since: the finished run is simply kept
    assert all(torch.equal(after[k], v) for k, v in weights(tmp_path / "run/final.safetensors").items())


@pytest.mark.parametrize(
    ("variant", "extra", "terms"),
    [
        ("geoclip", {}, {"loss", "loss_contrastive"}),
        ("concept", {"concept_loss": "paper_eq6"}, {"loss", "loss_contrastive", "loss_concept"}),
        ("concept", {"contrastive_space": "embedding"}, {"loss", "loss_contrastive", "loss_concept"}),
    ],
)
def test_variants_log_their_loss_terms_and_write_their_model(paths, tmp_path, variant, extra, terms):
    run = tmp_path / "run"
    main(train_args(paths, run, variant=variant, steps=2, checkpoint_interval=100, **extra))
    line = metrics(run)[0]
    assert {k for k in line if k.startswith("loss")} == terms
    assert {"step", "epoch", "lr", "temperature", "samples_per_s"} <= set(line)
    model = load_model(run / "final.safetensors")
    assert model.variant == variant
    assert model.contrastive_space == extra.get("contrastive_space", "embedding" if variant == "geoclip" else "concept")
    assert json.loads(model.checkpoint_metadata["concept_ids"]) == (
        [] if variant == "geoclip" else ["tropical", "northern", "polar", "text_only"]
    )
    assert model.backbone == "test-backbone__none"
    meta = model.checkpoint_metadata
    assert (meta["backbone_model"], meta["backbone_pretrained"], meta["backbone_seed"]) == (
        "test-backbone",
        "none",
        "0",
    )
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000002.safetensors"]


def test_events_and_training_improves_retrieval(paths, tmp_path):
    args = train_args(
        paths, tmp_path / "run", variant="geoclip", steps=20, lr=3e-3, log_interval=5, checkpoint_interval=20
    )
    config = parse_args(args)
    data = load_training_data(config)
    torch.manual_seed(0)
    before = validation_metrics(build_model(config, data), data.val, config)
    events = []
    result = train(config, on_event=lambda kind, payload: events.append((kind, payload)))
    kinds = [k for k, _ in events]
    assert kinds == ["log"] * 4 + ["checkpoint", "val", "done"]
    assert events[-1][1]["sha256"] == result.final_sha256 and events[-1][1]["val"] == result.val
    assert result.val["val_loss_contrastive"] < before["val_loss_contrastive"]
    assert result.val["val_top5"] > before["val_top5"]


def test_batch_larger_than_training_split_is_a_config_error(paths, tmp_path):
    with pytest.raises(ConfigError, match="fewer than batch_size 4096"):
        main(train_args(paths, tmp_path / "run", batch_size=4096))


def test_cli_train_and_its_errors(paths, tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text(
        "variant: geoclip\nsteps: 2\nbatch_size: 16\nlocation_init: random\nsigmas: [1]\nprogress: false\n"
    )
    args = train_args(paths, tmp_path / "run", variant="geoclip", steps=2)
    assert cli_main(["train", "--config", str(config), *args[: 2 * 6]]) == 0  # paths from --set, rest from YAML
    assert "train: geoclip for 2 steps" in capsys.readouterr().out
    assert cli_main(["train", "--config", str(config), "--set", "lrate=1"]) == 2
    assert "geoconcept train: error: unknown config key 'lrate'" in capsys.readouterr().err


def test_a_768_wide_concept_bank_is_mapped_into_the_512_space(tmp_path):
    paths = write_dataset(tmp_path / "in", n=48, text_dim=768)
    run = tmp_path / "run"
    main(train_args(paths, run, variant="concept", steps=2, checkpoint_interval=100))
    model = load_model(run / "final.safetensors")
    basis = model.concepts.text_basis.T  # (k, 512), frozen during training
    vectors = load_file(paths["embeddings"])["embeddings"]
    assert basis.shape == (4, 512)
    centred = torch.nn.functional.normalize(vectors - vectors.mean(dim=0), dim=1)  # center_concepts: true
    assert torch.allclose(basis @ basis.T, centred @ centred.T, atol=1e-5)


def test_supervised_term_grounds_both_sides_concept_scores(paths, tmp_path):
    # Weight 5: at 1, 20 steps leave the sign of the concept scores to chance (AUC 0.28 to 1.0 over seeds 0-3).
    args = train_args(paths, tmp_path / "run", steps=20, lr=3e-3, checkpoint_interval=100, supervised_weight=5.0)
    config = parse_args(args)
    data = load_training_data(config)
    fresh = build_model(config, data)
    labels = pd.concat(pd.read_parquet(f) for f in sorted(paths["labels"].iterdir()))
    split = pd.read_parquet(paths["split"])
    train_keys = set(split.key[split.split == "train"])
    prevalence = labels[labels.key.isin(train_keys)]["concept__northern"].mean()  # NaN (not measured) skipped
    assert fresh.calibration.bias[1].item() == pytest.approx(math.log(prevalence / (1 - prevalence)), rel=1e-5)
    assert fresh.calibration.bias[3].item() == 0.0  # text-only concept: no labels, no prior
    main(args)
    model = load_model(tmp_path / "run/final.safetensors")
    truth = concept_values(data.val.latlon.double().numpy())["northern"]
    location_side = model.location_concepts(data.val.latlon)[:, 1].numpy()
    image_side = model.image_concepts(data.val.features)[:, 1].numpy()
    assert roc_auc_score(truth, location_side) >= 0.9
    assert roc_auc_score(truth, image_side) >= 0.9
