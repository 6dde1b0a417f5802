"""Where every output lives under the data root (DESIGN.md, "Storage: files are the truth").

All paths are derived from here so that the library, the CLI, the Dagster assets and the
tests agree on them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_ROOT = "data"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]*$")


def check_name(kind: str, value: str) -> str:
    """Dataset, source and variant names become folder names and partition-key parts."""
    if not _NAME.match(value):
        raise ValueError(f"{kind} name {value!r} must be letters, digits and underscores")
    return value


def default_data_root() -> Path:
    return Path(os.environ.get("GEOCONCEPT_DATA_ROOT", DEFAULT_DATA_ROOT))


def shard_name(index: int) -> str:
    return f"shard-{index:06d}"


@dataclass(frozen=True)
class DataRoot:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # ingest -----------------------------------------------------------------------------
    def staged_table(self, dataset: str, source: str) -> Path:
        """The input CSV/Parquet of one source, normalised to Parquet with row numbers."""
        return self.root / "raw" / dataset / f"{source}.parquet"

    def shards(self, dataset: str, source: str) -> Path:
        """`shard-NNNNNN.tar` + `shard-NNNNNN.parquet` (manifest) per shard."""
        return self.root / "shards" / dataset / source

    def dataset_shards(self, dataset: str) -> Path:
        return self.root / "shards" / dataset

    def tar_index(self, dataset: str) -> Path:
        """Cached indexes of image tars (member name -> tar, offset, size), one Parquet per tar set."""
        return self.root / "raw" / dataset / "tar_index"

    # concepts ---------------------------------------------------------------------------
    def layers(self) -> Path:
        return self.root / "layers"

    def concepts(self) -> Path:
        return self.root / "concepts"

    def labels(self, dataset: str, source: str) -> Path:
        """`shard-NNNNNN.parquet` of concept labels, one per shard."""
        return self.root / "labels" / dataset / source

    # features, training, evaluation -------------------------------------------------------
    def features(self, dataset: str, backbone: str, source: str) -> Path:
        """`shard-NNNNNN.safetensors` of frozen-backbone image features, one per shard."""
        return self.root / "features" / dataset / backbone / source

    def runs(self) -> Path:
        return self.root / "runs"

    def gallery(self) -> Path:
        return self.root / "gallery"

    def evaluation(self) -> Path:
        return self.root / "evaluation"
