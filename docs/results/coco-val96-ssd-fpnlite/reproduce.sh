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

FOLDER="$SHARED/data/coco-train2017-128/images"

# 1. L-MSFC, its no-context variant and TA-MSF on the features of the 128 unlabelled train2017 images (112 train,
#    16 validate). Latent width 32 instead of the reference 128/192 and a few hundred steps per quality (CPU-only
#    training: one 2-core session for everything); each quality starts from the one below it. onnxruntime gives
#    no gradients, so TA-MSF trains with the rate-distortion loss alone.
train() {  # method quality lambda steps [extra...]
  $BIN/fcmbench train "$1" --quality "$2" --lmbda "$3" --steps "$4" "${@:5}" --task-model $TASK \
    --image-folder "$FOLDER" --latent 32 --batch-size 2 --lr 2e-3 --threads 1 --out "$CKPT"
}
chain() {  # method [extra...]
  train "$1" 1 512 600 "${@:2}"
  train "$1" 2 2048 300 --init "$CKPT/$1/$TASK/q1.pt" "${@:2}"
  train "$1" 3 8192 300 --init "$CKPT/$1/$TASK/q2.pt" "${@:2}"
  train "$1" 4 32768 300 --init "$CKPT/$1/$TASK/q3.pt" "${@:2}"
}

# 2. ELIC and LIC-TCM on the tiled feature mosaics of the same images, at the embedded default's reduced widths
#    (ELIC N/M 16/40, LIC-TCM 8/32; the references are 192/320 and 128/320), the embedded default's five λ, each
#    from the one below. tiled() takes the steps of quality 1 and of the others (LIC-TCM's windowed attention
#    costs about 4x ELIC's time per step here).
tiled() {  # method first-steps next-steps size...
  local method=$1 first=$2 next=$3 point q
  shift 3
  $BIN/fcmbench train "$method" --quality 1 --lmbda 0.05 --steps "$first" "$@" --task-model $TASK \
    --image-folder "$FOLDER" --batch-size 4 --lr 1e-3 --threads 1 --out "$CKPT"
  for point in 2:0.13 3:0.32 4:0.8 5:2; do
    q=${point%%:*}
    $BIN/fcmbench train "$method" --quality "$q" --lmbda "${point##*:}" --steps "$next" "$@" --task-model $TASK \
      --init "$CKPT/$method/$TASK/q$((q - 1)).pt" --image-folder "$FOLDER" --batch-size 4 --lr 1e-3 --threads 1 \
      --out "$CKPT"
  done
}

# 3. The image codecs ELIC and LIC-TCM on the images themselves (128-pixel crops), at the reference λ of
#    qualities 3..6, the same reduced widths; steps of quality 3 and of the others as for tiled().
image_codec() {  # method first-steps next-steps size...
  local method=$1 first=$2 next=$3 q
  shift 3
  $BIN/fcmbench train "$method" --quality 3 --steps "$first" "$@" --image-folder "$FOLDER" --batch-size 4 \
    --lr 1e-3 --threads 1 --out "$CKPT"
  for q in 4 5 6; do
    $BIN/fcmbench train "$method" --quality "$q" --steps "$next" "$@" --init "$CKPT/$method/images/q$((q - 1)).pt" \
      --image-folder "$FOLDER" --batch-size 4 --lr 1e-3 --threads 1 --out "$CKPT"
  done
}

# 4. MFIBA on each: the per-level task loss-rate model on 40 of the unlabelled images, measured against the
#    uncompressed detector's own detections scoring >= 0.5 (no labels there), then the importance predictor.
mfiba() {  # method
  $BIN/fcmbench fit-rate-model "$1" --task-model $TASK --image-folder "$FOLDER" --images 40 --threads 1 \
    --out "$CKPT"
  $BIN/fcmbench train "$1" --task-model $TASK --image-folder "$FOLDER" --steps 600 --lr 1e-3 --threads 1 \
    --out "$CKPT"
}

jobs=()
chain lmsfc & jobs+=($!)
chain lmsfc-nocm & jobs+=($!)
chain tamsf --no-task-loss & jobs+=($!)
{ tiled elic-feat 1000 300 --width 16 --latent 40 && mfiba mfiba-elic; } & jobs+=($!)
{ tiled tcm-feat 400 200 --width 8 --latent 32 && mfiba mfiba-tcm; } & jobs+=($!)
image_codec elic 1000 300 --width 16 --latent 40 & jobs+=($!)
image_codec tcm 600 300 --width 8 --latent 32 & jobs+=($!)
for job in "${jobs[@]}"; do wait "$job"; done  # any failed training stops the script here

# 5. Every method on the 96 val images, then the report against the VVC feature anchor.
$BIN/fcmbench run --methods all --dataset coco --images "$SHARED/data/coco-val2017-96/images" \
  --annotations "$SHARED/data/coco-val2017-96/instances.json" --task-model $TASK --checkpoints "$CKPT" \
  --vvenc-preset faster --workers 2 --out "$RUN"
# --monotone: BD-rate on each curve's monotone envelope, the dropped points named in the table
$BIN/fcmbench report --out "$OUT" "$RUN" --anchor vtm-feature --monotone
