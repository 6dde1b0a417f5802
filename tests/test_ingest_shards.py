"""Shard tars: the members ShardWriter writes itself are byte for byte webdataset.TarWriter's."""

from __future__ import annotations

import io
import tarfile

import pytest
import webdataset

from geoconcept.ingest import shards


def _samples(count: int) -> list[tuple[str, bytes, dict[str, object]]]:
    # Data sizes around the 512-byte block (padding) and a non-ASCII json value (UTF-8 bytes).
    sizes = [0, 1, 511, 512, 513, 20_000]
    return [
        (f"{i:020x}", bytes([i % 251]) * sizes[i % len(sizes)], {"img_id": f"ville-é/{i}.jpg", "row": i})
        for i in range(count)
    ]


@pytest.mark.parametrize("count", [0, 1, 7])
def test_shard_tar_bytes_equal_webdataset_tarwriter(tmp_path, count):
    samples = _samples(count)
    reference = io.BytesIO()
    with webdataset.TarWriter(
        reference,
        user=shards.TAR_OWNER,
        group=shards.TAR_OWNER,
        mode=shards.TAR_MODE,
        mtime=shards.TAR_MTIME,
        encoder=False,
    ) as writer:
        for key, jpeg, meta in samples:
            writer.write({"__key__": key, "jpg": jpeg, "json": shards.sample_json(meta)})
    with shards.ShardWriter(tmp_path, 3, (), "0" * 64) as shard:
        for key, jpeg, meta in samples:
            shard.add_sample(key, jpeg, meta)
        shard.finish({name: [] for name in shards.MANIFEST_SCHEMA.names})
    ours = shards.tar_path(tmp_path, 3).read_bytes()
    assert ours == reference.getvalue()
    with tarfile.open(fileobj=io.BytesIO(ours)) as tf:
        assert tf.getnames() == [f"{key}.{ext}" for key, _, _ in samples for ext in ("jpg", "json")]


def test_a_member_that_does_not_fit_ustar_is_refused():
    with pytest.raises(ValueError, match="USTAR"):
        shards.ustar_member("x" * 101, b"")
