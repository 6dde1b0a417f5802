"""Small pictures of data for humans: a contact sheet of shard images."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable
from pathlib import Path

from PIL import Image


def contact_sheet(tars: Iterable[Path], n: int = 16, columns: int = 8, cell: int = 96) -> bytes | None:
    """PNG bytes of the first `n` images found in the given WebDataset tars (None if there are none).

    Reads members in tar order with `tarfile` (stream, no extraction): only `.jpg` members.
    """
    thumbs: list[Image.Image] = []
    for tar in tars:
        with tarfile.open(tar) as tf:
            for member in tf:
                if len(thumbs) >= n:
                    break
                if member.isfile() and member.name.endswith(".jpg"):
                    with Image.open(io.BytesIO(tf.extractfile(member).read())) as im:
                        thumbs.append(im.convert("RGB").resize((cell, cell)))
        if len(thumbs) >= n:
            break
    if not thumbs:
        return None
    rows = (len(thumbs) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * cell, rows * cell), "white")
    for i, thumb in enumerate(thumbs):
        sheet.paste(thumb, ((i % columns) * cell, (i // columns) * cell))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
