"""Checks of one input record before its image is touched: IMG_ID, its sample key, GPS."""

from __future__ import annotations

import hashlib
import math

from geoconcept.ingest.reasons import BAD_ID, Rejected

KEY_BYTES = 10  # 20 hex characters: collisions among 10^8 IDs have odds of about 1 in 10^8


def sample_key(img_id: str) -> str | None:
    """The WebDataset key of a record: a stable hash of IMG_ID (no dots or slashes), None if empty."""
    if not img_id:
        return None
    return hashlib.blake2b(img_id.encode("utf-8"), digest_size=KEY_BYTES).hexdigest()


def relative_image_path(img_id: str) -> str:
    """The relative path an IMG_ID names (`./a//b.jpg` -> `a/b.jpg`), or Rejected(bad_id).

    Slashes are legitimate (MP16 IDs are `3c/41/2386536419.jpg`); absolute paths, `..` parts and
    NUL characters are not: they could name files outside the image root.
    """
    if not img_id:
        raise Rejected(BAD_ID, "empty IMG_ID")
    if "\x00" in img_id:
        raise Rejected(BAD_ID, f"IMG_ID {img_id!r} contains a NUL character")
    if img_id.startswith("/"):
        raise Rejected(BAD_ID, f"IMG_ID {img_id!r} is an absolute path")
    parts = [p for p in img_id.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise Rejected(BAD_ID, f"IMG_ID {img_id!r} contains a '..' path component")
    if not parts:
        raise Rejected(BAD_ID, f"IMG_ID {img_id!r} names no file")
    return "/".join(parts)


def _number(text: str | None) -> tuple[float | None, str | None]:
    if text is None or not text.strip():
        return None, "is empty"
    # float() would also take "1_000"; in a coordinate an underscore is a typo, not a separator.
    if "_" in text:
        return None, f"is not a number: {text!r}"
    try:
        value = float(text)
    except ValueError:
        return None, f"is not a number: {text!r}"
    if not math.isfinite(value):
        return None, f"is not finite: {text!r}"
    return value, None


def parse_gps(lat_text: str | None, lon_text: str | None) -> tuple[float | None, float | None, str | None]:
    """(lat, lon, problem): the values when they are finite numbers, and what is wrong, if anything."""
    lat, lat_problem = _number(lat_text)
    lon, lon_problem = _number(lon_text)
    problems = []
    if lat_problem:
        problems.append(f"LAT {lat_problem}")
    elif not -90.0 <= lat <= 90.0:
        problems.append(f"LAT {lat:g} is outside [-90, 90]")
    if lon_problem:
        problems.append(f"LON {lon_problem}")
    elif not -180.0 <= lon <= 180.0:
        problems.append(f"LON {lon:g} is outside [-180, 180]")
    return lat, lon, "; ".join(problems) or None
