"""Which engine runs the steps, chosen by configuration (GEOCONCEPT_EXECUTOR), never hand-made.

- `multiprocess` (default): one process per step on this machine.
- `in_process`: everything in the calling process (tests, debugging).
- `dask`: steps run on an existing dask.distributed cluster (GEOCONCEPT_DASK_ADDRESS,
  e.g. tcp://127.0.0.1:8786) through dagster-dask.
Kubernetes uses dagster-k8s's `k8s_job_executor` (see README "Scaling to MP16").
"""

from __future__ import annotations

import os

from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor


def executor_from_env() -> ExecutorDefinition:
    kind = os.environ.get("GEOCONCEPT_EXECUTOR", "multiprocess")
    if kind == "in_process":
        return in_process_executor
    if kind == "multiprocess":
        return multiprocess_executor.configured(
            {"max_concurrent": int(os.environ.get("GEOCONCEPT_MAX_CONCURRENT", "2"))}
        )
    if kind == "dask":
        from dagster_dask import dask_executor

        address = os.environ.get("GEOCONCEPT_DASK_ADDRESS", "tcp://127.0.0.1:8786")
        return dask_executor.configured({"cluster": {"existing": {"address": address}}})
    raise ValueError(f"GEOCONCEPT_EXECUTOR={kind!r}: expected multiprocess, in_process or dask")
