"""`geoconcept ingest`: exit codes and one-line messages."""

from __future__ import annotations

import pytest
from hostile_corpus import simple_dataset, snapshot

from geoconcept.cli import main


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["ingest", *args, "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_lists_the_options(capsys):
    assert main(["ingest", "--help"]) == 0
    text = capsys.readouterr().out
    for option in ("--csv", "--images", "--out", "--samples-per-shard", "--workers", "--retry-failed", "--partition"):
        assert option in text


def test_completed_run_with_quarantined_records_exits_zero(tmp_path, capsys):
    data = simple_dataset(tmp_path / "in", 6)
    (data.images / data.records[1].img_id).unlink()
    out = tmp_path / "out"
    code, stdout, _ = run(capsys, "--csv", str(data.csv), "--images", str(data.images), "--out", str(out))
    assert code == 0
    assert "6 rows of 'train' -> 1 shard(s)" in stdout
    assert any(line.split() == ["missing_image", "1"] for line in stdout.splitlines())
    assert any(line.split() == ["ok", "5"] for line in stdout.splitlines())
    assert str(out / "shards" / "sample" / "summary.json") in stdout


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("missing_csv", "input table {tmp}/nope.csv does not exist"),
        ("missing_column", "missing required column(s) LON"),
        ("missing_images", "images path {tmp}/no-images does not exist"),
        ("output_not_writable", "cannot create the output folder {tmp}/a-file/out"),
        ("compressed_tar", "decompress .tar.gz first"),
        ("bad_settings", "samples_per_shard must be an integer >= 1, got 0"),
        ("bad_source_name", "source name 'my-data'"),
        ("no_such_partition", "partition(s) 7 do not exist"),
    ],
)
def test_failures_exit_two_with_one_line_and_write_nothing(tmp_path, capsys, case, words):
    data = simple_dataset(tmp_path / "in", 3)
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "images.tar.gz").write_bytes(b"\x1f\x8b")
    csv = {"missing_csv": tmp_path / "nope.csv"}.get(case, data.csv)
    if case == "missing_column":
        csv = tmp_path / "train.csv"
        csv.write_text("IMG_ID,LAT\na.jpg,1\n")
    if case == "bad_source_name":
        csv = tmp_path / "my-data.csv"
        csv.write_text(data.csv.read_text())
    images = {"missing_images": tmp_path / "no-images", "compressed_tar": tmp_path / "images.tar.gz"}.get(
        case, data.images
    )
    out = tmp_path / "a-file" / "out" if case == "output_not_writable" else tmp_path / "out"
    extra = {"bad_settings": ["--samples-per-shard", "0"], "no_such_partition": ["--partition", "7"]}.get(case, [])
    before = snapshot(tmp_path)
    code, _, stderr = run(capsys, "--csv", str(csv), "--images", str(images), "--out", str(out), *extra)
    assert code == 2
    assert stderr.startswith("geoconcept ingest: error: ")
    assert len(stderr.strip().splitlines()) == 1
    assert words.format(tmp=tmp_path) in stderr
    if case != "no_such_partition":  # that one is found after staging, by design
        assert snapshot(tmp_path) == before
