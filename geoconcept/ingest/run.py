"""Run ingest: stage, plan, lock, build shards in a worker pool, summarise.

The unit of work is one shard; a partition (the unit of resuming and of Dagster) is a run of
consecutive shards, locked with flock while it is being built so that the same partition cannot
be built twice at once, while different partitions of a source can run in different processes.
This process computes each shard's input fingerprint (cheap: no image is read) to decide whether
it is done; the shards to build go to the pool with their fingerprint, which their manifest records.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import multiprocessing
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

from geoconcept.errors import ConfigError, GeoconceptError
from geoconcept.ingest import build, fingerprint, locks, plan, reasons, shards, sources, staging
from geoconcept.ingest.build import ShardJob, ShardStats
from geoconcept.ingest.config import IngestConfig
from geoconcept.ingest.staging import StagedSource
from geoconcept.ingest.summary import IngestSummary, write_summary
from geoconcept.layout import DataRoot, shard_name

Redo = Literal["missing", "failed", "all"]
REDO_CHOICES: tuple[str, ...] = ("missing", "failed", "all")
# progress(done, total), in shards; called once with done=0 before any work.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class PartitionStats:
    """The shards of one partition and what they hold."""

    key: str
    index: int
    shards: tuple[ShardStats, ...]
    # Shards beyond the input's last row that this call removed (the input table shrank).
    removed_shards: tuple[str, ...] = ()

    @property
    def counts(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for stats in self.shards:
            for status, n in stats.counts.items():
                total[status] = total.get(status, 0) + n
        return dict(sorted(total.items()))

    @property
    def records(self) -> int:
        return sum(s.records for s in self.shards)

    @property
    def ok(self) -> int:
        return sum(s.ok for s in self.shards)

    @property
    def built(self) -> int:
        """Shards built by this run (the others were already done)."""
        return sum(s.built for s in self.shards)


@dataclass(frozen=True)
class IngestResult:
    staged: StagedSource
    partitions: tuple[PartitionStats, ...]
    summary: IngestSummary
    # Shards beyond the input's last row that this run removed (the input table shrank).
    removed_shards: tuple[str, ...] = ()


class _InlineExecutor(cf.Executor):
    """Runs each job when it is submitted, in this process (workers=1): same scheduling, no pool."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        future: cf.Future[Any] = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:
            future.set_exception(exc)
        return future


def _exit_with_parent(alive: Connection) -> None:
    """Pool worker initializer: exit as soon as the parent process is gone.

    If a run is killed, its workers would otherwise wait forever on their job queue (each holds
    a copy of the queue's write end, and keeps the forkserver alive). `alive` is the read end of
    a pipe whose write end only the parent holds: reading it returns EOF when the parent dies.
    """

    def watch() -> None:
        with contextlib.suppress(EOFError):
            alive.recv()  # nothing is ever sent
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class _WorkerPool(cf.ProcessPoolExecutor):
    """Worker processes that exit with this one (see `_exit_with_parent`).

    forkserver: workers start from a clean single-threaded server (fork after DuckDB or pyarrow
    started threads is unsafe) that imported the shard builder once, instead of each worker
    paying for its imports (pyarrow, Pillow, simplejpeg) the way spawn would. Jobs are picklable
    as spawn requires.
    """

    def __init__(self, workers: int) -> None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([build.__name__])
        self._alive_reader, self._alive_writer = context.Pipe(duplex=False)
        super().__init__(
            max_workers=workers, mp_context=context, initializer=_exit_with_parent, initargs=(self._alive_reader,)
        )

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        super().shutdown(wait=wait, cancel_futures=cancel_futures)
        self._alive_reader.close()
        self._alive_writer.close()


def _pool(workers: int) -> cf.Executor:
    return _InlineExecutor() if workers == 1 else _WorkerPool(workers)


def _skip(folder: Path, index: int, redo: str, current: str) -> bool:
    """Whether shard `index`, whose inputs have fingerprint `current` now, is left as it is."""
    if redo == "all" or not shards.is_done(folder, index, current):
        return False
    if redo == "failed":
        return not reasons.RETRYABLE & shards.status_counts(shards.manifest_path(folder, index)).keys()
    return True


def _done_stats(folder: Path, index: int) -> ShardStats:
    counts = shards.status_counts(shards.manifest_path(folder, index))
    return ShardStats(shard_name(index), index, sum(counts.values()), dict(sorted(counts.items())), built=False)


def _build_partitions(
    data_root: DataRoot,
    staged: StagedSource,
    spec: sources.ImagesSpec,
    partitions: Sequence[int],
    redo: str,
    progress: Progress | None,
) -> list[PartitionStats]:
    config = staged.config
    folder = data_root.shards(staged.dataset, staged.source)
    shard_lists = {p: list(plan.partition_shards(p, staged.rows, config)) for p in partitions}
    total = sum(len(s) for s in shard_lists.values())
    done = 0
    if progress:
        progress(0, total)
    results: dict[int, dict[int, ShardStats]] = {p: {} for p in partitions}
    held: dict[int, int] = {}  # partition -> lock descriptor
    running: dict[cf.Future[ShardStats], tuple[int, int]] = {}
    workers = min(config.workers, max(total, 1))
    images = sources.open_images(spec, config.max_image_bytes)
    executor = _pool(workers)

    def collect(futures: set[cf.Future[ShardStats]]) -> None:
        nonlocal done
        for future in futures:
            partition, index = running.pop(future)
            try:
                results[partition][index] = future.result()
            except OSError as exc:
                raise GeoconceptError(f"could not build {shard_name(index)} in {folder}: {exc}") from exc
            except BrokenProcessPool as exc:
                raise GeoconceptError(
                    f"a worker process died while building {shard_name(index)} (out of memory?); "
                    "finished shards are kept: run again to resume"
                ) from exc
            done += 1
            if progress:
                progress(done, total)
            if len(results[partition]) == len(shard_lists[partition]):
                locks.release(held.pop(partition))

    try:
        for partition in partitions:
            key = plan.partition_key(staged.source, partition)
            held[partition] = locks.acquire(
                plan.lock_path(data_root, staged.dataset, staged.source, key), wait=False, what=f"partition {key}"
            )
            for index in shard_lists[partition]:
                rows = plan.shard_rows(index, staged.rows, config.samples_per_shard)
                current = fingerprint.shard_fingerprint(build.read_shard_input(staged.path, rows), images, config)
                if _skip(folder, index, redo, current):
                    results[partition][index] = _done_stats(folder, index)
                    done += 1
                    if progress:
                        progress(done, total)
                    continue
                # A shard being rebuilt stops counting as done before its tar is replaced.
                shards.manifest_path(folder, index).unlink(missing_ok=True)
                job = ShardJob(
                    str(data_root.root),
                    staged.dataset,
                    staged.source,
                    str(staged.path),
                    staged.extra_columns,
                    index,
                    rows,
                    spec,
                    config,
                    current,
                )
                running[executor.submit(build.build_shard, job)] = (partition, index)
                while len(running) >= 2 * workers:
                    finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                    collect(finished)
            if partition in held and len(results[partition]) == len(shard_lists[partition]):
                locks.release(held.pop(partition))
        while running:
            finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            collect(finished)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        for fd in held.values():
            locks.release(fd)
    return [
        PartitionStats(plan.partition_key(staged.source, p), p, tuple(results[p][i] for i in sorted(results[p])))
        for p in partitions
    ]


def _remove_shards(data_root: DataRoot, staged: StagedSource, recorded: dict[str, Any], first: int) -> list[int]:
    """Remove the shards numbered `first` and above, manifest before tar (a shard stops counting as
    done before its tar goes). A partition being built elsewhere is waited for: its shards go after."""
    folder = data_root.shards(staged.dataset, staged.source)
    doomed = sorted({i for p in folder.glob("shard-*") if (i := shards.shard_index(p)) is not None and i >= first})
    per_partition = int(recorded.get("shards_per_partition", staged.config.shards_per_partition))
    for partition in sorted({i // per_partition for i in doomed}):
        key = plan.partition_key(staged.source, partition)
        with locks.locked(
            plan.lock_path(data_root, staged.dataset, staged.source, key), wait=True, what=f"partition {key}"
        ):
            for index in (i for i in doomed if i // per_partition == partition):
                shards.manifest_path(folder, index).unlink(missing_ok=True)
                shards.tar_path(folder, index).unlink(missing_ok=True)
    return doomed


def _record_plan(data_root: DataRoot, staged: StagedSource, *, replace: bool) -> tuple[str, ...]:
    """Record the shard plan of a source (see plan.py); return the shards removed.

    A changed input table or image setting is recorded: the shard fingerprints decide what is
    rebuilt, and shards beyond the input's last row are removed. A changed layout is refused, or
    with `replace` every shard cut under the old layout is removed.
    """
    folder = data_root.shards(staged.dataset, staged.source)
    folder.mkdir(parents=True, exist_ok=True)
    wanted = plan.expected_plan(staged.input_sha256, staged.rows, staged.config)
    with locks.locked(
        plan.lock_path(data_root, staged.dataset, staged.source, "plan"), wait=True, what=f"the plan of {folder}"
    ):
        recorded = plan.read_plan(folder) or {}
        relayout = bool(recorded) and bool(plan.layout_changes(recorded, wanted))
        if relayout and not replace:
            raise plan.layout_error(folder, recorded, wanted)
        removed = _remove_shards(data_root, staged, recorded, 0 if relayout else staged.shards)
        plan.write_plan(folder, wanted)
    # After a new layout, the shards below the new count are rebuilt, not gone.
    return tuple(shard_name(i) for i in removed if i >= staged.shards)


def _check_redo(redo: str) -> None:
    if redo not in REDO_CHOICES:
        raise ConfigError(f"redo must be one of {', '.join(REDO_CHOICES)}, got {redo!r}")


def _check_partitions(staged: StagedSource, partitions: Sequence[int]) -> None:
    bad = [p for p in partitions if not 0 <= p < staged.partitions]
    if bad:
        raise ConfigError(
            f"partition(s) {', '.join(map(str, bad))} do not exist: source {staged.source!r} has "
            f"{staged.partitions} partition(s) (0..{staged.partitions - 1})"
        )


def ingest_partition(
    data_root: str | os.PathLike[str],
    dataset: str,
    source: str,
    partition_index: int,
    images: sources.ImagesArg,
    config: IngestConfig | None = None,
    *,
    redo: Redo = "missing",
    progress: Progress | None = None,
) -> PartitionStats:
    """Build the shards of one partition of a staged source (what a Dagster partition runs).

    Done shards (built from the inputs they have now: see `fingerprint`) are skipped
    (redo="missing"), also rebuilt if they hold retryable failures (redo="failed"), or all rebuilt
    (redo="all"). If the input table shrank, the shards beyond its end are removed (listed in
    `removed_shards`). Raises `locks.Busy` if another process is building the same partition, and
    ConfigError if the layout settings changed. Does not rewrite sizes.json / summary.json: call
    write_summary.
    """
    _check_redo(redo)
    root = DataRoot(Path(data_root))
    staged = staging.load_staged(data_root, dataset, source, config or IngestConfig())
    _check_partitions(staged, [partition_index])
    spec = sources.resolve_images(images, data_root, dataset)
    removed = _record_plan(root, staged, replace=False)
    stats = _build_partitions(root, staged, spec, [partition_index], redo, progress)[0]
    return dataclasses.replace(stats, removed_shards=removed)


def _writable(data_root: Path) -> None:
    try:
        data_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GeoconceptError(f"cannot create the output folder {data_root}: {exc.strerror}") from None
    if not os.access(data_root, os.W_OK | os.X_OK):
        raise GeoconceptError(f"the output folder {data_root} is not writable")


def ingest(
    table: str | os.PathLike[str],
    images: sources.ImagesArg,
    data_root: str | os.PathLike[str],
    dataset: str = "sample",
    source: str | None = None,
    config: IngestConfig | None = None,
    *,
    redo: Redo = "missing",
    partitions: Sequence[int] | None = None,
    progress: Progress | None = None,
) -> IngestResult:
    """Stage `table`, build the shards of all (or the given) partitions, rewrite the summary.

    Input problems (missing table or images, missing columns) raise InputError before anything is
    written. Shards whose inputs changed (rows, images, settings) are rebuilt; shards beyond the end
    of a shrunken table are removed (`removed_shards`). A change of samples_per_shard or
    shards_per_partition needs redo="all" with all partitions, which replaces every shard.
    """
    _check_redo(redo)
    config = config or IngestConfig()
    source = source or staging.default_source_name(table)
    staging.check_names(dataset, source)
    staging.check_input_table(table)
    sources.locate_images(images)
    root = DataRoot(Path(data_root))
    _writable(root.root)
    staged = staging.stage_source(table, dataset, source, data_root, config)
    wanted = list(range(staged.partitions)) if partitions is None else sorted(set(partitions))
    _check_partitions(staged, wanted)
    spec = sources.resolve_images(images, data_root, dataset)
    removed = _record_plan(root, staged, replace=redo == "all" and partitions is None)
    stats = _build_partitions(root, staged, spec, wanted, redo, progress)
    return IngestResult(staged, tuple(stats), write_summary(data_root, dataset), removed)
