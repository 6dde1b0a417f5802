"""Concept embeddings: each concept's prompts through an open_clip text tower, L2-normalised,
averaged, re-normalised → a k×d float32 matrix in bank order.

Saved with safetensors (byte-stable, atomic): tensor `embeddings` (k×d) and string metadata
`concept_ids` (JSON list, bank order), `bank_sha256`, `bank_version`, `model`, `pretrained`
(`"none"` for random init, else the tag or checkpoint path) and `pretrained_weights_loaded`
(`"true"`/`"false"`).

Offline there are no pretrained text weights unless a local checkpoint file is given: the model is
then created with a fixed torch seed (so the random initialisation, and the embeddings, are the
same on every run) and the result says so (`EmbeddingInfo.warning`, logged too). A hub tag is
tried as open_clip would, and fails offline with a clear error.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from geoconcept.concepts.bank import ConceptBank
from geoconcept.errors import ConfigError, GeoconceptError, InputError
from geoconcept.layout import DataRoot, default_data_root
from geoconcept.model.tensor_files import read_tensors, require_metadata, save_tensors

log = logging.getLogger(__name__)

DEFAULT_MODEL = "ViT-B-32"
EMBEDDINGS_FILE = "embeddings.safetensors"
TENSOR = "embeddings"
SEED = 0
BATCH = 64
RANDOM_INIT_WARNING = "no pretrained text weights: the concept embeddings come from a randomly initialised text tower"
METADATA_KEYS = ["concept_ids", "bank_sha256", "bank_version", "model", "pretrained", "pretrained_weights_loaded"]
WHAT = "concept embeddings"


@dataclass(frozen=True)
class EmbeddingInfo:
    path: Path
    concept_ids: list[str]
    dim: int
    model: str
    pretrained: str  # "none", a tag, or a checkpoint path
    pretrained_weights_loaded: bool
    bank_sha256: str
    bank_version: str
    warning: str | None = None

    def metadata(self) -> dict[str, str]:
        """The safetensors metadata (all strings)."""
        return {
            "concept_ids": json.dumps(self.concept_ids),
            "bank_sha256": self.bank_sha256,
            "bank_version": self.bank_version,
            "model": self.model,
            "pretrained": self.pretrained,
            "pretrained_weights_loaded": "true" if self.pretrained_weights_loaded else "false",
        }


@dataclass(frozen=True)
class ConceptEmbeddings:
    embeddings: torch.Tensor  # k×d float32, rows in `info.concept_ids` order
    info: EmbeddingInfo


def default_embeddings_path(data_root: str | os.PathLike[str] | None = None) -> Path:
    return DataRoot(Path(data_root) if data_root is not None else default_data_root()).concepts() / EMBEDDINGS_FILE


def _create_model(model_name: str, pretrained: str | None, seed: int) -> torch.nn.Module:
    import open_clip  # heavy: only when embedding

    if model_name not in open_clip.list_models():
        raise ConfigError(f"unknown open_clip model {model_name!r} (e.g. ViT-B-32, ViT-L-14, RN50)")
    if pretrained is not None and not Path(pretrained).is_file():
        if os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors")):
            raise ConfigError(f"pretrained checkpoint file {pretrained} not found")
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if pretrained not in tags:
            raise ConfigError(
                f"{pretrained!r} is neither a checkpoint file nor a pretrained tag of {model_name} (tags: {tags})"
            )
    # The random initialisation draws from torch's global generator: seed it, without disturbing
    # the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = open_clip.create_model(model_name, pretrained=pretrained, device="cpu")
        except Exception as exc:  # download failures, bad checkpoints: open_clip raises many types
            raise ConfigError(
                f"could not load pretrained weights {pretrained!r} for {model_name}: {exc} "
                "(offline, pass a local checkpoint file path instead of a hub tag)"
            ) from exc
    return model.eval()


def encode_prompts(model: torch.nn.Module, tokenizer, prompts: list[str]) -> torch.Tensor:
    """L2-normalised text embeddings of `prompts` (n×d float32)."""
    parts = []
    with torch.inference_mode():
        for start in range(0, len(prompts), BATCH):
            features = model.encode_text(tokenizer(prompts[start : start + BATCH]))
            parts.append(torch.nn.functional.normalize(features.float(), dim=-1))
    return torch.cat(parts)


def embed_concepts(
    bank: ConceptBank,
    model_name: str = DEFAULT_MODEL,
    pretrained: str | os.PathLike[str] | None = None,
    out_path: str | os.PathLike[str] | None = None,
    *,
    seed: int = SEED,
) -> EmbeddingInfo:
    """Embed every concept of `bank` and save the k×d matrix (default: the data root's
    `concepts/embeddings.safetensors`)."""
    import open_clip

    pretrained = None if pretrained is None else str(pretrained)
    out = Path(out_path) if out_path is not None else default_embeddings_path()
    existing = _up_to_date(out, bank, model_name, pretrained, seed)
    if existing is not None:
        return existing
    model = _create_model(model_name, pretrained, seed)
    try:
        tokenizer = open_clip.get_tokenizer(model_name)
    except Exception as exc:  # tokenizers fetched from a hub fail offline
        raise ConfigError(f"could not load the tokenizer of {model_name} (offline?): {exc}") from exc
    prompts = [p for concept in bank for p in concept.prompts]
    features = encode_prompts(model, tokenizer, prompts)
    rows, start = [], 0
    for concept in bank:
        stop = start + len(concept.prompts)
        rows.append(features[start:stop].mean(dim=0))
        start = stop
    embeddings = torch.nn.functional.normalize(torch.stack(rows), dim=-1).contiguous()
    loaded = pretrained is not None
    info = EmbeddingInfo(
        path=out,
        concept_ids=bank.ids,
        dim=int(embeddings.shape[1]),
        model=model_name,
        pretrained=pretrained if loaded else "none",
        pretrained_weights_loaded=loaded,
        bank_sha256=bank.sha256,
        bank_version=bank.version,
        warning=None if loaded else RANDOM_INIT_WARNING,
    )
    if info.warning:
        log.warning(info.warning)
    save_tensors(out, {TENSOR: embeddings}, info.metadata())
    return info


def _up_to_date(
    out: Path, bank: ConceptBank, model_name: str, pretrained: str | None, seed: int
) -> EmbeddingInfo | None:
    """The existing file's info if it already embeds this bank with this text tower, else None.

    Only for the default seed and for weights named by a tag (a local checkpoint file may have
    changed under the same path: then the embeddings are always recomputed)."""
    if not out.exists() or seed != SEED or (pretrained is not None and Path(pretrained).exists()):
        return None
    try:
        info = load_concept_embeddings(out).info
    except GeoconceptError:
        return None
    same = (info.bank_sha256, info.concept_ids, info.model, info.pretrained) == (
        bank.sha256,
        bank.ids,
        model_name,
        pretrained or "none",
    )
    return info if same else None


def load_concept_embeddings(path: str | os.PathLike[str], bank: ConceptBank | None = None) -> ConceptEmbeddings:
    """Read concept embeddings; with `bank`, ConfigError if they were built from another bank."""
    path = Path(path)
    tensors, metadata = read_tensors(path, WHAT)
    require_metadata(metadata, METADATA_KEYS, path, WHAT)
    if TENSOR not in tensors:
        raise InputError(f"{WHAT} {path} has no tensor {TENSOR!r} (has: {sorted(tensors)})")
    embeddings = tensors[TENSOR]
    try:
        concept_ids = json.loads(metadata["concept_ids"])
    except json.JSONDecodeError as exc:
        raise InputError(f"{WHAT} {path}: metadata 'concept_ids' is not valid JSON ({exc})") from None
    if embeddings.ndim != 2 or embeddings.shape[0] != len(concept_ids):
        raise InputError(
            f"{WHAT} {path}: tensor shape {tuple(embeddings.shape)} does not match {len(concept_ids)} concept ids"
        )
    loaded = metadata["pretrained_weights_loaded"] == "true"
    info = EmbeddingInfo(
        path=path,
        concept_ids=concept_ids,
        dim=int(embeddings.shape[1]),
        model=metadata["model"],
        pretrained=metadata["pretrained"],
        pretrained_weights_loaded=loaded,
        bank_sha256=metadata["bank_sha256"],
        bank_version=metadata["bank_version"],
        warning=None if loaded else RANDOM_INIT_WARNING,
    )
    if bank is not None:
        check_matches_bank(info, bank)
    return ConceptEmbeddings(embeddings=embeddings, info=info)


def check_matches_bank(info: EmbeddingInfo, bank: ConceptBank) -> None:
    """ConfigError if embeddings were built from another bank than `bank` (content or ids)."""
    rebuild = "rebuild them with embed_concepts / `geoconcept concepts embed`"
    if info.bank_sha256 != bank.sha256:
        raise ConfigError(
            f"{WHAT} {info.path} were built from bank version {info.bank_version} "
            f"(sha256 {info.bank_sha256[:12]}), but the bank {bank.path} is version {bank.version} "
            f"(sha256 {bank.sha256[:12]}): the bank changed; {rebuild}"
        )
    if info.concept_ids != bank.ids:
        missing = [i for i in bank.ids if i not in info.concept_ids]
        extra = [i for i in info.concept_ids if i not in bank.ids]
        raise ConfigError(
            f"{WHAT} {info.path} have other concept ids than the bank {bank.path} "
            f"(missing {missing[:5]}, extra {extra[:5]}, or a different order); {rebuild}"
        )
