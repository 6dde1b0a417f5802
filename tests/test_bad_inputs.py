"""Bad inputs to every CLI command: exit 2, one line on stderr naming the problem, no traceback,
nothing written under a final name (issue 13).

Each command has a table (`TABLES`) of cases: an argument template, what the error line must
name, and the output that must not exist afterwards. Templates are filled from `inputs` (good
files built once per module: a run folder, its gallery, features, points, an ingest table and its
shards) and from `write_bad_files` (a fresh set in the test's own folder: missing, empty, a
directory, random bytes, truncated files, a decompression bomb, NaN/±inf/out-of-range/1e308
coordinates, YAML with unknown keys, wrong types or python tags). The CLI runs in-process
(`geoconcept.cli.main`); a few cases at the end run the real process, to show that no traceback
reaches a terminal. Ingest's bad RECORDS are quarantined with exit 0 (its documented behaviour).
"""

from __future__ import annotations

import os
import shlex
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from _eval_inputs import coords, save_checkpoint
from _model_inputs import jpeg, write_dataset
from conftest import REPO
from hostile_corpus import simple_dataset, snapshot

from geoconcept import gallery
from geoconcept.cli import main
from geoconcept.ingest import ingest as run_ingest
from geoconcept.ingest.reasons import STATUSES
from geoconcept.model.checkpoint import load_model

DEMO_BACKBONE = {"model": "ViT-S-32-alt", "pretrained": "", "seed": "0"}  # random init, 256-d features
LONG_ID = "x" * 100_000


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width×height pixels and holds none: enough for Image.open to see its size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("good")
    run = root / "run"
    save_checkpoint(run / "final.safetensors", "concept", seed=0, feature_dim=256, backbone_spec=DEMO_BACKBONE)
    gallery.build_gallery(coords(60), load_model(run / "final.safetensors"), root / "gallery", use_gpu=False)
    # a checkpoint that fits write_dataset's 16-d features, so that evaluate gets past its input checks
    save_checkpoint(root / "run16" / "final.safetensors", "concept", seed=0)
    gallery.build_gallery(coords(60), load_model(root / "run16"), root / "gallery16", use_gpu=False)
    (root / "image.jpg").write_bytes(jpeg(0))
    (root / "points.csv").write_text("id,LAT,LON\na,10,20\nb,-33.9,151.2\n")
    (root / "coords.csv").write_text("lat,lon\n" + "".join(f"{i - 30},{5 * i - 150}\n" for i in range(60)))
    (root / "no_run").mkdir()
    data = write_dataset(root / "train_inputs", n=48)
    ingest = simple_dataset(root / "ingest", 3)
    run_ingest(ingest.csv, ingest.images, root / "data")
    return {
        "run": run,
        "checkpoint": run / "final.safetensors",
        "gallery": root / "gallery",
        "run16": root / "run16",
        "gallery16": root / "gallery16",
        "image": root / "image.jpg",
        "points": root / "points.csv",
        "coords": root / "coords.csv",
        "no_run": root / "no_run",
        "features": data["features"],
        "split": data["split"],
        "table": ingest.csv,
        "images": ingest.images,
        "data": root / "data",
        "shards": next((root / "data").rglob("*.tar")).parent,
    }


def write_bad_files(tmp: Path, good: dict[str, Path]) -> dict[str, Path]:
    rng = np.random.default_rng(13)
    files = {
        "empty": b"",
        "random": rng.bytes(2048),
        "file": b"a file, not a folder\n",
        "text_jpg": b"not an image\n",
        "truncated_png": png_header(64, 64)[:30],
        "bomb_png": png_header(20_000, 20_000),  # 400 M pixels in 57 bytes
        "truncated_checkpoint": good["checkpoint"].read_bytes()[:200],
        "python_tag": f"!!python/object/apply:os.system ['touch {tmp}/pwned']\n".encode(),
        "not_yaml": b"key: [unclosed\n",
        # point tables
        "no_lat": b"id,LON\na,1\n",
        "lat_nan": b"id,LAT,LON\na,nan,1\n",
        "lat_inf": b"id,LAT,LON\na,inf,1\n",
        "lon_minus_inf": b"id,LAT,LON\na,1,-inf\n",
        "lat_91": b"id,LAT,LON\na,91,1\n",
        "lat_1e308": b"id,LAT,LON\na,1e308,1\n",
        "lat_text": "id,LAT,LON\nä,nörd,1\n".encode(),
        # concept banks and layers configs
        "bank_unknown_key": b"concepts:\n  - {id: a, prompts: [x], colour: red}\n",
        "bank_wrong_type": b"concepts: 5\n",
        "layers_unknown_key": b"layers:\n  - {name: dem, path: dem.tif, kind: raster, bogus: 1}\n",
        "layers_wrong_type": b"layers: {name: 3}\n",
        # training configs
        "train_unknown_key": b"lrate: 0.1\n",
        "train_wrong_type": b"steps: many\n",
        "train_zero_batch": b"batch_size: 0\n",
        "train_negative_steps": b"steps: -5\n",
        "train_nan_lr": b"lr: .nan\n",
        "train_inf_lr": b"lr: .inf\n",
        "train_huge_lr": b"lr: 1e308\n",
        # evaluation configs
        "eval_unknown_key": b"runs: [{checkpoint: a, gallery: b}]\nfeatures: f\nout: o\ncolour: red\n",
        "eval_wrong_type": b"runs: [{checkpoint: a, gallery: b}]\nfeatures: f\nout: o\nexplain_images: many\n",
        "eval_no_runs": b"runs: []\nfeatures: f\nout: o\n",
        "eval_refine_1": b"runs: [{checkpoint: a, gallery: b}]\nfeatures: f\nout: o\nrefine_k: 1\n",
        "eval_points_3": b"runs: [{checkpoint: a, gallery: b}]\nfeatures: f\nout: o\ndownstream: {points: 3}\n",
        "eval_map_width_nan": b"runs: [{checkpoint: a, gallery: b}]\nfeatures: f\nout: o\nmap_width: .nan\n",
        "eval_negative_explain": b"runs: [{checkpoint: a, gallery: b}]\nfeatures: f\nout: o\nexplain_images: -1\n",
    }
    paths = {}
    for name, data in files.items():
        paths[name] = tmp / name.replace("_png", ".png").replace("_jpg", ".jpg")
        paths[name].write_bytes(data)
    paths["folder"] = tmp / "folder"
    paths["folder"].mkdir()
    paths["missing"] = tmp / "missing"
    manifest = tmp / "root" / "shards" / "sample" / "train" / "shard-000000.parquet"
    manifest.parent.mkdir(parents=True)
    manifest.write_bytes(files["random"])
    return paths


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]  # templates: {name} is a path from `inputs` or the bad files, {tmp} the test's folder
    names: str  # the error line must contain this (template too)
    output: str = ""  # a final output path (template) that must not exist afterwards


def case(line: str, names: str, output: str = "") -> Case:
    return Case(tuple(shlex.split(line)), names, output)


def check_refused(capsys, inputs: dict[str, Path], tmp: Path, bad_case: Case) -> None:
    fill = {k: str(v) for k, v in (inputs | write_bad_files(tmp, inputs)).items()} | {"tmp": str(tmp)}
    argv = [part.format(**fill) for part in bad_case.argv]
    before = snapshot(tmp)
    code = main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (argv, out, err)
    assert len(lines) == 1, err
    assert lines[0].startswith(f"geoconcept {argv[0]}")
    assert bad_case.names.format(**fill) in lines[0]
    assert "Traceback" not in out + err
    if bad_case.output:
        assert not Path(bad_case.output.format(**fill)).exists()
    assert snapshot(tmp) == before  # no partial output, nothing created (no `pwned` either)


ARGPARSE = {  # the parser's own errors, for any command
    "no-command": case("label", "the following arguments are required"),
    "unknown-option": case("layers --colour red", "unrecognized arguments: --colour"),
    "int-not-a-number": case("layers --width wide", "--width"),
    "int-1e308": case("label --points {points} --out {tmp}/o.parquet --chunk-rows 1e308", "--chunk-rows"),
    "int-nan": case("predict {image} --checkpoint {run} --top-k nan", "--top-k"),
    "choice": case("gallery --checkpoint {run} --out {tmp}/g --gpu maybe", "--gpu"),
}


SAMPLE = {
    "negative-train": case("sample --out {tmp}/s --n-train -1", "--n-train", "{tmp}/s"),
    "nothing-to-render": case("sample --out {tmp}/s --n-train 0 --n-test 0", "--n-train", "{tmp}/s"),
    "zero-image-size": case("sample --out {tmp}/s --image-size 0", "--image-size", "{tmp}/s"),
    "huge-image-size": case("sample --out {tmp}/s --image-size 100000", "--image-size", "{tmp}/s"),
    "out-is-a-file": case("sample --out {file} --n-train 1 --n-test 0", "{file}"),
    "out-under-a-file": case("sample --out {file}/s --n-train 1 --n-test 0", "{file}"),
}


_INGEST = "ingest --csv {table} --images {images} --out {tmp}/out --no-progress"
INGEST = {
    "table-missing": case("ingest --csv {missing} --images {images} --out {tmp}/out", "{missing}"),
    "table-is-a-folder": case("ingest --csv {folder} --images {images} --out {tmp}/out", "{folder}"),
    "table-empty": case("ingest --csv {empty} --images {images} --out {tmp}/out", "{empty}"),
    "table-random-bytes": case("ingest --csv {random} --images {images} --out {tmp}/out", "{random}"),
    "table-wrong-columns": case("ingest --csv {no_lat} --images {images} --out {tmp}/out", "IMG_ID"),
    "images-missing": case("ingest --csv {table} --images {missing} --out {tmp}/out", "{missing}"),
    "images-not-a-tar": case("ingest --csv {table} --images {random} --out {tmp}/out", "{random}"),
    "out-is-a-file": case("ingest --csv {table} --images {images} --out {file}", "{file}"),
    "zero-samples-per-shard": case(_INGEST + " --samples-per-shard 0", "samples_per_shard"),
    "negative-shards-per-partition": case(_INGEST + " --shards-per-partition -1", "shards_per_partition"),
    "zero-image-size": case(_INGEST + " --image-size 0", "image_size"),
    "jpeg-quality-0": case(_INGEST + " --jpeg-quality 0", "jpeg_quality"),
    "jpeg-quality-96": case(_INGEST + " --jpeg-quality 96", "jpeg_quality"),
    "zero-max-pixels": case(_INGEST + " --max-pixels 0", "max_pixels"),
    "zero-workers": case(_INGEST + " --workers 0", "workers"),
}


def test_ingest_quarantines_bad_records_and_exits_zero(tmp_path, capsys):
    """Bad RECORDS are not bad arguments: the run completes and the manifest says why each was left out."""
    data = simple_dataset(tmp_path / "in", 6)
    ids = [r.img_id for r in data.records]
    rows = [
        (ids[0], "nan", "1"),
        (ids[1], "inf", "1"),
        (ids[2], "1", "-inf"),
        (ids[3], "91", "1"),
        (ids[4], "1e308", "1"),
        ("ümlaut/€.jpg", "1", "1"),
        (LONG_ID, "1", "1"),
        (ids[5], "1", "1"),
    ]
    table = tmp_path / "train.csv"
    table.write_text("IMG_ID,LAT,LON\n" + "".join(f"{i},{lat},{lon}\n" for i, lat, lon in rows), encoding="utf-8")
    code = main(["ingest", "--csv", str(table), "--images", str(data.images), "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in out + err
    counts = {w[0]: int(w[1]) for line in out.splitlines() if len(w := line.split()) == 2 and w[0] in STATUSES}
    assert counts.pop("ok") == 1 and counts.pop("bad_gps") == 5, out
    assert sum(counts.values()) == 2, out  # the unicode and the 100K-character IDs name no image


LABEL = {
    "points-missing": case("label --points {missing} --out {tmp}/o.parquet", "{missing}", "{tmp}/o.parquet"),
    "points-is-a-folder": case("label --points {folder} --out {tmp}/o.parquet", "is a directory", "{tmp}/o.parquet"),
    "points-empty": case("label --points {empty} --out {tmp}/o.parquet", "{empty}", "{tmp}/o.parquet"),
    "points-random-bytes": case("label --points {random} --out {tmp}/o.parquet", "{random}", "{tmp}/o.parquet"),
    "no-lat-column": case("label --points {no_lat} --out {tmp}/o.parquet", "LAT", "{tmp}/o.parquet"),
    "lat-nan": case("label --points {lat_nan} --out {tmp}/o.parquet", "invalid coordinates", "{tmp}/o.parquet"),
    "lat-inf": case("label --points {lat_inf} --out {tmp}/o.parquet", "invalid coordinates", "{tmp}/o.parquet"),
    "lon-minus-inf": case("label --points {lon_minus_inf} --out {tmp}/o.parquet", "line(s) 2", "{tmp}/o.parquet"),
    "lat-91": case("label --points {lat_91} --out {tmp}/o.parquet", "invalid coordinates", "{tmp}/o.parquet"),
    "lat-1e308": case("label --points {lat_1e308} --out {tmp}/o.parquet", "invalid coordinates", "{tmp}/o.parquet"),
    "lat-unicode-text": case("label --points {lat_text} --out {tmp}/o.parquet", "invalid coordinates"),
    "out-is-a-folder": case("label --points {points} --out {folder}", "{folder}"),
    "out-under-a-file": case("label --points {points} --out {file}/o.parquet", "{file}"),
    "zero-chunk-rows": case("label --points {points} --out {tmp}/o.parquet --chunk-rows 0", "--chunk-rows"),
    "negative-chunk-rows": case("label --points {points} --out {tmp}/o.parquet --chunk-rows -3", "--chunk-rows"),
    "bank-missing": case("label --points {points} --out {tmp}/o.parquet --bank {missing}", "{missing}"),
    "bank-is-a-folder": case("label --points {points} --out {tmp}/o.parquet --bank {folder}", "is a directory"),
    "bank-python-tag": case("label --points {points} --out {tmp}/o.parquet --bank {python_tag}", "{python_tag}"),
    "bank-unknown-key": case("label --points {points} --out {tmp}/o.parquet --bank {bank_unknown_key}", "colour"),
    "layers-random": case("label --points {points} --out {tmp}/o.parquet --layers {random}", "{random}"),
}


CONCEPTS = {
    "no-action": case("concepts", "ACTION"),
    "bank-missing": case("concepts list --bank {missing}", "{missing}"),
    "bank-is-a-folder": case("concepts list --bank {folder}", "is a directory"),
    "bank-empty": case("concepts list --bank {empty}", "{empty}"),
    "bank-random-bytes": case("concepts list --bank {random}", "{random}"),
    "bank-not-yaml": case("concepts list --bank {not_yaml}", "{not_yaml}"),
    "bank-python-tag": case("concepts list --bank {python_tag}", "{python_tag}"),
    "bank-unknown-key": case("concepts list --bank {bank_unknown_key}", "colour"),
    "bank-wrong-type": case("concepts list --bank {bank_wrong_type}", "{bank_wrong_type}"),
    "layers-python-tag": case("concepts list --layers {python_tag}", "{python_tag}"),
    "embed-out-is-a-folder": case("concepts embed --out {folder}", "{folder}"),
    "embed-out-under-a-file": case("concepts embed --out {file}/e.safetensors", "{file}"),
}


LAYERS = {
    "maps-is-a-file": case("layers --maps {file} --no-progress", "{file}"),
    "maps-under-a-file": case("layers --maps {file}/maps --no-progress", "{file}"),
    "zero-width": case("layers --width 0", "--width"),
    "negative-width": case("layers --width -1440", "--width"),
    "config-missing": case("layers --layers {missing}", "{missing}"),
    "config-is-a-folder": case("layers --layers {folder}", "is a directory"),
    "config-random-bytes": case("layers --layers {random}", "{random}"),
    "config-python-tag": case("layers --layers {python_tag}", "{python_tag}"),
    "config-unknown-key": case("layers --layers {layers_unknown_key}", "bogus"),
    "config-wrong-type": case("layers --layers {layers_wrong_type}", "{layers_wrong_type}"),
}


FEATURES = {
    "no-shards": case("features --data-root {tmp}/nothing --source train --no-progress", "no finished shards"),
    "data-root-is-a-file": case("features --data-root {file} --source train --no-progress", "{file}"),
    "zero-batch-size": case("features --data-root {tmp}/nothing --source train --batch-size 0", "--batch-size"),
    "pretrained-not-a-checkpoint": case(
        "features --data-root {data} --source train --pretrained {random} --no-progress", "{random}", "{data}/features"
    ),
    "manifest-random-bytes": case(
        "features --data-root {tmp}/root --source train --no-progress", "shard-000000.parquet", "{tmp}/root/features"
    ),
    "no-such-shard": case(
        "features --data-root {tmp} --source train --shard shard-000009 --no-progress", "shard-000009"
    ),
}


_TRAIN = "train --set features={features} --set split={split} --set output={tmp}/run --set variant=geoclip"
TRAIN = {
    "config-missing": case("train --config {missing}", "{missing}", "{tmp}/run"),
    "config-is-a-folder": case("train --config {folder}", "is a directory", "{tmp}/run"),
    "config-random-bytes": case("train --config {random}", "{random}", "{tmp}/run"),
    "config-python-tag": case("train --config {python_tag}", "{python_tag}", "{tmp}/run"),
    "unknown-key": case(_TRAIN + " --config {train_unknown_key}", "lrate", "{tmp}/run"),
    "wrong-type": case(_TRAIN + " --config {train_wrong_type}", "steps", "{tmp}/run"),
    "zero-batch-size": case(_TRAIN + " --config {train_zero_batch}", "batch_size", "{tmp}/run"),
    "negative-steps": case(_TRAIN + " --config {train_negative_steps}", "steps", "{tmp}/run"),
    "nan-lr": case(_TRAIN + " --config {train_nan_lr}", "lr", "{tmp}/run"),
    "inf-lr": case(_TRAIN + " --config {train_inf_lr}", "lr", "{tmp}/run"),
    "set-without-value": case(_TRAIN + " --set steps", "--set", "{tmp}/run"),
    "features-missing": case(_TRAIN + " --set features={missing}", "{missing}", "{tmp}/run"),
    "split-random-bytes": case(_TRAIN + " --set split={random}", "{random}", "{tmp}/run"),
    "output-is-a-file": case(_TRAIN + " --set output={file}", "{file}"),
    "output-under-a-file": case(_TRAIN + " --set output={file}/run", "{file}"),
}


_GALLERY = "gallery --checkpoint {run} --out {tmp}/g"
GALLERY = {
    "kmeans-0": case(_GALLERY + " --from-features {features} --kmeans 0", "--kmeans", "{tmp}/g"),
    "kmeans-negative": case(_GALLERY + " --from-features {features} --kmeans -4", "--kmeans", "{tmp}/g"),
    "sample-0": case(_GALLERY + " --from-features {features} --sample 0", "--sample", "{tmp}/g"),
    "kmeans-without-features": case(_GALLERY + " --kmeans 5", "--from-features", "{tmp}/g"),
    "checkpoint-missing": case("gallery --checkpoint {missing} --out {tmp}/g", "{missing}", "{tmp}/g"),
    "checkpoint-folder-without-model": case(
        "gallery --checkpoint {no_run} --out {tmp}/g", "final.safetensors", "{tmp}/g"
    ),
    "checkpoint-random-bytes": case("gallery --checkpoint {random} --out {tmp}/g", "{random}", "{tmp}/g"),
    "checkpoint-truncated": case(
        "gallery --checkpoint {truncated_checkpoint} --out {tmp}/g", "{truncated_checkpoint}", "{tmp}/g"
    ),
    "coords-missing": case(_GALLERY + " --coords {missing}", "{missing}", "{tmp}/g"),
    "coords-wrong-columns": case(_GALLERY + " --coords {no_lat}", "{no_lat}", "{tmp}/g"),
    "coords-nan": case(_GALLERY + " --coords {lat_nan}", "{lat_nan}", "{tmp}/g"),
    "coords-1e308": case(_GALLERY + " --coords {lat_1e308}", "{lat_1e308}", "{tmp}/g"),
    "coords-random-bytes": case(_GALLERY + " --coords {random}", "{random}", "{tmp}/g"),
    "features-empty-folder": case(_GALLERY + " --from-features {folder}", "{folder}", "{tmp}/g"),
    "out-is-a-file": case("gallery --checkpoint {run} --out {file} --coords {coords}", "{file}"),
}


def test_gallery_takes_a_run_folder_like_predict_and_evaluate(capsys, inputs, tmp_path):
    out = tmp_path / "g"
    assert (
        main(["gallery", "--checkpoint", str(inputs["run"]), "--out", str(out), "--coords", str(inputs["coords"])]) == 0
    )
    assert "gallery: 60 locations" in capsys.readouterr().out


_PREDICT = "predict {image} --checkpoint {run} --gallery {gallery}"
PREDICT = {
    "image-missing": case("predict {missing} --checkpoint {run}", "{missing}"),
    "image-is-a-folder": case("predict {folder} --checkpoint {run}", "is a directory"),
    "image-empty": case("predict {empty} --checkpoint {run}", "{empty}"),
    "image-random-bytes": case("predict {random} --checkpoint {run}", "{random}"),
    "image-text": case("predict {text_jpg} --checkpoint {run}", "{text_jpg}"),
    "image-truncated": case("predict {truncated_png} --checkpoint {run}", "{truncated_png}"),
    "image-decompression-bomb": case("predict {bomb_png} --checkpoint {run}", "{bomb_png}"),
    "zero-top-k": case(_PREDICT + " --top-k 0", "--top-k"),
    "negative-concepts": case(_PREDICT + " --concepts -1", "--concepts"),
    "top-k-beyond-gallery": case(_PREDICT + " --top-k 1000", "--top-k"),
    "checkpoint-missing": case("predict {image} --checkpoint {missing}", "{missing}"),
    "checkpoint-folder-without-model": case("predict {image} --checkpoint {no_run}", "final.safetensors"),
    "checkpoint-random-bytes": case("predict {image} --checkpoint {random}", "{random}"),
    "gallery-missing": case("predict {image} --checkpoint {run} --gallery {missing}", "{missing}"),
    "gallery-is-a-file": case("predict {image} --checkpoint {run} --gallery {file}", "{file}"),
    # batch prediction (--out): the arguments are checked before the backbone is built
    "table-without-out": case("predict {table} --checkpoint {run}", "--out"),
    "batch-flag-without-out": case(_PREDICT + " --batch-size 4", "--out"),
    "out-is-a-folder": case(_PREDICT + " --out {folder}", "{folder}"),
    "out-under-a-file": case(_PREDICT + " --out {file}/p.parquet", "{file}", "{file}/p.parquet"),
    "json-with-out": case(_PREDICT + " --json --out {tmp}/p.parquet", "--json", "{tmp}/p.parquet"),
    "zero-batch-size": case(_PREDICT + " --out {tmp}/p.parquet --batch-size 0", "--batch-size", "{tmp}/p.parquet"),
    "negative-workers": case(_PREDICT + " --out {tmp}/p.parquet --workers -1", "--workers", "{tmp}/p.parquet"),
    "batch-input-missing": case(
        "predict {missing} --checkpoint {run} --out {tmp}/p.parquet", "{missing}", "{tmp}/p.parquet"
    ),
    "batch-empty-folder": case("predict {folder} --checkpoint {run} --out {tmp}/p.parquet", "{folder}"),
    "batch-glob-matches-nothing": case("predict '{tmp}/none-*.jpg' --checkpoint {run} --out {tmp}/p.parquet", "none-*"),
    "batch-table-without-img-id": case("predict {points} --checkpoint {run} --out {tmp}/p.parquet", "IMG_ID"),
    "batch-images-without-table": case(_PREDICT + " --out {tmp}/p.parquet --images {images}", "--images"),
    "batch-images-root-missing": case(
        "predict {table} --checkpoint {run} --out {tmp}/p.parquet --images {missing}", "{missing}"
    ),
    "batch-shards-and-files": case("predict {image} {shards} --checkpoint {run} --out {tmp}/p.parquet", "not both"),
    "batch-top-k-beyond-gallery": case(_PREDICT + " --out {tmp}/p.parquet --top-k 1000", "--top-k"),
}


_EVAL = "evaluate --checkpoint {run16} --gallery {gallery16} --features {features} --out {tmp}/report --no-progress"
EVALUATE = {
    "config-missing": case("evaluate --config {missing}", "{missing}"),
    "config-is-a-folder": case("evaluate --config {folder}", "is a directory"),
    "config-empty": case("evaluate --config {empty}", "{empty}"),
    "config-random-bytes": case("evaluate --config {random}", "{random}"),
    "config-python-tag": case("evaluate --config {python_tag}", "{python_tag}"),
    "config-unknown-key": case("evaluate --config {eval_unknown_key}", "colour"),
    "config-wrong-type": case("evaluate --config {eval_wrong_type}", "explain_images"),
    "config-no-runs": case("evaluate --config {eval_no_runs}", "runs"),
    "config-refine-k-1": case("evaluate --config {eval_refine_1}", "refine_k"),
    "config-3-downstream-points": case("evaluate --config {eval_points_3}", "downstream.points"),
    "config-nan-map-width": case("evaluate --config {eval_map_width_nan}", "map_width"),
    "config-negative-explain": case("evaluate --config {eval_negative_explain}", "explain_images"),
    "config-and-flags": case("evaluate --config {eval_no_runs} --out {tmp}/report", "--out"),
    "checkpoint-without-gallery": case("evaluate --checkpoint {run} --features {features} --out {tmp}/r", "--gallery"),
    "refine-k-1": case(_EVAL + " --refine-k 1", "refine_k", "{tmp}/report"),
    "zero-downstream-points": case(_EVAL + " --downstream-points 0", "downstream.points", "{tmp}/report"),
    "checkpoint-folder-without-model": case(
        _EVAL.replace("{run16}", "{no_run}") + " --no-downstream", "final.safetensors", "{tmp}/report"
    ),
    "checkpoint-random-bytes": case(_EVAL.replace("{run16}", "{random}") + " --no-downstream", "{random}"),
    "checkpoint-of-other-features": case(_EVAL.replace("{run16}", "{run}") + " --no-downstream", "test-backbone"),
    "gallery-empty-folder": case(_EVAL.replace("{gallery16}", "{folder}") + " --no-downstream", "{folder}"),
    "split-random-bytes": case(_EVAL + " --split {random} --no-downstream", "{random}", "{tmp}/report"),
    "labels-random-bytes": case(_EVAL + " --labels {random} --no-downstream", "{random}", "{tmp}/report"),
    "shards-random-bytes": case(_EVAL + " --shards {random} --no-downstream", "{random}", "{tmp}/report"),
    "features-missing": case(_EVAL.replace("{features}", "{missing}") + " --no-downstream", "{missing}"),
    "out-is-a-file": case(_EVAL.replace("{tmp}/report", "{file}") + " --no-downstream", "{file}"),
}


_QUERY = "query beach --checkpoint {run}"
QUERY = {
    "empty-query": case("query '' --checkpoint {run}", "empty"),
    "zero-resolution": case(_QUERY + " --resolution 0", "--resolution"),
    "negative-resolution": case(_QUERY + " --resolution -1", "--resolution"),
    "nan-resolution": case(_QUERY + " --resolution nan", "--resolution"),
    "inf-resolution": case(_QUERY + " --resolution inf", "--resolution"),
    "1e308-resolution": case(_QUERY + " --resolution 1e308", "--resolution"),
    "zero-top": case(_QUERY + " --top 0", "--top"),
    "out-is-a-file": case(_QUERY + " --out {file}", "{file}"),
    "checkpoint-missing": case("query beach --checkpoint {missing}", "{missing}"),
    "checkpoint-folder-without-model": case("query beach --checkpoint {no_run}", "final.safetensors"),
    "bank-python-tag": case(_QUERY + " --bank {python_tag}", "{python_tag}"),
}


TABLES = {"sample": SAMPLE, "ingest": INGEST, "label": LABEL, "concepts": CONCEPTS, "layers": LAYERS}
TABLES |= {"features": FEATURES, "train": TRAIN, "gallery": GALLERY, "predict": PREDICT, "evaluate": EVALUATE}
TABLES |= {"query": QUERY}


def test_every_command_has_a_table():
    from geoconcept.cli import COMMANDS

    assert set(TABLES) == set(COMMANDS)
    assert all(len(cases) >= 3 for cases in TABLES.values())


@pytest.mark.parametrize(
    "bad_case",
    [c for cases in (ARGPARSE, *TABLES.values()) for c in cases.values()],
    ids=[f"{name}-{i}" for name, cases in ({"argparse": ARGPARSE} | TABLES).items() for i in cases],
)
def test_bad_input_is_refused(capsys, inputs, tmp_path, bad_case):
    check_refused(capsys, inputs, tmp_path, bad_case)


# In a real process: what a terminal shows ------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["label", "--points", "{folder}", "--out", "{tmp}/o.parquet"], "is a directory"),
        (["sample", "--out", "{folder}/a-file/out"], "a-file"),
        (["layers", "--width", "wide"], "--width"),
    ],
    ids=["library-error", "output-under-a-file", "argparse-error"],
)
def test_a_terminal_sees_one_line_and_no_traceback(tmp_path, argv, names):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "a-file").write_text("not a folder")
    argv = [a.format(folder=tmp_path / "folder", tmp=tmp_path) for a in argv]
    env = os.environ | {"PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "geoconcept", *argv], capture_output=True, text=True, env=env)
    assert done.returncode == 2
    assert "Traceback" not in done.stdout + done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.strip()]
    assert line.startswith(f"geoconcept {argv[0]}: error: ") and names in line


# One message whichever door a setting comes through ---------------------------------------------
def _resource_message(resource_class, **settings) -> str:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        resource_class(**settings)
    return info.value.errors()[0]["msg"].removeprefix("Value error, ")


def _cli_message(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err.strip().split(": error: ", 1)[1]


def test_ingest_settings_read_the_same_from_cli_resource_and_config(capsys, inputs, tmp_path):
    from assets.resources import IngestResource
    from geoconcept.errors import ConfigError
    from geoconcept.ingest import IngestConfig

    base = ["ingest", "--csv", str(inputs["table"]), "--images", str(inputs["images"]), "--out", str(tmp_path)]
    for flag, key, value in [("--samples-per-shard", "samples_per_shard", 0), ("--jpeg-quality", "jpeg_quality", 96)]:
        with pytest.raises(ConfigError) as info:
            IngestConfig(**{key: value})
        from_cli = _cli_message(capsys, [*base, flag, str(value)])
        assert from_cli == str(info.value) == _resource_message(IngestResource, **{key: value})
        assert key in from_cli and str(value) in from_cli


def test_evaluation_settings_read_the_same_from_cli_resource_and_config(capsys, inputs, tmp_path):
    from assets.resources import EvaluationResource

    config = tmp_path / "evaluation.yaml"
    config.write_text(
        f"runs: [{{checkpoint: {inputs['run']}, gallery: {inputs['gallery']}}}]\n"
        f"features: {inputs['features']}\nout: {tmp_path / 'report'}\ndownstream: {{points: 3}}\n"
    )
    flags = ["--checkpoint", str(inputs["run"]), "--gallery", str(inputs["gallery"]), "--features"]
    flags += [str(inputs["features"]), "--out", str(tmp_path / "report"), "--downstream-points", "3"]
    from_yaml = _cli_message(capsys, ["evaluate", "--config", str(config)])
    from_flags = _cli_message(capsys, ["evaluate", *flags])
    from_resource = _resource_message(EvaluationResource, downstream_points=3)
    assert from_yaml == from_flags == f"evaluation config: {from_resource}"
    assert "downstream.points must be an integer >= 40, got 3" in from_resource
