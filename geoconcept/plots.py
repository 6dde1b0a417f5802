"""Small matplotlib figures returned as PNG bytes (for reports and Dagster metadata)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot

import matplotlib.pyplot as plt
import pandas as pd


def figure_png(fig: plt.Figure, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def coverage_bar_chart(coverage: pd.DataFrame, top: int = 40) -> bytes | None:
    """Horizontal bars: share of samples where each measured concept is present (label >= 0.5)."""
    if coverage.empty:
        return None
    shown = coverage.sort_values("present", ascending=False).head(top)
    fig, ax = plt.subplots(figsize=(7, 0.22 * len(shown) + 1.0))
    ax.barh(shown["id"][::-1], shown["present"][::-1], color="#3b7dd8")
    ax.set_xlabel("share of samples with the concept present (label >= 0.5)")
    ax.set_xlim(0, max(0.05, float(shown["present"].max()) * 1.1))
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(f"Concept coverage (top {len(shown)} of {len(coverage)})", fontsize=9)
    return figure_png(fig)


def loss_curves(runs: dict[str, list[dict]], key: str = "loss") -> bytes | None:
    """Training loss against step, one line per run (`runs`: label → metrics.jsonl records)."""
    drawn = {label: [r for r in records if r.get("kind") == "train" and key in r] for label, records in runs.items()}
    drawn = {label: records for label, records in drawn.items() if records}
    if not drawn:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    for label, records in drawn.items():
        ax.plot([r["step"] for r in records], [r[key] for r in records], label=label, linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return figure_png(fig)
