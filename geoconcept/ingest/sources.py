"""Where images come from: a folder tree or tar files, found by IMG_ID.

- A folder: IMG_ID is a relative path under it (`3c/41/2386536419.jpg`). A path that resolves
  outside the folder (through a symlink) is `bad_id`; directories, FIFOs and devices are
  `missing_image` (never opened, so a FIFO cannot hang the run). The checked real path is then
  opened part by part without following links, so a link swapped in after the check cannot lead
  the read outside the folder.
- Tar files (one `.tar`, a folder with `.tar` files directly inside it, or a glob): indexed once
  (member name -> tar, data offset, size, kind) into a Parquet under `raw/<dataset>/tar_index/`,
  keyed by the tars' paths, sizes and mtimes; members are then read with `os.pread`, never
  extracted. Member names
  that are absolute or contain `..` are left out of the index (no valid IMG_ID could name them);
  symlinks, hard links and devices are indexed but never followed (`missing_image`, with the kind).
  When a name occurs twice, the later member wins, as when a tar is extracted. A tar cut short
  keeps the members before the cut (the cut one is `unreadable_image`); a file that is not a tar
  at all is an input error.

Both look an image up (`_locate`) the same way to read it (`read_all`) and to describe it without
reading it (`identities`, what a shard's input fingerprint holds of its images).
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import stat
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from geoconcept import atomic
from geoconcept.errors import InputError
from geoconcept.ingest import locks, plan
from geoconcept.ingest.reasons import BAD_ID, MISSING_IMAGE, TOO_LARGE, UNREADABLE_IMAGE, Rejected
from geoconcept.ingest.records import relative_image_path
from geoconcept.layout import DataRoot

TAR_INDEX_FORMAT = "2"  # 2: the metadata records the tars' sizes and mtimes (`identity`)
_INDEX_SCHEMA = pa.schema(
    [
        ("hash", pa.uint64()),  # of the member name, sorted: lookups are a binary search
        ("name", pa.string()),
        ("tar", pa.int32()),  # position in the index's tar list (Parquet metadata `tars`)
        ("offset", pa.int64()),  # of the member's data in its tar
        ("size", pa.int64()),
        ("kind", pa.string()),  # file, symlink, hardlink or other
    ]
)

ImagesArg = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
# What an image path resolves to, without its bytes (JSON-able): ["file", path under the root, size,
# mtime_ns], ["member", tar file name, tar size, tar mtime_ns, offset, size], or [status, detail]
# when the lookup already rejects the record.
Identity = list[Any]


@dataclass(frozen=True)
class ImagesSpec:
    """A picklable description of an image source (what worker processes receive)."""

    kind: str  # "folder" or "tars"
    root: str = ""  # folder: its real path
    tars: tuple[str, ...] = ()  # tars: their paths, in index order
    index: str = ""  # tars: the index Parquet


def _tar_spec(paths: Sequence[str | os.PathLike[str]]) -> ImagesSpec:
    tars = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise InputError(f"image tar {path} does not exist")
        if path.suffix != ".tar":
            raise InputError(
                f"{path}: images must be a folder or uncompressed .tar files (members are read by seeking; "
                "decompress .tar.gz first)"
            )
        tars.append(os.path.realpath(path))
    return ImagesSpec("tars", tars=tuple(tars))


def locate_images(images: ImagesArg) -> ImagesSpec:
    """Check where the images are without writing anything (the tar index is not built yet)."""
    if not isinstance(images, str | os.PathLike):
        if not images:
            raise InputError("no image tars given")
        return _tar_spec(list(images))
    text = os.fspath(images)
    path = Path(text)
    if path.is_dir():
        tars = sorted(p for p in path.iterdir() if p.suffix == ".tar" and p.is_file())
        return _tar_spec(tars) if tars else ImagesSpec("folder", root=os.path.realpath(path))
    if path.is_file():
        return _tar_spec([path])
    if any(c in text for c in "*?["):
        matches = sorted(glob.glob(text))
        if not matches:
            raise InputError(f"no image tars match {text}")
        return _tar_spec(matches)
    raise InputError(f"images path {path} does not exist")


def resolve_images(images: ImagesArg, data_root: str | os.PathLike[str], dataset: str) -> ImagesSpec:
    """Locate the images and, for tars, build (or reuse) their index under the data root."""
    spec = locate_images(images)
    if spec.kind == "folder":
        return spec
    identity = [(t, st.st_size, st.st_mtime_ns) for t in spec.tars for st in [os.stat(t)]]
    digest = hashlib.sha256(json.dumps([TAR_INDEX_FORMAT, identity]).encode()).hexdigest()[:24]
    folder = DataRoot(Path(data_root)).tar_index(dataset)
    index = folder / f"{digest}.parquet"
    # Parallel partitions start at the same time: one of them builds the index, the others wait.
    with locks.locked(folder / plan.LOCKS / f"{digest}.lock", wait=True, what=f"the tar index {index}"):
        if not index.exists():
            table = build_tar_index([Path(t) for t in spec.tars])
            metadata = table.schema.metadata | {
                b"tars": json.dumps(list(spec.tars)).encode(),
                b"identity": json.dumps(identity).encode(),
                b"format": TAR_INDEX_FORMAT.encode(),
            }
            atomic.remove_stale_temps(folder, [index.name])
            with atomic.atomic_path(index) as tmp:
                pq.write_table(table.replace_schema_metadata(metadata), tmp, compression="zstd")
    return ImagesSpec("tars", tars=spec.tars, index=str(index))


def member_path(name: str) -> str | None:
    """The normalised path of a tar member, or None if no valid IMG_ID could name it."""
    try:
        name.encode("utf-8")  # tarfile keeps undecodable names as surrogates
        return relative_image_path(name)
    except (Rejected, UnicodeEncodeError):
        return None


def name_hashes(names: Sequence[str]) -> np.ndarray:
    return np.array(
        [int.from_bytes(hashlib.blake2b(n.encode("utf-8"), digest_size=8).digest(), "big") for n in names],
        dtype=np.uint64,
    )


def _kind(info: tarfile.TarInfo) -> str:
    if info.isreg():
        return "file"
    if info.issym():
        return "symlink"
    if info.islnk():
        return "hardlink"
    return "other"


def build_tar_index(tars: Sequence[Path]) -> pa.Table:
    """Member name -> (tar, offset, size, kind) for every member of `tars`, sorted by name hash.

    A tar that is damaged after its first member (typically cut short by an interrupted copy)
    keeps the members read so far; its name and the problem are in the metadata (`damaged`).
    """
    names: list[str] = []
    tar_ids: list[int] = []
    offsets: list[int] = []
    sizes: list[int] = []
    kinds: list[str] = []
    damaged: list[str] = []
    for t, path in enumerate(tars):
        try:
            with tarfile.open(path, "r:") as tf:  # "r:" refuses compressed tars, which cannot be read by seeking
                try:
                    while (info := tf.next()) is not None:
                        tf.members.clear()  # tarfile keeps every header it reads; millions would fill memory
                        name = member_path(info.name)
                        if name is None or info.isdir():
                            continue
                        names.append(name)
                        tar_ids.append(t)
                        offsets.append(info.offset_data)
                        sizes.append(info.size)
                        kinds.append(_kind(info))
                except tarfile.ReadError as exc:
                    damaged.append(f"{path} ({exc})")
        except (tarfile.TarError, OSError) as exc:
            raise InputError(f"{path}: cannot be read as an uncompressed tar: {exc}") from None
    table = pa.table(
        {
            "hash": pa.array(name_hashes(names), pa.uint64()),
            "name": pa.array(names, pa.string()),
            "tar": pa.array(tar_ids, pa.int32()),
            "offset": pa.array(offsets, pa.int64()),
            "size": pa.array(sizes, pa.int64()),
            "kind": pa.array(kinds, pa.string()),
        },
        schema=_INDEX_SCHEMA,
    )
    # The later of two members with the same name wins, as when the tars are extracted in order.
    table = table.append_column("position", pa.array(np.arange(len(table), dtype=np.int64)))
    last = table.group_by("name", use_threads=False).aggregate([("position", "max")]).column("position_max")
    keep = np.sort(last.to_numpy())
    table = table.take(pa.array(keep)).drop_columns(["position"])
    table = table.sort_by([("hash", "ascending"), ("name", "ascending")])
    return table.replace_schema_metadata({b"damaged": json.dumps(damaged).encode()})


class FolderImages:
    """Images in a folder tree, by relative path."""

    def __init__(self, root: str, max_bytes: int) -> None:
        self.root = root
        self._inside = root if root.endswith(os.sep) else root + os.sep
        self.max_bytes = max_bytes

    def read_all(self, paths: Sequence[str]) -> Iterator[bytes | Rejected]:
        for path in paths:
            try:
                yield self._read(path)
            except Rejected as rejected:
                yield rejected

    def identities(self, paths: Sequence[str]) -> Iterator[Identity]:
        """What each path resolves to (see `Identity`), from the same lookup as `read_all`, no reads."""
        for path in paths:
            try:
                real, st = self._locate(path)
            except Rejected as rejected:
                yield [rejected.status, rejected.detail]
                continue
            yield ["file", real[len(self._inside) :], st.st_size, st.st_mtime_ns]

    def _real_path(self, rel: str) -> str:
        """os.path.realpath(root/rel) without resolving the root (real already) again for every
        image: one lstat per part of `rel`; a symlink or a part that cannot be looked at (missing,
        not a folder, no permission) leaves the answer to os.path.realpath, as before."""
        path = self.root
        for part in rel.split("/"):
            path = f"{path}/{part}"
            try:
                plain = not stat.S_ISLNK(os.lstat(path).st_mode)
            except OSError:
                plain = False
            if not plain:
                return os.path.realpath(os.path.join(self.root, rel))
        return path

    def _locate(self, rel: str) -> tuple[str, os.stat_result]:
        """The real path and stat of the regular file `rel` names, or Rejected: everything but the read."""
        real = self._real_path(rel)
        if not real.startswith(self._inside):
            raise Rejected(BAD_ID, f"{rel!r} resolves to {real}, outside the image folder {self.root}")
        try:
            st = os.stat(real)
        except (FileNotFoundError, NotADirectoryError):
            raise Rejected(MISSING_IMAGE, f"no file {rel!r} in {self.root}") from None
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise Rejected(MISSING_IMAGE, f"path {rel!r} is too long for the file system") from None
            raise Rejected(UNREADABLE_IMAGE, f"cannot stat {real}: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise Rejected(MISSING_IMAGE, f"{rel!r} in {self.root} is {what}")
        if st.st_size > self.max_bytes:
            raise Rejected(TOO_LARGE, f"{rel!r} has {st.st_size} bytes, more than max_image_bytes={self.max_bytes}")
        return real, st

    def _open_inside(self, real: str) -> int:
        """Open `real` (checked to lie inside the root) one path part at a time from the root, following
        no link: a part swapped for a link since the check fails (ELOOP/ENOTDIR) instead of leading
        outside the root. (Linux's openat2 RESOLVE_BENEATH does this in one call; Python has no binding.)"""
        parts = real[len(self._inside) :].split("/")
        folder = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for part in parts[:-1]:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=folder)
                os.close(folder)
                folder = inner
            # O_NONBLOCK: a FIFO swapped in since the check opens at once (and is refused below) instead of hanging.
            return os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
        finally:
            os.close(folder)

    def _read(self, rel: str) -> bytes:
        real, _ = self._locate(rel)
        try:
            fd = self._open_inside(real)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise Rejected(BAD_ID, f"{rel!r} changed into a link since it was checked ({real})") from None
            raise Rejected(UNREADABLE_IMAGE, f"cannot read {real}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fd)  # of the file actually opened, not of the path checked before
            if not stat.S_ISREG(st.st_mode):
                raise Rejected(MISSING_IMAGE, f"{rel!r} in {self.root} is no longer a regular file")
            if st.st_size > self.max_bytes:
                raise Rejected(TOO_LARGE, f"{rel!r} has {st.st_size} bytes, more than max_image_bytes={self.max_bytes}")
            try:
                # Sized by the stat: read(n) allocates n bytes up front, and a max_bytes-sized
                # buffer per image cost more than the read itself. A file that grew since is read on.
                data = fh.read(st.st_size + 1)
                if len(data) > st.st_size:
                    data += fh.read(self.max_bytes + 1 - len(data))
                return data
            except OSError as exc:
                raise Rejected(UNREADABLE_IMAGE, f"cannot read {real}: {exc.strerror}") from None


class TarImages:
    """Images inside tar files, read by offset through a prebuilt index."""

    def __init__(self, index_path: str, max_bytes: int) -> None:
        table = pq.read_table(index_path)
        meta = table.schema.metadata or {}
        self.tars: list[str] = json.loads(meta[b"tars"])
        # (file name, size, mtime_ns) of each tar as indexed: what the offsets below are offsets in.
        self.tar_identity = [(os.path.basename(t), size, mtime) for t, size, mtime in json.loads(meta[b"identity"])]
        damaged = json.loads(meta.get(b"damaged", b"[]"))
        self._damaged_note = f" (damaged tars, read up to the damage: {'; '.join(damaged)})" if damaged else ""
        self.hashes = table.column("hash").to_numpy()
        self.names = table.column("name").combine_chunks()
        self.tar = table.column("tar").to_numpy()
        self.offset = table.column("offset").to_numpy()
        self.size = table.column("size").to_numpy()
        self.kind = table.column("kind").combine_chunks()
        self.max_bytes = max_bytes
        self._fds: dict[int, int] = {}

    def _find(self, path: str, key: np.uint64) -> int | None:
        i = int(np.searchsorted(self.hashes, key))
        while i < len(self.hashes) and self.hashes[i] == key:
            if self.names[i].as_py() == path:
                return i
            i += 1
        return None

    def read_all(self, paths: Sequence[str]) -> Iterator[bytes | Rejected]:
        for path, key in zip(paths, name_hashes(paths), strict=True):
            try:
                yield self._read(path, key)
            except Rejected as rejected:
                yield rejected

    def identities(self, paths: Sequence[str]) -> Iterator[Identity]:
        """What each path resolves to (see `Identity`), from the same lookup as `read_all`, no reads."""
        for path, key in zip(paths, name_hashes(paths), strict=True):
            try:
                i = self._locate(path, key)
            except Rejected as rejected:
                yield [rejected.status, rejected.detail]
                continue
            yield ["member", *self.tar_identity[int(self.tar[i])], int(self.offset[i]), int(self.size[i])]

    def _locate(self, path: str, key: np.uint64) -> int:
        """The index row of the regular member `path`, or Rejected: everything but the read."""
        i = self._find(path, key)
        if i is None:
            raise Rejected(MISSING_IMAGE, f"no member {path!r} in the image tars{self._damaged_note}")
        kind = self.kind[i].as_py()
        if kind != "file":
            raise Rejected(
                MISSING_IMAGE, f"member {path!r} of {self.tars[int(self.tar[i])]} is a {kind}; links are never followed"
            )
        size = int(self.size[i])
        if size > self.max_bytes:
            raise Rejected(TOO_LARGE, f"member {path!r} has {size} bytes, more than max_image_bytes={self.max_bytes}")
        return i

    def _read(self, path: str, key: np.uint64) -> bytes:
        i = self._locate(path, key)
        t, size, offset = int(self.tar[i]), int(self.size[i]), int(self.offset[i])
        tar = self.tars[t]
        try:
            fd = self._fds.get(t)
            if fd is None:
                fd = self._fds[t] = os.open(tar, os.O_RDONLY)
            data = os.pread(fd, size, offset)
        except OSError as exc:
            raise Rejected(UNREADABLE_IMAGE, f"cannot read member {path!r} of {tar}: {exc.strerror}") from None
        if len(data) != size:
            raise Rejected(UNREADABLE_IMAGE, f"{tar} ends inside member {path!r} (truncated tar)")
        return data

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


ImageSource = FolderImages | TarImages
_open_source: tuple[tuple[ImagesSpec, int], ImageSource] | None = None


def open_images(spec: ImagesSpec, max_bytes: int) -> ImageSource:
    """The image source for `spec`, kept open in this process (a worker loads a tar index once)."""
    global _open_source
    if _open_source is not None and _open_source[0] == (spec, max_bytes):
        return _open_source[1]
    if _open_source is not None and isinstance(_open_source[1], TarImages):
        _open_source[1].close()
    source: ImageSource
    source = FolderImages(spec.root, max_bytes) if spec.kind == "folder" else TarImages(spec.index, max_bytes)
    _open_source = ((spec, max_bytes), source)
    return source
