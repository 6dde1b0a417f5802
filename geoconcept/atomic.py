"""Atomic file writes: a reader never sees half a file under its final name.

Every writer in geoconcept goes through here: write to a temporary name in the same folder,
fsync, rename over the final name, fsync the folder. A crash leaves at most a `*.tmp-*` file,
which `remove_stale_temps` deletes on the next run.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

TEMP_MARKER = ".tmp-"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success fsync it and rename it to `final`.

    For libraries that want a path rather than a file object (pyarrow, safetensors, faiss,
    rasterio). On error the temporary file is removed and `final` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=final.name + TEMP_MARKER, dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_open(final: str | os.PathLike[str], mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside `final` for writing; it becomes `final` only on success."""
    with atomic_path(final) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


def write_bytes(final: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(final, "wb") as fh:
        fh.write(data)


def write_text(final: str | os.PathLike[str], text: str) -> None:
    with atomic_open(final, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_json(final: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON with sorted keys so that the same object gives the same bytes."""
    write_text(final, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def remove_stale_temps(folder: str | os.PathLike[str], final_names: Iterable[str]) -> list[Path]:
    """Delete temporaries a crashed writer left for the given final names in `folder`.

    Only the named files' temporaries: another process may be writing other files in the
    same folder right now (parallel partitions share shard folders).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    prefixes = tuple(name + TEMP_MARKER for name in final_names)
    removed = [p for p in folder.iterdir() if p.name.startswith(prefixes) and p.is_file()]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed
