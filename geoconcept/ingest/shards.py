"""One shard on disk: `shard-NNNNNN.tar` (WebDataset) and its manifest `shard-NNNNNN.parquet`.

The tar holds `<key>.jpg` + `<key>.json` per accepted record, in input order: a WebDataset
shard, byte for byte what `webdataset.TarWriter` writes in USTAR format with a fixed mtime, owner
and mode (so the same input gives the same bytes), but with the member headers built here (see
`ustar_member`). The manifest has one row per input record of the shard's row range, good or bad
(`MANIFEST_SCHEMA` + the input's extra columns as text); its Parquet metadata records the input
fingerprint the shard was built for (`FINGERPRINT_KEY`, see `fingerprint`). Both are written
atomically, the tar first: a shard is done exactly when its manifest exists and records the
fingerprint of its current inputs.
"""

from __future__ import annotations

import contextlib
import json
import re
import tarfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from geoconcept import atomic
from geoconcept.layout import shard_name

TAR_MTIME = 0
TAR_OWNER = "geoconcept"
TAR_MODE = 0o444
# A USTAR header with every field but name, size and checksum filled in (POSIX.1-1988 layout:
# name 100, mode/uid/gid 8 each, size 12, mtime 12, checksum 8, type 1, linkname 100, magic and
# version 8, uname/gname 32 each, devmajor/devminor 8 each, prefix 155, padding 12). Numbers are
# octal with a NUL, as tarfile writes them.
_HEADER_MODE_IDS = b"%07o\0%07o\0%07o\0" % (TAR_MODE, 0, 0)
_HEADER_MTIME = b"%011o\0" % TAR_MTIME
_HEADER_REST = (
    b"        "  # the checksum field counts as spaces while the checksum is computed
    + tarfile.REGTYPE
    + bytes(100)
    + tarfile.POSIX_MAGIC
    + TAR_OWNER.encode().ljust(32, b"\0") * 2
    + bytes(8 + 8 + 155 + 12)
)
_MAX_MEMBER_BYTES = 8**11 - 1  # what 11 octal digits hold
_SHARD_FILE = re.compile(r"^shard-(?P<index>\d{6,})\.(?:tar|parquet)$")
FINGERPRINT_KEY = b"geoconcept_input_fingerprint"
MANIFEST_SCHEMA = pa.schema(
    [
        ("key", pa.string()),  # the sample's key in the tar: 20 hex chars of blake2b(IMG_ID); null if IMG_ID is empty
        ("img_id", pa.string()),
        ("row", pa.int64()),  # 0-based row of the input table
        ("lat", pa.float64()),  # null when not a finite number
        ("lon", pa.float64()),
        ("shard", pa.string()),  # e.g. shard-000003
        ("status", pa.string()),  # ok or a reason code (geoconcept.ingest.reasons)
        ("detail", pa.string()),  # why, in words; null for ok
        ("sha256", pa.string()),  # of the input image bytes; null if they were not read
        ("width", pa.int32()),  # of the written JPEG; null if none was written
        ("height", pa.int32()),
        ("jpeg_bytes", pa.int64()),
    ]
)


def ustar_member(name: str, data: bytes) -> list[bytes]:
    """One tar member: header, data, zero padding to the next block.

    Built here rather than by webdataset.TarWriter (tarfile underneath) because their per-member
    Python (a TarInfo copy, every field encoded one by one, two checksums, PAX checks) cost about
    as much per sample as validating a small JPEG; the bytes are the same (a test compares them).
    """
    encoded = name.encode("ascii")
    if len(encoded) > 100 or len(data) > _MAX_MEMBER_BYTES:
        raise ValueError(f"tar member {name!r} of {len(data)} bytes does not fit a USTAR header")
    header = encoded.ljust(100, b"\0") + _HEADER_MODE_IDS + b"%011o\0" % len(data) + _HEADER_MTIME + _HEADER_REST
    header = header[:148] + b"%06o\0" % sum(header) + header[155:]
    return [header, data, bytes(-len(data) % tarfile.BLOCKSIZE)]


def end_of_archive(size: int) -> bytes:
    """What closes a tar of `size` bytes so far: two zero blocks, then zeros up to a whole record."""
    end = size + 2 * tarfile.BLOCKSIZE
    return bytes(2 * tarfile.BLOCKSIZE + -end % tarfile.RECORDSIZE)


def tar_path(folder: Path, index: int) -> Path:
    return folder / f"{shard_name(index)}.tar"


def manifest_path(folder: Path, index: int) -> Path:
    return folder / f"{shard_name(index)}.parquet"


def shard_index(path: Path) -> int | None:
    """The index of a shard's tar or manifest (`shard-000012.tar` -> 12); None for other files."""
    match = _SHARD_FILE.match(path.name)
    return int(match["index"]) if match else None


def recorded_fingerprint(manifest: Path) -> str | None:
    """The input fingerprint a manifest was built for; None if there is no (readable) manifest, or it
    predates fingerprints."""
    try:
        value = (pq.read_metadata(manifest).metadata or {}).get(FINGERPRINT_KEY)
    except (OSError, pa.ArrowException):
        return None
    return value.decode() if value else None


def is_done(folder: Path, index: int, fingerprint: str) -> bool:
    """Shard `index` is built and was built from the inputs whose fingerprint is `fingerprint`."""
    return recorded_fingerprint(manifest_path(folder, index)) == fingerprint


def sample_json(meta: dict[str, Any]) -> bytes:
    """The `.json` of a sample: compact and key-sorted, so its bytes are stable."""
    return json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def manifest_schema(extra_columns: Sequence[str]) -> pa.Schema:
    return pa.schema([*MANIFEST_SCHEMA, *[(c, pa.string()) for c in extra_columns]])


def status_counts(manifest: Path) -> dict[str, int]:
    """Records per status in one manifest."""
    counts = pc.value_counts(pq.read_table(manifest, columns=["status"]).column("status"))
    return {item["values"].as_py(): item["counts"].as_py() for item in counts}


class ShardWriter:
    """Writes one shard: samples stream into a temporary tar; on success the tar, then the manifest,
    appear under their final names. On error neither appears (an older complete shard stays)."""

    def __init__(self, folder: Path, index: int, extra_columns: Sequence[str], fingerprint: str) -> None:
        self.folder = folder
        self.index = index
        self.schema = manifest_schema(extra_columns).with_metadata({FINGERPRINT_KEY: fingerprint.encode()})
        self._stack = contextlib.ExitStack()
        self._tar: BinaryIO | None = None  # the temporary tar while the shard is open
        self._tar_bytes = 0

    def __enter__(self) -> ShardWriter:
        final = tar_path(self.folder, self.index)
        atomic.remove_stale_temps(self.folder, [final.name, manifest_path(self.folder, self.index).name])
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic.atomic_path(final))
            self._tar = stack.enter_context(open(tmp, "wb"))
            self._stack = stack.pop_all()
        return self

    def add_sample(self, key: str, jpeg: bytes, meta: dict[str, Any]) -> None:
        assert self._tar is not None, "use ShardWriter as a context manager"
        parts = [*ustar_member(f"{key}.jpg", jpeg), *ustar_member(f"{key}.json", sample_json(meta))]
        self._tar_bytes += self._tar.write(b"".join(parts))

    def finish(self, columns: dict[str, list[Any]]) -> None:
        """Publish the tar, then the manifest built from `columns` (one list per schema column)."""
        assert self._tar is not None, "use ShardWriter as a context manager"
        self._tar.write(end_of_archive(self._tar_bytes))
        self._stack.close()  # closes the temporary tar and renames it to its final name
        table = pa.table(columns, schema=self.schema)
        with atomic.atomic_path(manifest_path(self.folder, self.index)) as tmp:
            pq.write_table(table, tmp, compression="zstd")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Without finish() (an error, or a bug), the temporary tar is discarded.
        self._stack.__exit__(exc_type or RuntimeError, exc or RuntimeError("shard not finished"), tb)
