#!/usr/bin/env bash
# The prepared script for a borrowed CUDA machine without network access (this workplace's `device`
# tool): PyTorch is there, edgeseg's other training needs travel with the working tree.
#
# Here, before the session (see benchmarks/README.md, "On a borrowed GPU"):
#   python benchmarks/compact_isic.py ../shared/data/isic2018 .gpu-data/isic2018   # ~36 MB instead of 84
#   python benchmarks/encoder_weights.py .gpu-data/lite0-imagenet-encoder.safetensors
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl segmentation-models-pytorch==0.6.0
# There, with .gpu-data and .whl carried:
#   bash benchmarks/device_session.sh gpu-check       # gpu_check.py alone (its record in $OUT)
#   bash benchmarks/device_session.sh check           # gpu_check.py, then a one-epoch probe on ISIC
#   bash benchmarks/device_session.sh train NAME MINUTES [edgeseg train options]
#   bash benchmarks/device_session.sh recipe NAME ENCODER WEIGHTS MINUTES FINETUNE_MINUTES [options]
# recipe trains NAME-base (the default recipe from WEIGHTS, a safetensors encoder) and then NAME-ft, a
# fine-tune of it as the shipped model's was made (per-image Lovasz, lr 1e-4, half the samples
# camera-framed). Two recipes can share the GPU: run `setup` once, then both with WORKERS=7 and `&`.
# Everything it keeps lands in $OUT: the gpu-check report, and the run directories with their logs
# (without checkpoint-last.pt, which only --resume reads) as NAME.tar.part-* (split to fit the tool's
# 16 MiB a file); `cat NAME.tar.part-* | tar x` joins them.
set -uo pipefail
OUT=${OUT:-out/device}
DATA=${DATA:-.gpu-data/isic2018}
ENCODER=.gpu-data/lite0-imagenet-encoder.safetensors
WORKERS=${WORKERS:-12}
# The tool brings back at most 8 files and 64 MiB from $OUT: BASE_WEIGHTS=no leaves a recipe's base
# run's model.safetensors behind (its logs, card and plots still come).
excludes=()
[[ ${BASE_WEIGHTS:-yes} == no ]] && excludes=(--exclude='*-base/model.safetensors')
mkdir -p "$OUT"
# PYTHONSAFEPATH: `python3 -m edgeseg` run from the repo root would otherwise import ./edgeseg, which
# lacks the mapped subpackages (edgeseg.train), ahead of /tmp/src.
export PYTHONPATH=/tmp/src:/tmp/site PYTHONUNBUFFERED=1 PYTHONSAFEPATH=1

setup() {
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    # edgeseg from this tree, laid out as pyproject's package-dir maps it (no build: nothing to fetch one with).
    rm -rf /tmp/src && mkdir -p /tmp/src && cp -r edgeseg /tmp/src/
    for part in train export runtime evaluate models; do ln -s "$PWD/$part" "/tmp/src/edgeseg/$part"; done
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    nproc
    python3 -c "import torch, torchvision, timm, segmentation_models_pytorch as smp, cv2
print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0), '| torchvision',
      torchvision.__version__, '| timm', timm.__version__, '| smp', smp.__version__, '| cv2', cv2.__version__)" || exit 1
}

train() {  # NAME MINUTES [options]: edgeseg train on the compact ISIC copy into /tmp/NAME, logged to /tmp/NAME.log
    local name=$1 minutes=$2
    shift 2
    python3 -m edgeseg train --data "$DATA" --out "/tmp/$name" --backend torch-cuda --time-budget "$minutes" \
        --encoder-weights "$ENCODER" --workers "$WORKERS" --quiet "$@" 2>&1 | tee "/tmp/$name.log"
    return "${PIPESTATUS[0]}"
}

pack() {  # PACK NAME...: the runs and their logs as $OUT/PACK.tar.part-*, without what only --resume reads
    local pack=$1
    shift
    local paths=()
    for name in "$@"; do paths+=("$name" "$name.log"); done
    tar -C /tmp -cf - --exclude=checkpoint-last.pt "${excludes[@]}" "${paths[@]}" | split -b 15M - "$OUT/$pack.tar.part-"
}

recipe() {  # NAME ENCODER WEIGHTS MINUTES FINETUNE_MINUTES [options for both]
    local name=$1 encoder=$2 weights=$3 minutes=$4 finetune_minutes=$5
    shift 5
    train "$name-base" "$minutes" --encoder "$encoder" --encoder-weights "$weights" "$@" &&
        train "$name-ft" "$finetune_minutes" --encoder "$encoder" --encoder-weights "$weights" \
            --init-weights "/tmp/$name-base" --loss lovasz --lr 1e-4 --camera-framing 0.5 "$@"
    local status=$?
    pack "$name" "$name-base" "$name-ft"
    return "$status"
}

gpu_check() {  # at most 8 minutes: its six parts' budgets and start-up (parts 1-4 took 113 s on an H100)
    timeout 480 python3 benchmarks/gpu_check.py --out "$OUT"
    echo "gpu_check exit $?"
}

case "${1:-}" in
    setup)
        setup
        ;;
    gpu-check)
        setup
        gpu_check
        ;;
    check)
        setup
        gpu_check
        timeout 150 python3 -m edgeseg train --data "$DATA" --out /tmp/probe --backend torch-cuda --epochs 1 --batch-size 16 \
            --encoder-weights "$ENCODER" --workers 12 --quiet 2>&1 | tail -n 25
        tail -n 3 /tmp/probe/logs/iterations.csv /tmp/probe/logs/epochs.csv
        ;;
    train)
        shift
        setup
        train "$@"
        status=$?
        pack "$1" "$1"
        exit "$status"
        ;;
    recipe)
        shift
        recipe "$@"
        ;;
    *)
        echo "usage: bash benchmarks/device_session.sh setup | gpu-check | check" \
             "| train NAME MINUTES [edgeseg train options]" \
             "| recipe NAME ENCODER WEIGHTS MINUTES FINETUNE_MINUTES [options] (after setup)" >&2
        exit 2
        ;;
esac
