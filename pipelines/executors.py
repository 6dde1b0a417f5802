"""Which engine runs the steps, chosen per deployment (GEOCONCEPT_EXECUTOR), never hand-made.

- `local` (default; `multiprocess` is the same): Dagster's own default executor — one process per
  step unless a run's config says `execution: {config: {in_process: {}}}` (pipelines.stages does, on
  a laptop); `max_concurrent` is run config too (`execution.config.multiprocess.max_concurrent`).
- `in_process`: everything in the calling process, for every run (tests, debugging).
- `dask`: steps run on an existing dask.distributed cluster (GEOCONCEPT_DASK_ADDRESS,
  e.g. tcp://127.0.0.1:8786), each step a dask task that runs dagster-dask's worker function.
- `k8s`: each step is a Kubernetes Job (dagster-k8s's `k8s_job_executor`, the optional extra
  `geoconcept[k8s]`), configured per run under `execution.config` (deploy/k8s/run_config.yaml).

The executor is part of each job's definition (its snapshot), so the choice is read once, when the
code location loads, from a variable a deployment sets for all its processes (code server, daemon,
run workers): every process sees the same jobs. What varies from run to run (in process or not, how
many processes) is run config, which a re-execution from the UI reuses.

Why not dagster-dask's own `dask_executor` (0.29.27, with distributed 2026.8):
- it names each dask task `<job>.<step>`, and dask treats equal keys as the same task, so two
  runs of one job at once (a backfill of chunks) share tasks: the second run is marked successful
  without its steps ever running (dagster-io/dagster#21418);
- it passes the DagsterRun as a task argument, which dask walks like a tuple; the run of a
  partition holds a partitions subset that refuses iteration, so such runs fail at submission
  ("Iteration is not allowed on `@record` KeyRangesPartitionsSubset").
`DaskClusterExecutor` keys tasks by run and binds the Dagster arguments where dask does not look.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from dagster import (
    DagsterEvent,
    DagsterInvariantViolationError,
    Executor,
    ExecutorDefinition,
    Field,
    StringSource,
    executor,
    in_process_executor,
    multi_or_in_process_executor,
    multiple_process_executor_requirements,
)
from dagster._core.errors import raise_execution_interrupts
from dagster._core.execution.retries import RetryMode
from dagster._utils import iterate_with_context

if TYPE_CHECKING:
    from dagster._core.execution.context.system import PlanOrchestrationContext
    from dagster._core.execution.plan.plan import ExecutionPlan


def executor_from_env() -> ExecutorDefinition:
    kind = os.environ.get("GEOCONCEPT_EXECUTOR", "local")
    if kind == "in_process":
        return in_process_executor
    if kind in ("local", "multiprocess"):
        return multi_or_in_process_executor
    if kind == "dask":
        address = os.environ.get("GEOCONCEPT_DASK_ADDRESS", "tcp://127.0.0.1:8786")
        return dask_cluster_executor.configured({"address": address})
    if kind == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError as exc:
            raise ImportError("GEOCONCEPT_EXECUTOR=k8s needs dagster-k8s: install the extra geoconcept[k8s]") from exc
        return k8s_job_executor
    raise ValueError(f"GEOCONCEPT_EXECUTOR={kind!r}: expected local, multiprocess, in_process, dask or k8s")


class DaskClusterExecutor(Executor):
    """Each step is one task on the cluster at `address`, submitted after the steps it depends on."""

    def __init__(self, address: str) -> None:
        self.address = address

    @property
    def retries(self) -> RetryMode:
        return RetryMode.DISABLED

    def execute(self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan) -> Iterator[DagsterEvent]:
        # dask is imported here: only runs on a cluster pay for it.
        from dagster_dask.executor import get_dask_resource_requirements, query_on_dask_worker
        from distributed import Client, as_completed

        if not plan_context.instance.is_persistent:
            raise DagsterInvariantViolationError(
                "the dask executor needs a persistent Dagster instance that every worker can reach: set DAGSTER_HOME"
            )
        run = plan_context.dagster_run
        futures = {}
        with Client(self.address) as client:
            for level in execution_plan.get_steps_to_execute_by_level():
                for step in level:
                    task = functools.partial(
                        query_on_dask_worker,
                        recon_job=plan_context.reconstructable_job,
                        dagster_run=run,
                        run_config=plan_context.run_config,
                        step_keys=[step.key],
                        instance_ref=plan_context.instance.get_ref(),
                        known_state=execution_plan.known_state,
                    )
                    # The upstream futures are the task's only argument dask sees: it runs the step after them.
                    upstream = [futures[key] for step_input in step.step_inputs for key in step_input.dependency_keys]
                    futures[step.key] = client.submit(
                        task,
                        upstream,
                        key=f"{run.job_name}.{run.run_id}.{step.key}",
                        resources=get_dask_resource_requirements(step.tags),
                    )
            finished = as_completed(list(futures.values()), with_results=True)
            # Let a run termination interrupt the wait (Dagster defers interrupts during execution).
            for _, events in iterate_with_context(raise_execution_interrupts, finished):
                yield from events


@executor(
    name="dask",
    requirements=multiple_process_executor_requirements(),
    config_schema={"address": Field(StringSource, description="The dask scheduler, e.g. tcp://10.0.0.5:8786.")},
)
def dask_cluster_executor(init_context) -> DaskClusterExecutor:
    """Steps as tasks on an existing dask.distributed cluster (see the module docstring)."""
    return DaskClusterExecutor(init_context.executor_config["address"])
