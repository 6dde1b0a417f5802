"""The embedded sample: real MP16 points, rendered patches that carry location signal, reproducible."""

from __future__ import annotations

import tarfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from geoconcept import bundled
from geoconcept.cli import main as cli
from geoconcept.sample import SampleConfig, build_sample, render_patch


@pytest.fixture(scope="module")
def small_sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    return build_sample(out, SampleConfig(n_train=24, n_test=6, seed=3, tar=True, images_per_tar=10))


def test_csvs_use_mp16_columns_and_real_mp16_points(small_sample):
    train = pd.read_csv(small_sample.train_csv)
    test = pd.read_csv(small_sample.test_csv)
    assert list(train.columns) == ["IMG_ID", "LAT", "LON"] == list(test.columns)
    assert (len(train), len(test)) == (24, 6)
    assert not set(train["IMG_ID"]) & set(test["IMG_ID"])
    gallery = pd.read_csv(bundled.GEOCLIP_GALLERY.path())
    both = pd.concat([train, test])[["LAT", "LON"]].to_numpy()
    nearest = np.abs(both[:, None, :] - gallery[["LAT", "LON"]].to_numpy()[None]).max(axis=2).min(axis=1)
    assert nearest.max() < 1e-5


def test_every_image_exists_decodes_and_packs_into_tars(small_sample):
    ids = pd.concat([pd.read_csv(small_sample.train_csv), pd.read_csv(small_sample.test_csv)])["IMG_ID"]
    for img_id in ids:
        with Image.open(small_sample.images / img_id) as im:
            assert im.format == "JPEG" and im.size == (112, 112) and im.mode == "RGB"
    members = {}
    for tar in small_sample.tars:
        with tarfile.open(tar) as tf:
            for m in tf.getmembers():
                assert m.isfile() and m.mtime == 0
                members[m.name] = tf.extractfile(m).read()
    assert len(small_sample.tars) == 3
    assert set(members) == set(ids)
    assert all(members[i] == (small_sample.images / i).read_bytes() for i in ids)


def test_same_seed_same_bytes_other_seed_other_points(tmp_path, small_sample):
    again = build_sample(tmp_path / "again", SampleConfig(n_train=24, n_test=6, seed=3, tar=True, images_per_tar=10))
    assert again.train_csv.read_bytes() == small_sample.train_csv.read_bytes()
    for a, b in zip(small_sample.tars, again.tars, strict=True):
        assert a.read_bytes() == b.read_bytes()
    other = build_sample(tmp_path / "other", SampleConfig(n_train=24, n_test=6, seed=4))
    assert other.train_csv.read_bytes() != small_sample.train_csv.read_bytes()


def test_patches_carry_location_signal():
    cfg = SampleConfig()
    rng = np.random.default_rng(0)
    sahara = render_patch(23.0, 12.0, cfg, rng).astype(float).mean(axis=(0, 1))
    amazon = render_patch(-3.5, -62.0, cfg, rng).astype(float).mean(axis=(0, 1))
    greenland = render_patch(72.5, -40.0, cfg, rng).astype(float).mean(axis=(0, 1))
    pacific = render_patch(-30.0, -140.0, cfg, rng).astype(float).mean(axis=(0, 1))
    assert amazon[1] > amazon[0] + 30  # green forest
    assert sahara[0] > sahara[2] + 40  # sand
    assert greenland.min() > 220  # ice
    assert pacific[2] > pacific[0] + 60  # ocean


def test_patch_crossing_the_dateline_is_not_blank():
    patch = render_patch(-17.0, 179.9, SampleConfig(), np.random.default_rng(0))  # Fiji
    land_like = (patch[..., 1] > patch[..., 2]).mean()
    assert 0.0 < land_like < 0.9


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    assert cli(["sample", "--out", str(tmp_path), "--n-train", "0", "--n-test", "0"]) == 2
    assert "must be" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
