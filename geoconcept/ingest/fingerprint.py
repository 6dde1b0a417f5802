"""Shard input fingerprints: is a finished shard still what its inputs give?

A shard's bytes depend on its staged rows, on the settings that shape its output, and on the
images its records resolve to. `shard_fingerprint` hashes all three without reading any image:
an image counts by what looking it up finds (a folder file's resolved path, size and mtime; a tar
member's tar name, tar size and mtime, offset and size) or by why the lookup failed, through the
same lookup code the builder reads with (`sources.FolderImages` / `TarImages`). Records rejected
before the lookup (bad IMG_ID or GPS, repeated IMG_ID) count by their rows only.

The manifest records the fingerprint its shard was built for (`shards.FINGERPRINT_KEY`); the shard
is done while that equals the current fingerprint. It is cheap on purpose (stat calls, no reads):
an image rewritten with its size and mtime restored by hand goes unnoticed, and a touched image is
rebuilt (to the same tar bytes). Bump FINGERPRINT_FORMAT when the shard builder's output for the
same inputs changes, so that every shard is rebuilt once.
"""

from __future__ import annotations

import hashlib
import json

from geoconcept.ingest.build import ShardInput
from geoconcept.ingest.config import IngestConfig
from geoconcept.ingest.sources import ImageSource

FINGERPRINT_FORMAT = 1


def shard_fingerprint(shard: ShardInput, images: ImageSource, config: IngestConfig) -> str:
    """sha256 (hex) over the format, `config.shard_settings()`, every column of the shard's staged
    rows in order, and the identity of each looked-up record's image."""
    looked_up = shard.looked_up
    identities = images.identities([shard.paths[i] for i in looked_up])
    content = [
        FINGERPRINT_FORMAT,
        sorted(config.shard_settings().items()),
        [[name, shard.table.column(name).to_pylist()] for name in shard.table.column_names],
        [[i, identity] for i, identity in zip(looked_up, identities, strict=True)],
    ]
    return hashlib.sha256(json.dumps(content, separators=(",", ":")).encode()).hexdigest()
