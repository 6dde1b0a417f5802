"""Training inputs: cached features + coordinates, concept labels, the split, the concept embeddings.

All inputs are checked against each other before a single step runs, one shard at a time:

* feature folder i and label folder i pair their files by shard name, and each pair must hold the
  same sample keys (the error names both files and some differing keys);
* every feature key must appear in the split Parquet (`key`, `split` ∈ train/val/test);
* label columns `concept__<id>` must be concepts of the embedded bank (an unknown id means the
  bank changed after the embeddings were built); bank concepts without a column are text-only
  and stay NaN (= not measured), as do missing values: the supervised loss masks them out;
* if a bank YAML is configured, its sha256 must equal the embeddings' `bank_sha256`.

Memory does not grow with the dataset's features: the training split is kept as a list of shards
with their train rows and only the coordinates (8 bytes a sample) in RAM; `TrainSplit.batches`
reads the features (and labels) shard by shard (safetensors maps the file) while it trains. The
order of an epoch (`epoch_order`) is a function of (seed, epoch) and the shard sizes: shards in a
seeded order, then the rows of each window of consecutive shards holding `shuffle_buffer` samples
shuffled together, like a streaming loader's shard shuffle + shuffle buffer, but computed from row
counts alone, so a resumed run finds its place without reading what came before. The validation
split is small and stays in RAM.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from geoconcept.concepts.embeddings import ConceptEmbeddings, load_concept_embeddings
from geoconcept.errors import ConfigError, InputError
from geoconcept.features import FeatureShard, feature_files, read_feature_shard
from geoconcept.hashing import file_sha256
from geoconcept.train.params import TrainConfig

LABEL_PREFIX = "concept__"
SPLITS = ("train", "val", "test")
_TAKEN = -1  # split code of a key already seen in an earlier feature file


@dataclass(frozen=True)
class Samples:
    keys: list[str]
    features: torch.Tensor  # (N, D) float32
    latlon: torch.Tensor  # (N, 2) float32 degrees
    labels: torch.Tensor | None  # (N, k) float32 in [0, 1], NaN = not measured

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True)
class TrainShard:
    features: Path
    labels: Path | None
    rows: np.ndarray  # the file's training rows, ascending


@dataclass(frozen=True)
class Batch:
    ids: torch.Tensor  # (B,) the global batch: indices into TrainSplit.latlon
    features: torch.Tensor  # (B / world, D) float32, this process's slice of the batch
    labels: torch.Tensor | None  # (B / world, k)


@dataclass(frozen=True)
class TrainSplit:
    shards: list[TrainShard]
    latlon: torch.Tensor  # (N, 2) float32 degrees, every training sample in shard order
    concept_ids: list[str]  # the label columns to read, in model order ([] = no labels)
    prevalence: torch.Tensor | None  # (k,) mean of each concept's measured labels (NaN: never measured)

    def __len__(self) -> int:
        return len(self.latlon)

    @functools.cached_property
    def offsets(self) -> np.ndarray:
        """offsets[s] = index of shard s's first sample; offsets[-1] = N."""
        return np.concatenate([[0], np.cumsum([len(s.rows) for s in self.shards])]).astype(np.int64)

    def batches(
        self, *, seed: int, epoch: int, batch_size: int, buffer: int, start: int = 0, rank: int = 0, world: int = 1
    ) -> Iterator[Batch]:
        """The epoch's full batches from step `start` on. Every process computes the same global
        batch and reads only its own slice's features, one window of shards at a time; a thread
        reads the next window while this one trains (so at most two are in memory)."""
        order, window_ends = epoch_order(seed, epoch, tuple(np.diff(self.offsets).tolist()), buffer)
        steps, width = len(order) // batch_size, batch_size // world
        # positions of the order this process reads, in the order it reads them
        mine = torch.arange(steps * batch_size).view(steps, batch_size)[:, rank * width : (rank + 1) * width]
        mine = mine.reshape(-1)
        reads = _window_reads(torch.searchsorted(mine, torch.tensor(window_ends)).tolist(), start, steps, width)
        with ThreadPoolExecutor(max_workers=1) as pool:

            def submit(i: int) -> Future[tuple[torch.Tensor, torch.Tensor | None]] | None:
                r = reads[i] if i < len(reads) else None
                return pool.submit(self._read, order[mine[r.lo : r.hi]], r.keep) if r else None

            i, future = 0, submit(0)
            lo, features, labels = 0, torch.empty(0, 0), None  # the buffer holds mine[lo:...]
            for step in range(start, steps):
                first = step * width
                if i < len(reads) and reads[i].step == step and future is not None:
                    new_features, new_labels = future.result()
                    keep, i = reads[i].keep, i + 1
                    if keep:  # the old buffer's unused rows go in front
                        new_features[:keep] = features[first - lo : first - lo + keep]
                        if new_labels is not None and labels is not None:
                            new_labels[:keep] = labels[first - lo : first - lo + keep]
                    features, labels, lo = new_features, new_labels, first
                    future = submit(i)  # after the old buffer is let go: two windows in memory at most
                yield Batch(
                    ids=order[step * batch_size : (step + 1) * batch_size],
                    features=features[first - lo : first - lo + width],
                    labels=labels[first - lo : first - lo + width] if labels is not None else None,
                )

    def _read(self, ids: torch.Tensor, keep: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A new buffer: `keep` rows left for the previous buffer's unused rows, then the features
        (and labels) of the samples `ids` in that order, reading each shard once."""
        shard_of = np.searchsorted(self.offsets, ids.numpy(), side="right") - 1
        n = keep + len(ids)
        features = torch.empty(0)
        labels = torch.full((n, len(self.concept_ids)), float("nan")) if self.concept_ids else None
        for s in np.unique(shard_of):
            at = np.flatnonzero(shard_of == s)
            shard = self.shards[s]
            rows = torch.from_numpy(shard.rows[ids[at].numpy() - self.offsets[s]])
            read = read_feature_shard(shard.features)
            if features.numel() == 0:
                features = torch.empty(n, read.features.shape[1])
            where = torch.from_numpy(at + keep)
            features[where] = read.features[rows].float()  # stored features may be fp16
            if labels is not None and shard.labels is not None:
                labels[where] = torch.from_numpy(_read_labels(shard.labels, read, self.concept_ids))[rows]
        return features, labels


@dataclass(frozen=True)
class _WindowRead:
    step: int  # the first step that needs it
    lo: int  # it reads mine[lo:hi] (positions of this process's samples)
    hi: int
    keep: int  # rows of the previous buffer not used yet when it takes over


def _window_reads(ends: list[int], start: int, steps: int, width: int) -> list[_WindowRead]:
    """When each window of shards is read, planned ahead so the next one can be read in the background."""
    reads, hi = [], start * width
    for step in range(start, steps):
        if (step + 1) * width > hi:
            end = hi
            while end < (step + 1) * width:
                end = next(e for e in ends if e > end)
            reads.append(_WindowRead(step, hi, end, hi - step * width))
            hi = end
    return reads


@dataclass(frozen=True)
class TrainingData:
    train: TrainSplit
    val: Samples
    feature_dim: int
    backbone: str  # feature tag, e.g. "ViT-S-32-alt__none"
    backbone_spec: dict[str, str]  # model, pretrained, seed: enough to rebuild the backbone
    backbone_warning: str | None
    concepts: ConceptEmbeddings | None
    labelled_concepts: list[str]  # bank concepts with a label column
    # sha256 of everything a run learns from: the feature, label and split files' bytes and the
    # concept embeddings. Two runs with the same config and the same fingerprint are the same run.
    fingerprint: str


@functools.lru_cache(maxsize=2)
def epoch_order(seed: int, epoch: int, counts: tuple[int, ...], buffer: int) -> tuple[torch.Tensor, list[int]]:
    """The sample order of one epoch (module docstring) and where each shuffle window ends in it.

    Samples are numbered shard after shard (`counts` samples each). A function of its arguments
    only, so a resumed run finds it again; with `buffer` >= the number of samples it is one
    permutation of the whole split.
    """
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    generator = torch.Generator().manual_seed(int(state))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    windows, ends, window, size = [], [], [], 0
    shard_order = torch.randperm(len(counts), generator=generator).tolist()
    for i, s in enumerate(shard_order):
        window.append(torch.arange(offsets[s], offsets[s + 1]))
        size += counts[s]
        if size >= buffer or i == len(shard_order) - 1:
            rows = torch.cat(window)
            windows.append(rows[torch.randperm(len(rows), generator=generator)])
            ends.append((ends[-1] if ends else 0) + len(rows))
            window, size = [], 0
    return (torch.cat(windows) if windows else torch.empty(0, dtype=torch.long)), ends


def check_bank(embeddings: ConceptEmbeddings, bank_path: str | Path) -> None:
    """The bank YAML must be the one the embeddings were built from.

    Compared by the sha256 of the file's bytes, which is how `geoconcept.concepts.bank` defines it.
    """
    bank_path = Path(bank_path)
    try:
        sha = file_sha256(bank_path)
    except FileNotFoundError:
        raise ConfigError(f"concept bank {bank_path} not found") from None
    info = embeddings.info
    if sha != info.bank_sha256:
        raise ConfigError(
            f"concept bank {bank_path} changed since the concept embeddings {info.path} were built "
            f"(bank sha256 {sha[:12]}…, embeddings built from {info.bank_sha256[:12]}…): rebuild the embeddings"
        )


def _read_labels(path: Path, features: FeatureShard, concept_ids: list[str]) -> np.ndarray:
    """(N, k) labels of one shard in the feature file's key order."""
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"labels file {path} is not readable Parquet ({exc})") from None
    if "key" not in table.column_names:
        raise InputError(f"labels file {path} has no 'key' column")
    keys = [str(k) for k in table.column("key").to_pylist()]
    if len(set(keys)) != len(keys):
        raise InputError(f"labels file {path} repeats sample keys")
    if set(keys) != set(features.keys):
        only_f = sorted(set(features.keys) - set(keys))
        only_l = sorted(set(keys) - set(features.keys))
        raise InputError(
            f"features {features.path} ({len(features.keys)} samples) and labels {path} ({len(keys)} samples) "
            f"do not hold the same keys: {len(only_f)} only in the features (e.g. {only_f[:3]}), "
            f"{len(only_l)} only in the labels (e.g. {only_l[:3]})"
        )
    columns = [c for c in table.column_names if c.startswith(LABEL_PREFIX)]
    unknown = sorted(c.removeprefix(LABEL_PREFIX) for c in columns if c.removeprefix(LABEL_PREFIX) not in concept_ids)
    if unknown:
        raise ConfigError(
            f"labels {path} have concepts that the concept embeddings do not ({unknown[:5]}): the concept bank "
            "changed after the embeddings or the labels were built; rebuild both"
        )
    position = {k: j for j, k in enumerate(keys)}
    order = np.array([position[k] for k in features.keys], dtype=np.int64)
    labels = np.full((len(keys), len(concept_ids)), np.nan, dtype=np.float32)
    for column in columns:
        values = table.column(column).to_numpy(zero_copy_only=False).astype(np.float32)
        bad = ~np.isnan(values) & ((values < 0) | (values > 1))
        if bad.any():
            raise InputError(
                f"labels {path}: column {column} has values outside [0, 1] (e.g. {values[bad][:3].tolist()})"
            )
        labels[:, concept_ids.index(column.removeprefix(LABEL_PREFIX))] = values[order]
    return labels


def _read_split(path: Path) -> dict[str, int]:
    """key → index into SPLITS (small ints: 2M keys cost ~200 MB here, and only while loading)."""
    try:
        table = pq.read_table(path, columns=["key", "split"])
    except FileNotFoundError:
        raise InputError(f"split file {path} not found") from None
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"split file {path} must be Parquet with columns key, split ({exc})") from None
    encoded = table.column("split").combine_chunks().dictionary_encode()
    names = [str(s) for s in encoded.dictionary.to_pylist()]
    unknown = sorted(set(names) - set(SPLITS))
    if unknown:
        raise InputError(f"split file {path} has unknown split values {unknown} (expected {', '.join(SPLITS)})")
    codes = np.array([SPLITS.index(n) for n in names])[encoded.indices.to_numpy(zero_copy_only=False)]
    keys = table.column("key").to_pylist()
    mapping = dict(zip(map(str, keys), codes.tolist(), strict=True))
    if len(mapping) != len(keys):
        raise InputError(f"split file {path} lists some keys more than once")
    return mapping


def _backbone_identity(shard: FeatureShard) -> tuple[str, ...]:
    """What must agree between feature files (a file from before `precision` was recorded is fp32)."""
    meta = shard.metadata
    return meta["model"], meta["pretrained"], meta["dim"], meta["normalized"], meta.get("precision", "fp32")


def _split_codes(shard: FeatureShard, split: dict[str, int], split_path: str) -> np.ndarray:
    """Each row's split (index into SPLITS); marks the keys as seen, so a key in two files is an error."""
    codes = np.array([split.get(k, -2) for k in shard.keys], dtype=np.int64)
    missing = [k for k, c in zip(shard.keys, codes, strict=True) if c == -2]
    if missing:
        raise InputError(
            f"{len(missing)} samples of {shard.path} are not in the split file {split_path} (e.g. {missing[:3]})"
        )
    if (codes == _TAKEN).any():
        raise InputError("the same sample key appears in more than one feature file")
    for k in shard.keys:
        split[k] = _TAKEN
    return codes


def load_training_data(config: TrainConfig) -> TrainingData:
    """Check every input and keep what training needs (module docstring), one feature file at a time."""
    concepts = None
    if config.concept_embeddings is not None and config.variant != "geoclip":
        concepts = load_concept_embeddings(config.concept_embeddings)
        if config.concept_bank is not None:
            check_bank(concepts, config.concept_bank)
    concept_ids = concepts.info.concept_ids if concepts else []
    use_labels = bool(config.labels) and concepts is not None
    split = _read_split(Path(config.split))
    digest = hashlib.sha256(file_sha256(config.split).encode())
    if concepts is not None:
        digest.update(concepts.embeddings.contiguous().numpy().tobytes())

    shards: list[TrainShard] = []
    coords: list[torch.Tensor] = []
    known_sum, known_count = np.zeros(len(concept_ids)), np.zeros(len(concept_ids))
    val: list[Samples] = []
    first: FeatureShard | None = None
    labelled: set[str] = set()
    for i, folder in enumerate(config.features):
        files = feature_files(folder)
        if not files:
            raise InputError(f"no feature files (shard-*.safetensors) in {folder}")
        for path in files:
            shard = read_feature_shard(path)
            if first is None:  # its metadata, not its features
                first = dataclasses.replace(shard, features=torch.empty(0, shard.features.shape[1]))
            elif _backbone_identity(shard) != _backbone_identity(first):
                raise InputError(
                    f"feature files come from different backbones: {first.path} has (model, pretrained, dim, "
                    f"normalized, precision) = {_backbone_identity(first)}, {path} has {_backbone_identity(shard)}"
                )
            codes = _split_codes(shard, split, config.split)
            digest.update(f"{path.name} {file_sha256(path)}\n".encode())
            label_path, labels = None, None
            if use_labels:
                label_path = Path(config.labels[i]) / (path.name.removesuffix(".safetensors") + ".parquet")
                if not label_path.exists():
                    raise InputError(f"no labels for features {path}: expected {label_path}")
                labels = _read_labels(label_path, shard, concept_ids)
                names = pq.read_schema(label_path).names
                labelled |= {c.removeprefix(LABEL_PREFIX) for c in names if c.startswith(LABEL_PREFIX)}
                digest.update(f"{label_path.name} {file_sha256(label_path)}\n".encode())
            rows = np.flatnonzero(codes == SPLITS.index("train"))
            if len(rows):
                shards.append(TrainShard(path, label_path, rows))
                coords.append(shard.latlon[rows].float())
                if labels is not None:
                    known_sum += np.nansum(labels[rows], axis=0)
                    known_count += (~np.isnan(labels[rows])).sum(axis=0)
            v = np.flatnonzero(codes == SPLITS.index("val"))
            val.append(
                Samples(
                    [shard.keys[j] for j in v],
                    shard.features[v].float(),
                    shard.latlon[v].float(),
                    torch.from_numpy(labels[v]) if labels is not None else None,
                )
            )
    assert first is not None  # config.features is never empty (params)
    dim = int(first.features.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        prevalence = torch.from_numpy(known_sum / known_count).float() if use_labels else None
    return TrainingData(
        train=TrainSplit(
            shards, torch.cat(coords) if coords else torch.empty(0, 2), concept_ids if use_labels else [], prevalence
        ),
        val=Samples(
            keys=[k for v in val for k in v.keys],
            features=torch.cat([v.features for v in val]) if val else torch.empty(0, dim),
            latlon=torch.cat([v.latlon for v in val]),
            labels=torch.cat([v.labels for v in val]) if use_labels else None,  # type: ignore[misc]
        ),
        feature_dim=dim,
        backbone=first.metadata["backbone_tag"],
        backbone_spec={
            k: first.metadata.get(f, "")
            for k, f in [("model", "model"), ("pretrained", "pretrained"), ("seed", "backbone_seed")]
        },
        backbone_warning=first.metadata.get("warning") or None,
        concepts=concepts,
        labelled_concepts=[c for c in concept_ids if c in labelled],
        fingerprint=digest.hexdigest(),
    )
