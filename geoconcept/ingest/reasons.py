"""Status codes of manifest rows: `ok`, or why a record was quarantined.

A record gets exactly one status, the first check it fails, in this order: IMG_ID, repeated
IMG_ID, GPS, image lookup, image bytes, image decoding. The order is part of the contract: it
decides which reason a record with several problems is filed under.
"""

from __future__ import annotations

OK = "ok"
BAD_ID = "bad_id"  # empty, absolute, contains `..` or NUL, or resolves outside the image root
DUPLICATE_ID = "duplicate_id"  # a later row repeating an earlier row's IMG_ID (decided at staging)
BAD_GPS = "bad_gps"  # LAT/LON empty, not a number, not finite, or out of range
MISSING_IMAGE = "missing_image"  # no such file / tar member, or a link, directory or device
UNREADABLE_IMAGE = "unreadable_image"  # found but could not be read (permissions, I/O error, truncated tar)
TOO_LARGE = "too_large"  # more bytes than max_image_bytes or more pixels than max_pixels
CORRUPT_IMAGE = "corrupt_image"  # empty, not an image, truncated, or undecodable
DUPLICATE_CONTENT = "duplicate_content"  # same image bytes as an earlier accepted record

STATUSES = (
    OK,
    BAD_ID,
    DUPLICATE_ID,
    BAD_GPS,
    MISSING_IMAGE,
    UNREADABLE_IMAGE,
    TOO_LARGE,
    CORRUPT_IMAGE,
    DUPLICATE_CONTENT,
)

# Failures that can go away without changing the input table (the image appears, permissions
# are fixed): `--retry-failed` rebuilds the shards that hold any of these.
RETRYABLE = frozenset({MISSING_IMAGE, UNREADABLE_IMAGE})


class Rejected(Exception):
    """A record fails a check: it goes to the manifest with `status` and `detail`, not to the tar."""

    def __init__(self, status: str, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
