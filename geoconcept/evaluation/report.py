"""The evaluation report: one Markdown and one HTML file rendered from the same list of blocks.

Blocks are headings, paragraphs, bullet lists, tables (DataFrames) and figures (PNG files in the
report folder, linked by relative path, so the folder can be moved or zipped as a whole). Both
renderers are written here rather than with pandas' `to_markdown` (which needs `tabulate`, not a
dependency of the project) and `to_html` (whose markup differs from the Markdown's): one cell
formatter serves both, so the two files always show the same numbers.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from geoconcept import atomic
from geoconcept.evaluation.explain import Explanation
from geoconcept.evaluation.metrics import (
    SCALE_NAMES,
    THRESHOLDS_KM,
    accuracy_columns,
    format_mean_spread,
    haversine_km,
    summarise_runs,
)

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #ddd; } figcaption { font-size: 0.85em; color: #555; }
code { background: #f4f4f4; padding: 0 3px; }
"""


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame
    caption: str = ""


@dataclass(frozen=True)
class Image:
    path: str  # relative to the report folder
    caption: str


Block = Heading | Paragraph | Bullets | Table | Image


def cell(value: object) -> str:
    """One table cell as text: floats with 3 decimals, NaN/None as "n/a"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _md_cell(value: object) -> str:
    return cell(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    """A DataFrame as a Markdown table (also readable as plain text in a terminal)."""
    lines = ["| " + " | ".join(_md_cell(c) for c in frame.columns) + " |"]
    lines.append("|" + "|".join("---" for _ in frame.columns) + "|")
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def render_markdown(title: str, blocks: Sequence[Block]) -> str:
    out = [f"# {title}", ""]
    for block in blocks:
        if isinstance(block, Heading):
            out += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            out += [block.text, ""]
        elif isinstance(block, Bullets):
            out += [f"- {item}" for item in block.items] + [""]
        elif isinstance(block, Table):
            if block.caption:
                out += [f"*{block.caption}*", ""]
            out += [markdown_table(block.frame), ""]
        else:
            out += [f"![{block.caption}]({block.path})", "", f"*{block.caption}*", ""]
    return "\n".join(out)


def _inline(text: str) -> str:
    """Escape text for HTML, keeping `code` spans (the only inline markup the blocks use)."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_html(title: str, blocks: Sequence[Block]) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{_inline(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            out.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Bullets):
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            frame = block.frame
            caption = f"<caption>{_inline(block.caption)}</caption>" if block.caption else ""
            head = "".join(f"<th>{html.escape(cell(c))}</th>" for c in frame.columns)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(cell(v))}</td>" for v in row) + "</tr>"
                for row in frame.itertuples(index=False)
            )
            out.append(f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        else:
            src = html.escape(block.path, quote=True)
            out.append(
                f'<figure><img src="{src}" alt="{html.escape(block.caption, quote=True)}">'
                f"<figcaption>{_inline(block.caption)}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(
    out_dir: str | os.PathLike[str], title: str, blocks: Sequence[Block], stem: str = "report"
) -> tuple[Path, Path]:
    """Write `<stem>.md` and `<stem>.html` into `out_dir` (atomically); returns both paths."""
    out = Path(out_dir)
    md, page = out / f"{stem}.md", out / f"{stem}.html"
    atomic.write_text(md, render_markdown(title, blocks))
    atomic.write_text(page, render_html(title, blocks))
    return md, page


# the evaluation report ------------------------------------------------------------------------------
def accuracy_findings(per_run: pd.DataFrame, baseline: str = "geoclip") -> list[str]:
    """The comparison of each concept variant with the baseline, in words and numbers.

    A variant "beats" the baseline only if its mean is better on every accuracy threshold and
    on the median and mean error; the text says whether the gaps exceed the seeds' spread
    (the sum of both standard deviations).
    """
    titles = accuracy_columns(THRESHOLDS_KM)
    summary = summarise_runs(per_run, list(titles)).set_index("variant")
    if baseline not in summary.index:
        return [f"No `{baseline}` run: there is no baseline to compare the concept variants with."]
    base = summary.loc[baseline]
    findings = []
    for variant in summary.index.drop(baseline):
        row = summary.loc[variant]
        better, worse, clear = [], [], []
        numbers = []
        spread_known = True
        for key, title in titles.items():
            m, b = row[f"{key}_mean"], base[f"{key}_mean"]
            gain = (m - b) if key.startswith("within_") else (b - m)
            (better if gain > 0 else worse).append(title)
            spread = row[f"{key}_std"] + base[f"{key}_std"]
            spread_known &= not math.isnan(spread)
            if not math.isnan(spread) and abs(m - b) > spread:
                clear.append(title)
            unit = " %" if key.startswith("within_") else " km"
            decimals = 2 if key.startswith("within_") else 0
            numbers.append(
                f"{title}: {format_mean_spread(m, row[f'{key}_std'], decimals)} vs "
                f"{format_mean_spread(b, base[f'{key}_std'], decimals)}{unit}"
            )
        if not worse:
            verdict = f"`{variant}` beats `{baseline}` on every metric"
        elif not better:
            verdict = f"`{variant}` does NOT beat `{baseline}`: it is worse or equal on every metric"
        else:
            verdict = (
                f"`{variant}` does NOT beat `{baseline}` overall: better on {len(better)} metric(s) "
                f"({', '.join(better)}), worse or equal on {len(worse)} ({', '.join(worse)})"
            )
        if clear:
            verdict += f"; the gap exceeds the seeds' spread on {', '.join(clear)}"
        elif spread_known:
            verdict += "; every gap is within the seeds' spread"
        else:
            verdict += "; with a single seed there is no spread to judge the gaps by"
        findings.append(f"{verdict}. ({'; '.join(numbers)})")
    return findings


def _explanation_rows(explained: Sequence[Explanation]) -> pd.DataFrame:
    rows = []
    for e in explained:
        first = e.guesses[0]
        error = haversine_km([[first.lat, first.lon]], [e.true_latlon])[0] if e.true_latlon else float("nan")
        rows.append(
            {
                "image": e.key,
                "truth": f"{e.true_latlon[0]:.2f}, {e.true_latlon[1]:.2f}" if e.true_latlon else "",
                "guess 1": f"{first.lat:.2f}, {first.lon:.2f}",
                "near": first.place.label(),
                "error km": f"{error:,.0f}",
                "top concepts of guess 1": ", ".join(f"{t.concept} {t.contribution:+.3f}" for t in first.concepts),
                "other guesses": "; ".join(f"{g.place.name}, {g.place.country_code}" for g in e.guesses[1:]),
            }
        )
    return pd.DataFrame(rows)


def published_layout(accuracy: pd.DataFrame, published: pd.DataFrame | None = None) -> pd.DataFrame:
    """`accuracy_table`'s rows (then `published_table`'s) in the columns of GeoCLIP's Table 1:
    `Method | Street 1 km | City 25 km | Region 200 km | Country 750 km | Continent 2500 km`."""
    titles = accuracy_columns(THRESHOLDS_KM)
    layout = {titles[key]: f"{SCALE_NAMES[t]} {t:g} km" for key, t in zip(titles, THRESHOLDS_KM, strict=False)}
    frames = [accuracy.rename(columns={"variant": "Method"})]
    if published is not None:
        frames.append(published.rename(columns={"model": "Method"}))
    return pd.concat(frames, ignore_index=True)[["Method", *layout]].rename(columns=layout)


def write_evaluation_report(
    out_dir: str | os.PathLike[str],
    name: str,
    *,
    facts: Sequence[str],
    tables: dict[str, pd.DataFrame],
    figures: dict[str, tuple[str, str]],
    findings: Sequence[str],
    warnings: Sequence[str],
    explained: Sequence[Explanation],
) -> tuple[Path, Path]:
    """Assemble the evaluation's blocks (tables by the names `evaluate` gives them, figures as
    name → (path relative to `out_dir`, caption)) and write `report.md` and `report.html`."""
    blocks: list[Block] = [Bullets(tuple(facts))]
    if warnings:
        blocks += [Heading("Warnings"), Bullets(tuple(warnings))]
    blocks += [
        Heading("Geo-localization accuracy"),
        Table(
            tables["accuracy"], "% of test images within each distance (mean ± std over seeds), median and mean error"
        ),
        Heading("Findings", 3),
        Bullets(tuple(findings)),
        Image(*figures["accuracy_curves"]),
        Table(tables["accuracy_per_run"], "every run"),
        Heading("Published on Im2GPS3k — not comparable to this test set"),
        Paragraph(
            "Reference figures from the literature (Im2GPS3k, ViT-L-14 backbone, trained on 4.7M MP16 images). "
            "They are shown in the same columns for orientation only: a different test set, backbone and training data "
            "(unless this test set is Im2GPS3k with GeoCLIP's backbone and training data)."
        ),
        Table(
            published_layout(tables["accuracy"], tables["published_im2gps3k"]),
            "this evaluation's variants, then the published rows, in the layout of GeoCLIP's Table 1",
        ),
        Heading("Errors on the map"),
        Paragraph(
            "Every prediction is in `predictions.parquet` (GeoParquet, EPSG:4326: truth point geometry, "
            "predicted point, error, top concepts)."
        ),
    ]
    blocks += [Image(*figure) for n, figure in figures.items() if n.startswith("error_map_")]
    blocks.append(Heading("Concept faithfulness"))
    if "faithfulness" in tables:
        blocks += [
            Paragraph(
                "AUROC / average precision of each layer-measured concept's score against its raster label on the "
                "held-out test points (label >= 0.5 = present): image side z_img from the image, location side "
                "z_loc at the true location. Chance: AUROC 0.5, AP = prevalence."
            ),
            Table(tables["faithfulness_summary"], "per variant and side"),
            Table(tables["faithfulness"], "per concept (mean ± std over seeds)"),
        ]
    else:
        blocks.append(Paragraph("Not computed: no concept variant with test labels."))
    if "error_bins" in tables:
        blocks += [
            Heading("Concept activations per error bin", 3),
            Paragraph(
                "Median image-side concept scores of the test images in each error bin (as in arXiv 2509.01910): "
                "the highest and the lowest."
            ),
            Table(tables["error_bins"]),
        ]
    if "concept_map_correlation" in tables:
        blocks += [
            Heading("Concept maps", 3),
            Paragraph(
                "The location side's score on a global grid next to the raster truth at the same cells; "
                "correlation over the cells where the truth is measured."
            ),
            Table(tables["concept_map_correlation"]),
        ]
        blocks += [Image(*figure) for n, figure in figures.items() if n.startswith("concept_map_")]
    if "downstream" in tables:
        blocks += [
            Heading("Downstream geospatial tasks"),
            Paragraph(
                "Linear and MLP probes (scikit-learn; hyper-parameters chosen on a validation split; test "
                "metric shown) on location representations of random land points, independent of the test "
                "images. Accuracy for classes, R² for regression; `chance` = always the most frequent "
                "training class. A task that shares a layer with the concepts `concept+supervised` was "
                "trained on cannot show a fair gain for it."
            ),
            Table(tables["downstream"]),
        ]
    if explained:
        blocks += [Heading("Explanations"), Image(*figures["explanations"])]
        blocks.append(Table(_explanation_rows(explained), f"the same images as text ({explained[0].variant} run)"))
    blocks += [
        Heading("Files"),
        Bullets(
            (
                "`predictions.parquet` — every prediction (GeoParquet)",
                "`metrics.json` — per-run metrics and per-variant mean/std",
                "`tables/*.csv` — the tables above",
                "`figures/*.png` — the figures above",
            )
        ),
    ]
    return write_report(out_dir, f"Evaluation: {name}", blocks)
