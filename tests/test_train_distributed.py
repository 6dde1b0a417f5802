"""DDP on CPU (gloo, 2 processes under torchrun): the same model as one process at the full batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from _model_inputs import train_args, write_dataset
from conftest import REPO
from safetensors.torch import load_file

from geoconcept.model.checkpoint import load_model
from geoconcept.train.data import load_training_data
from geoconcept.train.main import build_model, main
from geoconcept.train.params import parse_args

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("inputs"), n=96)


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def torchrun(args: list[str], processes: int = 2) -> None:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    out = subprocess.run(
        [*launcher, "-m", "geoconcept.train", *args],
        cwd=REPO,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]


def test_two_processes_write_the_same_run_files(paths, tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    main(train_args(paths, single, steps=4, checkpoint_interval=2))
    torchrun(train_args(paths, ddp, steps=4, checkpoint_interval=2))
    a, b = metrics(single), metrics(ddp)
    assert [(m["kind"], m["step"], sorted(m)) for m in a] == [(m["kind"], m["step"], sorted(m)) for m in b]
    assert sorted(p.name for p in (ddp / "checkpoints").iterdir()) == [
        "step-000002.safetensors",
        "step-000004.safetensors",
    ]
    model = load_model(ddp / "final.safetensors")
    assert set(model.state_dict()) == set(load_model(single / "final.safetensors").state_dict())
    assert not any(k.startswith("module.") for k in model.state_dict())


@pytest.mark.parametrize(
    ("variant", "extra"),
    [("geoclip", {}), ("concept", {"concept_loss": "cauchy_schwarz"}), ("concept+supervised", {})],
)
def test_two_processes_at_half_the_batch_train_the_same_model_as_one(paths, tmp_path, variant, extra):
    # 6 steps of batch 16 over 67 training samples: two epochs, the queue (24) full from step 2 on,
    # and shuffle windows of one shard (~33 samples), so batches straddle windows and epochs.
    settings = {"steps": 6, "log_interval": 1, "checkpoint_interval": 100, "shuffle_buffer": 30, **extra}
    one, two = tmp_path / "one", tmp_path / "two"
    main(train_args(paths, one, variant=variant, **settings))
    torchrun(train_args(paths, two, variant=variant, **settings))
    config = parse_args(train_args(paths, one, variant=variant, **settings))
    torch.manual_seed(config.seed)  # as the trainer does before building its model
    start = build_model(config, load_training_data(config)).state_dict()
    # Float32 sums in another order (B/2-row matmuls, gradients summed across processes) differ by
    # ~1e-7 relative: the losses of every step agree to 1e-5. AdamW divides each gradient by its own
    # magnitude, so components whose gradient is ~0 turn that noise into steps of up to lr: each
    # weight tensor's difference is compared with how far it moved (measured <= 3e-4 of it). A real
    # mismatch, e.g. each process averaging the supervised BCE over its own half, moves losses by
    # ~1e-2 from step 2 on and weights by ~1e-2 of their travel.
    for a, b in zip(metrics(one), metrics(two), strict=True):
        for term in [k for k in a if k.startswith("loss")]:
            assert b[term] == pytest.approx(a[term], rel=1e-5), (a["step"], term)
    w1, w2 = load_file(one / "final.safetensors"), load_file(two / "final.safetensors")
    for name, weight in w1.items():
        assert (weight - w2[name]).norm() <= 1e-3 * (weight - start[name]).norm(), name
