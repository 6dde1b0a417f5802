"""Safetensors files with byte-stable headers and readable errors.

The safetensors library writes its `__metadata__` map in hash order, so the same tensors and
metadata give different bytes from one process to the next. `save_tensors` re-serialises the
header with sorted keys (tensor data untouched; offsets are relative to the end of the header, so
its length may change) and writes atomically: same inputs, same bytes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from geoconcept import atomic
from geoconcept.errors import InputError

_HEADER_ALIGN = 8  # the format pads the header with spaces to a multiple of 8 bytes


def _canonical(data: bytes) -> bytes:
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % _HEADER_ALIGN)
    return len(text).to_bytes(8, "little") + text + data[8 + size :]


def save_tensors(final: str | os.PathLike[str], tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write `tensors` (contiguous copies are made where needed) and string `metadata` atomically."""
    plain = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    atomic.write_bytes(final, _canonical(save(plain, metadata=metadata)))


def read_metadata(path: str | os.PathLike[str], what: str) -> dict[str, str]:
    """The string metadata of a safetensors file; InputError if it is missing or unreadable."""
    path = Path(path)
    try:
        with safe_open(path, framework="pt") as fh:
            return dict(fh.metadata() or {})
    except FileNotFoundError:
        raise InputError(f"{what} {path} not found") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"{what} {path} is not a readable safetensors file ({exc})") from None


def read_tensors(path: str | os.PathLike[str], what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file, with errors that name the file."""
    path = Path(path)
    try:
        with safe_open(path, framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except FileNotFoundError:
        raise InputError(f"{what} {path} not found") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise InputError(f"{what} {path} is not a readable safetensors file ({exc})") from None
    return tensors, metadata


def require_metadata(metadata: dict[str, str], keys: list[str], path: Path, what: str) -> None:
    missing = [k for k in keys if k not in metadata]
    if missing:
        raise InputError(
            f"{what} {path} lacks metadata {', '.join(missing)} (not written by this version of geoconcept?)"
        )


def json_metadata(metadata: dict[str, str], key: str, path: Path, what: str) -> object:
    try:
        return json.loads(metadata[key])
    except (KeyError, json.JSONDecodeError) as exc:
        raise InputError(f"{what} {path}: metadata {key!r} is not valid JSON ({exc})") from None
