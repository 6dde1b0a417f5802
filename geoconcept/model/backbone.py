"""The frozen open_clip image backbone whose features are cached per shard.

Real runs use GeoCLIP's choice, ViT-L-14 with OpenAI weights (`pretrained="openai"` when the
weights are in the local open_clip/Hugging Face cache, or a local checkpoint file). Offline, with
`pretrained=None`, the backbone is randomly initialised from a fixed seed, so its features are
reproducible but carry no learned image semantics: `Backbone.warning` says so, and the warning
travels with every result built on it. The embedded demo uses the fast `ViT-S-32-alt`.

Precision (`fp32`, `bf16`, `fp16`) is open_clip's own mixed precision, as OpenAI's CLIP ran:
the matmul/conv weights and the images are cast to the low-precision type, LayerNorm computes in
fp32. On a random ViT-S-32-alt every image's bf16 feature stays within cosine 0.9999 of its fp32
feature (tests/test_features_fidelity.py checks >= 0.999); we take the library's supported path
over casting every module ourselves.
"""

from __future__ import annotations

import difflib
import os
import pickle
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from geoconcept.errors import ConfigError
from geoconcept.hashing import file_sha256

DEFAULT_MODEL = "ViT-L-14"
DEFAULT_PRETRAINED = "openai"
DEMO_MODEL = "ViT-S-32-alt"
RANDOM_WEIGHTS_WARNING = "no pretrained image weights: features come from a randomly initialised backbone"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
ALLOW_DOWNLOADS_ENV = "GEOCONCEPT_ALLOW_DOWNLOADS"  # "1": a hub tag not in the local cache may be downloaded
LOCAL_WEIGHTS_ENV = "GEOCONCEPT_BACKBONE_WEIGHTS"  # a local open_clip file standing in for a recorded hub tag


def _require_cached(model_name: str, tag: str) -> None:
    """Nothing downloads at run time unless allowed: a hub tag's weights must be in the local cache."""
    if os.environ.get(ALLOW_DOWNLOADS_ENV) == "1":
        return
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    repo, filename = os.path.split(cfg.get("hf_hub", ""))
    names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    if repo and any(isinstance(try_to_load_from_cache(repo, name), str) for name in names):
        return
    raise ConfigError(
        f"backbone {model_name} {tag!r} weights are not in the local cache and downloads are off: "
        f"set {LOCAL_WEIGHTS_ENV}=/path/to/{model_name}.pt (a local open_clip checkpoint), "
        f"or {ALLOW_DOWNLOADS_ENV}=1 to download them"
    )


PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def default_precision(device: str | torch.device) -> str:
    """bf16 on CUDA (tensor cores; ~1.7x fp32 end to end), fp32 elsewhere (CPU bf16 is not always faster)."""
    return "bf16" if torch.device(device).type == "cuda" else "fp32"


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def backbone_tag(model_name: str, pretrained: str | None, seed: int = 0) -> str:
    """Filesystem-safe name of a backbone + weights, e.g. `ViT-B-32__none`, `ViT-L-14__openai`.

    A local checkpoint becomes `local-<file stem>`; a random init with a seed other than 0 gets
    `-s<seed>` (its features differ).
    """
    if pretrained is None or pretrained == "none":
        weights = "none" if seed == 0 else f"none-s{seed}"
    elif Path(pretrained).suffix and Path(pretrained).exists():
        weights = "local-" + Path(pretrained).stem
    else:
        weights = pretrained
    return f"{_UNSAFE.sub('_', model_name)}__{_UNSAFE.sub('_', weights)}"


@dataclass
class Backbone:
    model_name: str
    pretrained: str  # "none", an open_clip tag, or the resolved path of a local checkpoint
    weights_loaded: bool
    seed: int  # of the random init; irrelevant when weights are loaded
    image_size: int
    dim: int
    tag: str
    network: nn.Module
    preprocess: Callable[[Image.Image], torch.Tensor]
    device: torch.device
    weights_sha256: str | None = None  # of a local checkpoint file
    precision: str = "fp32"  # a PRECISIONS key: the dtype of the weights' matmuls and of the images
    compiled: bool = False  # the image tower runs through torch.compile

    def __post_init__(self) -> None:
        visual = self.network.visual
        # torch.compile pays off on long runs only (minutes of compilation, then ~1.4x on a GPU);
        # dynamic=False because extraction pads every batch to one size when compiled.
        self._forward = torch.compile(visual, dynamic=False) if self.compiled else visual

    @property
    def warning(self) -> str | None:
        return None if self.weights_loaded else RANDOM_WEIGHTS_WARNING

    @classmethod
    def create(
        cls,
        model_name: str,
        pretrained: str | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        precision: str | None = None,
        compile: bool = False,
    ) -> Backbone:
        """An open_clip model in eval mode: `pretrained` is None (random), a tag, or a local file.

        `precision` None means the device's default (`default_precision`).
        """
        import open_clip  # heavy: only when a backbone is actually built

        precision = check_precision(precision or default_precision(device))

        if model_name not in open_clip.list_models():
            close = difflib.get_close_matches(model_name, open_clip.list_models(), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"unknown open_clip model {model_name!r}{hint}")
        weights_sha = None
        if pretrained in (None, "none"):
            pretrained = None
        elif Path(pretrained).suffix or "/" in pretrained:
            path = Path(pretrained).expanduser().resolve()
            if not path.is_file():
                raise ConfigError(f"backbone checkpoint {path} not found")
            pretrained = str(path)
            weights_sha = file_sha256(path)
        elif pretrained in open_clip.list_pretrained_tags_by_model(model_name):
            _require_cached(model_name, pretrained)
        # Random init draws from the global RNG: fork it so that creating a backbone neither
        # depends on nor disturbs the caller's random state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                network, _, preprocess = open_clip.create_model_and_transforms(
                    model_name, pretrained=pretrained, device=device, precision=precision
                )
            except RuntimeError as exc:
                raise ConfigError(
                    f"could not load weights {pretrained!r} for {model_name} ({exc}); offline, give a local "
                    "checkpoint path or pretrained=None"
                ) from None
            except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, KeyError) as exc:
                # torch.load(weights_only=True) on a file that is not a checkpoint (or a truncated one)
                raise ConfigError(
                    f"backbone checkpoint {pretrained} is not a readable open_clip checkpoint ({type(exc).__name__})"
                ) from None
        network.eval().requires_grad_(False)
        size = network.visual.image_size
        return cls(
            model_name=model_name,
            pretrained=pretrained or "none",
            weights_loaded=pretrained is not None,
            seed=seed,
            image_size=int(size[0] if isinstance(size, tuple | list) else size),
            dim=int(network.visual.output_dim),
            tag=backbone_tag(model_name, pretrained, seed),
            network=network,
            preprocess=preprocess,
            device=torch.device(device),
            weights_sha256=weights_sha,
            precision=precision,
            compiled=compile,
        )

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], device: str | torch.device = "cpu") -> Backbone:
        """The backbone a checkpoint's features came from (its `backbone_model/_pretrained/_seed` metadata)."""
        name = metadata.get("backbone_model")
        if not name:
            raise ConfigError("the checkpoint does not record its backbone (backbone_model metadata is empty)")
        pretrained = metadata.get("backbone_pretrained") or None
        if pretrained not in (None, "none") and not Path(pretrained).suffix and os.environ.get(LOCAL_WEIGHTS_ENV):
            pretrained = os.environ[LOCAL_WEIGHTS_ENV]  # the user's copy of the recorded hub weights
        return cls.create(name, pretrained, device=device, seed=int(metadata.get("backbone_seed") or 0))

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]

    @torch.inference_mode()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Preprocessed images (N, 3, H, W) → features (N, dim) on the device, in the compute dtype.

        No synchronisation with the host: the copy is non-blocking (pinned `images` overlap it
        with compute) and the result stays on the device.
        """
        return self._forward(images.to(self.device, non_blocking=True).to(self.dtype))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Preprocessed images (N, 3, H, W) → image features (N, dim), float32 on the CPU, not normalised."""
        return self.embed(images).float().cpu()
