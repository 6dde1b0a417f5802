"""Issue 2's hostile corpus: nothing crashes, every good record lands in a shard (readable with
webdataset), every bad one is in the manifest with its reason, nothing is written outside the
output folder."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from hostile_corpus import Corpus, folder_corpus, snapshot, tar_corpus
from PIL import Image

from geoconcept import catalog
from geoconcept.cli import main
from geoconcept.ingest import IngestConfig, ingest
from geoconcept.ingest.reasons import BAD_ID, Rejected
from geoconcept.ingest.records import sample_key
from geoconcept.ingest.sources import FolderImages

SAMPLES_PER_SHARD = 8


def manifest(out: Path, source: str = "train") -> pa.Table:
    files = catalog.manifest_files(out, "sample", source)
    return pa.concat_tables([pq.read_table(f) for f in files])


def tar_samples(out: Path, source: str = "train") -> dict[str, dict]:
    urls = [str(p) for p in sorted((out / "shards" / "sample" / source).glob("shard-*.tar"))]
    return {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False)}


def written_statuses(corpus: Corpus, samples_per_shard: int) -> dict[int, str]:
    """What each shard's manifest must say: a copy whose first copy is in another shard is `ok`
    there (the `samples` view is what calls it `duplicate_content`)."""
    expected = {}
    for row, record in enumerate(corpus.records):
        status = record.expect
        if status == "duplicate_content":
            first = next(r for r, other in enumerate(corpus.records) if other.image == record.image)
            if first // samples_per_shard != row // samples_per_shard:
                status = "ok"
        expected[row] = status
    return expected


def check_outputs(corpus: Corpus, out: Path, samples_per_shard: int) -> None:
    table = manifest(out)
    rows = table.column("row").to_pylist()
    assert rows == list(range(len(corpus.records)))  # one manifest row per input record, in order
    written = dict(zip(rows, table.column("status").to_pylist(), strict=True))
    assert written == written_statuses(corpus, samples_per_shard)
    for row, status, detail in zip(rows, written.values(), table.column("detail").to_pylist(), strict=True):
        assert (detail is None) == (status == "ok"), (row, status, detail)

    con = catalog.connect(out, "sample")
    view = dict(con.execute('SELECT "row", status FROM samples').fetchall())
    assert view == corpus.expected()

    # Every record written `ok` is in a tar, decodable, with its metadata; nothing else is.
    samples = tar_samples(out)
    ok = table.filter(pa.compute.equal(table.column("status"), "ok")).to_pylist()
    assert sorted(samples) == sorted(m["key"] for m in ok)
    for m in ok:
        sample = samples[m["key"]]
        record = corpus.records[m["row"]]
        assert m["key"] == sample_key(record.img_id)
        assert m["sha256"] == hashlib.sha256(record.image).hexdigest()
        image = Image.open(io.BytesIO(sample["jpg"]))
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (m["width"], m["height"]))
        assert len(sample["jpg"]) == m["jpeg_bytes"]
        meta = json.loads(sample["json"])
        assert meta == {"img_id": record.img_id, "lat": m["lat"], "lon": m["lon"], "row": m["row"], "source": "train"}
    assert not list(out.rglob("*.tmp-*"))


def test_folder_corpus_through_the_cli(tmp_path, monkeypatch, capsys):
    corpus = folder_corpus(tmp_path / "input")
    out = tmp_path / "out"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # DuckDB would put its spill folder in the working directory by default
    before = snapshot(tmp_path, skip=out)
    args = ["--csv", str(corpus.csv), "--images", str(corpus.images), "--out", str(out), "--image-size", "48"]
    code = main(["ingest", *args, "--samples-per-shard", str(SAMPLES_PER_SHARD), "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    assert snapshot(tmp_path, skip=out) == before  # nothing written outside --out, nothing changed
    check_outputs(corpus, out, SAMPLES_PER_SHARD)
    for reason in ("bad_gps", "bad_id", "corrupt_image", "duplicate_content", "missing_image", "too_large"):
        count = sum(r.expect == reason for r in corpus.records)
        assert any(line.split() == [reason, str(count)] for line in printed.splitlines()), (reason, printed)

    rows = {r.img_id: row for row, r in enumerate(corpus.records)}
    by_row = {m["row"]: m for m in manifest(out).to_pylist()}
    assert (by_row[rows["good/large.jpg"]]["width"], by_row[rows["good/large.jpg"]]["height"]) == (80, 48)
    # EXIF orientation 6: a 60x30 stored image is shown (and written) 30 wide, 60 high.
    assert (by_row[rows["good/rotated.jpg"]]["width"], by_row[rows["good/rotated.jpg"]]["height"]) == (30, 60)
    assert "outside the image folder" in by_row[rows["link/outside.jpg"]]["detail"]
    assert "'..'" in by_row[rows["../outside.jpg"]]["detail"]
    assert "not a regular file" in by_row[rows["bad/fifo.jpg"]]["detail"]


def test_tar_corpus_folder_of_tars_and_glob(tmp_path):
    corpus = tar_corpus(tmp_path / "input")
    out = tmp_path / "out"
    before = snapshot(tmp_path, skip=out)
    config = IngestConfig(samples_per_shard=5, image_size=48)
    result = ingest(corpus.csv, corpus.images, out, config=config)
    assert snapshot(tmp_path, skip=out) == before
    check_outputs(corpus, out, 5)
    assert result.summary.sources["train"].status_counts == {
        "bad_id": 2,
        "corrupt_image": 1,
        "missing_image": 6,
        "ok": 7,
        "unreadable_image": 1,
    }
    details = {m["img_id"]: m["detail"] for m in manifest(out).to_pylist()}
    assert "symlink" in details["link.jpg"] and "hardlink" in details["hard.jpg"] and "other" in details["dev.jpg"]
    assert "truncated tar" in details["cut/big.jpg"]
    assert "damaged tars" in details["cut/after.jpg"] and "part-2.tar" in details["cut/after.jpg"]
    assert list((out / "raw" / "sample" / "tar_index").glob("*.parquet"))  # indexed once, cached

    # The same tars named by a glob give the same shards, byte for byte.
    out2 = tmp_path / "out2"
    ingest(corpus.csv, str(corpus.images / "part-*.tar"), out2, config=config)
    first = snapshot(out / "shards")
    assert snapshot(out2 / "shards") == first


@pytest.mark.parametrize("swap", ["file", "folder"])
def test_a_link_swapped_in_after_the_check_is_not_followed(tmp_path, monkeypatch, swap):
    """The folder reader checks where a path leads, then opens it: a symlink put in place between the
    two (on the file or on a folder above it) must not make it read a file outside the image root."""
    root, outside = tmp_path / "images", tmp_path / "secret"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "a.jpg").write_bytes(b"inside")
    (outside / "a.jpg").write_bytes(b"SECRET")
    source = FolderImages(os.path.realpath(root), max_bytes=1 << 20)
    checked = source._locate

    def racing_locate(rel: str):
        found = checked(rel)  # the check passes on the real file; then the attacker swaps
        if swap == "file":
            (root / "sub" / "a.jpg").unlink()
            (root / "sub" / "a.jpg").symlink_to(outside / "a.jpg")
        else:
            (root / "sub").rename(tmp_path / "moved")
            (root / "sub").symlink_to(outside)
        return found

    assert list(source.read_all(["sub/a.jpg"])) == [b"inside"]  # untouched: read as usual
    monkeypatch.setattr(source, "_locate", racing_locate)
    [result] = source.read_all(["sub/a.jpg"])
    assert isinstance(result, Rejected) and result.status == BAD_ID
    assert "changed into a link" in result.detail
