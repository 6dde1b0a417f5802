"""The trainer as Dagster Pipes sees it: `python -m pipelines.train_pipes CONFIG [CONFIG ...]`.

Launched by the `checkpoint` asset through `PipesSubprocessClient` (and, unchanged, by a
Kubernetes or Ray Pipes client, or under `torchrun`). Each CONFIG is one training run (one seed),
run in turn in this process so that the interpreter and torch start once. It forwards the
trainer's events to Dagster: log lines to the step log, and each run's final metrics as a custom
message that the asset turns into metadata. Without a Pipes session (run by hand) it is just the
trainer. Only rank 0 of a distributed run talks to Dagster.
"""

import contextlib
import os
import sys

from geoconcept.train.main import main as train_main


def _describe(payload: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in payload.items())


def run(configs: list[str]) -> int:
    if os.environ.get("RANK", "0") != "0" or "DAGSTER_PIPES_CONTEXT" not in os.environ:
        return max(train_main(["--config", config]) for config in configs)

    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:

        def forward(kind: str, payload: dict) -> None:
            if kind == "message":
                pipes.log.info(payload.get("text", ""))
            elif kind == "log":
                pipes.log.info(_describe(payload))
            elif kind == "checkpoint":
                pipes.log.info(f"checkpoint step {payload['step']}: {payload['path']}")
            elif kind == "done":
                pipes.report_custom_message(payload)

        for config in configs:
            pipes.log.info(f"training {config}")
            train_main(["--config", config], on_event=forward)
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python -m pipelines.train_pipes CONFIG [CONFIG ...]")
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(run(sys.argv[1:]))
    sys.exit(130)
