#!/usr/bin/env bash
# Reproduces docs/results/coco-val96-ssd-fpnlite: every method on 96 real COCO val2017 images with the COCO-trained
# SSD MobileNetV2 FPN-lite (int8 ONNX), split where its five 128-channel FPN levels enter the heads.
# Run from the checkout after `make install`; SHARED points at the folder holding data/ and models/.
# The learned codecs' checkpoints go to $CKPT (outside the repository).
set -euo pipefail
SHARED=${SHARED:-../shared}
CKPT=${CKPT:-runs/ssd-checkpoints}
RUN=${RUN:-runs/coco-val96-ssd-fpnlite}
OUT=${OUT:-docs/results/coco-val96-ssd-fpnlite}
BIN=.venv/bin
TASK=ssd_mobilenet_fpnlite
export FCMBENCH_SSD_ONNX=$SHARED/models/ssd-mobilenet-v2-fpnlite-256-coco/ssd_mobilenet_v2_fpnlite_10_256_int8.onnx

# 1. Learned codecs on the features of the 128 unlabelled train2017 images (112 train, 16 validate). Latent width
#    32 instead of the reference 128/192 (CPU-only training); each quality starts from the one below it.
#    onnxruntime gives no gradients, so TA-MSF trains with the rate-distortion loss alone (--no-task-loss).
train() {  # method quality lambda steps [extra...]
  $BIN/fcmbench train "$1" --quality "$2" --lmbda "$3" --steps "$4" "${@:5}" --task-model $TASK \
    --image-folder "$SHARED/data/coco-train2017-128/images" --latent 32 --batch-size 2 --lr 2e-3 --threads 1 \
    --out "$CKPT"
}
chain() {  # method [extra...]
  train "$1" 1 512 800 "${@:2}"
  train "$1" 2 2048 400 --init "$CKPT/$1/$TASK/q1.pt" "${@:2}"
  train "$1" 3 8192 400 --init "$CKPT/$1/$TASK/q2.pt" "${@:2}"
  train "$1" 4 32768 400 --init "$CKPT/$1/$TASK/q3.pt" "${@:2}"
}
chain lmsfc & chain lmsfc-nocm & chain tamsf --no-task-loss & wait

# 2. Every method on the 96 val images, then the report against the VVC feature anchor.
$BIN/fcmbench run --methods all --dataset coco --images "$SHARED/data/coco-val2017-96/images" \
  --annotations "$SHARED/data/coco-val2017-96/instances.json" --task-model $TASK --checkpoints "$CKPT" \
  --vvenc-preset faster --workers 2 --out "$RUN"
$BIN/fcmbench report --out "$OUT" "$RUN" --anchor vtm-feature
