#!/usr/bin/env bash
# The GPU check of issue 10 (benchmarks/gpu_check.py): builds synthetic JPEG shards, measures
# feature extraction (forward alone, end to end fp32/bf16, bf16 + compile vs the roofline) with a
# random ViT-L-14 and the trainer's samples/s, prints one table. A few minutes on one H200.
#
# For a GPU machine with Python 3.12 + torch (+ torchvision matching it) and no network: carry
# this repository and a wheels/ folder (or WHEELS=/path) holding, for cp312 / manylinux x86_64:
#   open_clip_torch timm huggingface_hub ftfy wcwidth regex safetensors webdataset braceexpand
#   PyYAML pyarrow tqdm filelock fsspec packaging httpx2 httpcore2 h11 anyio sniffio idna trio
#   outcome attrs sortedcontainers truststore
# (what `import open_clip, webdataset, safetensors, pyarrow` pulls in beside torch/torchvision/
# pillow/numpy with the pins of constraints.txt; torchvision too if the machine lacks it), e.g.
#   pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --platform manylinux_2_28_x86_64 -d wheels <the names above, pinned as in constraints.txt>
# Usage: benchmarks/gpu_check.sh [--cpu-smoke] [--model NAME] [--shards N] [--per-shard N] ...
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if ! "$python" -c "import open_clip, webdataset, safetensors, pyarrow" 2>/dev/null; then
    wheels=${WHEELS:-wheels}
    if ! compgen -G "$wheels/*.whl" >/dev/null; then
        echo "gpu_check: open_clip/webdataset/safetensors/pyarrow are not importable and $wheels/ has no wheels" >&2
        exit 2
    fi
    "$python" -m pip install --quiet --no-deps --no-index "$wheels"/*.whl
fi
export HF_HUB_OFFLINE=1 # random init only: nothing is downloaded
exec "$python" -m benchmarks.gpu_check "$@"
