"""What every benchmark returns, and how `make bench` prints and records it.

A benchmark module `benchmarks/bench_<topic>.py` defines `run(quick: bool) -> list[Result]`.
Each Result compares our figure with a fair, straightforward baseline measured in the same run.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from geoconcept import atomic


@dataclass
class Result:
    benchmark: str  # e.g. "ingest: 2,000 sample images, 2 workers"
    unit: str  # e.g. "images/s" (higher is better)
    ours: float
    baseline: float
    baseline_name: str  # what the baseline is, e.g. "plain PIL loop"
    goal: float | None = None  # minimum ratio ours/baseline the issue asks for
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline if self.baseline else float("inf")

    @property
    def meets_goal(self) -> bool | None:
        return None if self.goal is None else self.ratio >= self.goal


def best_rate(fn: Callable[[], int], repeats: int = 3) -> float:
    """Items per second of the fastest of `repeats` calls; `fn` returns the item count."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        n = fn()
        elapsed = time.perf_counter() - start
        best = max(best, n / elapsed)
    return best


def memory_result(
    benchmark: str, ours_mb: float, baseline_mb: float, baseline_name: str, goal_mb: float, note: str
) -> Result:
    """A peak-memory row. Memory is lower-is-better while the table's ratio (ours/baseline) is
    higher-is-better: both sides are given as 1/GB, so the ratio is the memory saved and the goal is
    the ratio at which ours is exactly `goal_mb`."""
    return Result(
        benchmark=benchmark,
        unit="1/GB",
        ours=1024 / ours_mb,
        baseline=1024 / baseline_mb,
        baseline_name=baseline_name,
        goal=baseline_mb / goal_mb,
        note=note,
    )


def format_table(results: list[Result]) -> str:
    header = ("benchmark", "ours", "baseline", "ratio", "goal", "")
    rows = [header]
    for r in results:
        status = "" if r.meets_goal is None else ("ok" if r.meets_goal else "BELOW GOAL")
        rows.append(
            (
                r.benchmark,
                f"{r.ours:,.1f} {r.unit}",
                f"{r.baseline:,.1f} ({r.baseline_name})",
                f"{r.ratio:.2f}x",
                "" if r.goal is None else f">= {r.goal:g}x",
                status,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_results(results: list[Result], path: Path) -> None:
    atomic.write_json(
        path,
        {
            "machine": {"python": platform.python_version(), "processor": platform.machine()},
            "results": [asdict(r) | {"ratio": r.ratio, "meets_goal": r.meets_goal} for r in results],
        },
    )
