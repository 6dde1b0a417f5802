"""Train a geoconcept model (variant geoclip, concept or concept+supervised) on cached image features.

Reads a YAML config (--config) and/or --set KEY=VALUE overrides; writes the run folder (config.yaml,
metrics.jsonl, checkpoints/, last.safetensors, final.safetensors). Re-running the same command
resumes from last.safetensors. Under torchrun use `python -m geoconcept.train` with the same
arguments. Config keys: see geoconcept/train/params.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from geoconcept.train import params
from geoconcept.validate import check_output_folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    params.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from geoconcept.train.main import train

    config = params.config_from_args(args)
    check_output_folder(Path(config.output), "output")  # before the data is loaded, not when the run folder is made

    def show(kind: str, payload: dict) -> None:
        if kind == "message":
            print(payload["text"])
        elif kind == "checkpoint":
            print(f"checkpoint: {payload['path']}")

    result = train(config, on_event=show)
    summary = ", ".join(f"{k} {v:.4g}" for k, v in result.val.items())
    print(f"train: {config.variant} for {result.steps} steps -> {result.final_path}")
    if summary:
        print(f"validation: {summary}")
    return 0
