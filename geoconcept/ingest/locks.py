"""Advisory file locks (fcntl.flock) that keep two processes off the same outputs.

The kernel releases a flock when its holder exits, however it exits, so a killed run never
leaves a stale lock behind. The lock files themselves are empty and stay in place.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from geoconcept.errors import GeoconceptError


class Busy(GeoconceptError):
    """Another process holds the lock."""


def acquire(path: Path, *, wait: bool, what: str) -> int:
    """Lock `path` (created if needed) and return the descriptor that holds the lock.

    With `wait=False`, raise `Busy` naming `what` when another process (or another descriptor
    in this process) holds it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        raise Busy(f"{what} is being ingested by another process right now (lock file {path})") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def release(fd: int) -> None:
    os.close(fd)  # closing the descriptor releases the flock


@contextlib.contextmanager
def locked(path: Path, *, wait: bool, what: str) -> Iterator[None]:
    fd = acquire(path, wait=wait, what=what)
    try:
        yield
    finally:
        release(fd)
