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
BIN=${BIN:-.venv/bin}  # a wrapper folder can bound each command (e.g. `timeout`)
TASK=ssd_mobilenet_fpnlite
export FCMBENCH_SSD_ONNX=$SHARED/models/ssd-mobilenet-v2-fpnlite-256-coco/ssd_mobilenet_v2_fpnlite_10_256_int8.onnx

FOLDER="$SHARED/data/coco-train2017-128/images"
THREADS=${THREADS:-1}  # torch threads per training job: train_all runs seven at once on two cores

# Every learned codec: `fcmbench train METHOD --ladder "q:λ ..."`: a base network trained at one quality (into
# $CKPT/base), then its qualities fine-tuned in a chain outward from it for the same number of steps each at their own
# λ: the base quality from the base, each higher quality from the one below it, each lower quality from the one above
# it. Fine-tuning every quality from the base alone left the tiled codecs' and LIC-TCM's rates within 0.06 bpp of the
# base for a 100x range of λ, so their qualities crossed and no BD-rate could be computed; the chain lets the far
# qualities drift for several fine-tunes. Resumable: a checkpoint that exists is kept (delete it to retrain it), and an
# interrupted training continues from its own resume file, so a stage can be stopped and restarted at any time.
ladder() {  # method "q:λ ..." base-quality base-steps base-lr steps-each lr-each [train options...]
  $BIN/fcmbench train "$1" --ladder "$2" --base-quality "$3" --base-steps "$4" --base-lr "$5" --steps "$6" --lr "$7" \
    "${@:8}" --out "$CKPT"
}
FEATURES=(--task-model $TASK --image-folder "$FOLDER" --threads "$THREADS")

# 1. L-MSFC, its no-context variant and TA-MSF on the features of the 128 unlabelled train2017 images (112 train,
#    16 validate), at the reference λ of qualities 1..6; base at quality 6. Latent width 32 instead of the
#    reference 128/192 (CPU-only training: one 2-core session for everything). The fine-tunes run at 5e-4: at
#    2e-3 lmsfc q1 diverged and tamsf q3 spiked. The bases run at 1e-3: at 2e-3 lmsfc's validation loss jumped
#    from 0.069 to 993 by step 400 and lmsfc-nocm diverged at step 326; TA-MSF's base was stable at 2e-3, but
#    its chained qualities above q3 then lost box mAP (q6 0.011 against q3 0.025). onnxruntime gives no
#    gradients, so TA-MSF trains with the rate-distortion loss alone.
LMSFC_POINTS="1:0.0125 2:0.025 3:0.125 4:0.25 5:0.375 6:0.5"
lmsfc_family() {  # method [extra...]
  ladder "$1" "$LMSFC_POINTS" 6 700 1e-3 200 5e-4 "${@:2}" "${FEATURES[@]}" --latent 32 --batch-size 2
}

# 2. ELIC and LIC-TCM on the tiled feature mosaics of the same images, at reduced widths (ELIC N/M 16/40, LIC-TCM
#    16/32; the references are 192/320 and 128/320); base at quality 6. The MSE counts only the values the decoder
#    keeps (not the tiles' zero padding). 700 + 200 steps gave box mAP <= 0.01 on the val images (the networks
#    erased P6/P7, whose 4x4 and 2x2 values fill 1 % and 0.25 % of their 40x40 tiles); hence the longer bases.
#    LIC-TCM at the image codec's N = 8 (its transformer halves 4 channels wide) could not reconstruct the mosaics:
#    after a 1000-step base its qualities sat at 21.6-22.8 dB whatever their λ, at 0.004-0.028 box mAP, and the
#    chain's later (not its higher-λ) qualities were the better ones; at N = 16 its validation loss after 600 steps
#    was 964 against 1184 at N = 8.
#    λ spans 0.002..2: over 0.05..5 the distortion term stayed 35x the rate term or more, so the rate did not
#    respond (ELIC's qualities within 0.02 bpp of each other); only below about 0.03 does the rate term weigh.
#    LIC-TCM's qualities 1..5 sit lower still (λ 0.0001..0.008): on the 0.002..2 ladder its box mAP stopped rising
#    at 0.06 from 0.19 bpp (q2) up, so only q1 and q2 were monotone; its points now spread below that knee.
TILED_POINTS="1:0.002 2:0.008 3:0.03 4:0.13 5:0.5 6:2"
TCM_TILED_POINTS="1:0.0001 2:0.0003 3:0.001 4:0.003 5:0.008 6:2"
tiled() {  # method "q:λ ..." base-steps steps-each size...
  ladder "$1" "$2" 6 "$3" 1e-3 "$4" 1e-3 "${@:5}" "${FEATURES[@]}" --batch-size 4
}

# 3. The image codecs ELIC and LIC-TCM on the images themselves (128-pixel crops), ELIC 16/40 and LIC-TCM 8/32; base
#    at quality 4. Qualities 4..6 keep the reference λ; 1..3 reach down to 0.0003: at the reference λ all six sat
#    at 0.19-0.34 bpp, where box mAP is flat within the noise of 96 images, and the curves were not monotone.
#    LIC-TCM's fine-tunes run 400 steps: after 150 its six qualities still crossed.
IMAGE_POINTS="1:0.0003 2:0.001 3:0.004 4:0.013 5:0.025 6:0.05"
image_codec() {  # method base-steps steps-each size...
  ladder "$1" "$IMAGE_POINTS" 4 "$2" 1e-3 "$3" 1e-3 "${@:4}" --image-folder "$FOLDER" --batch-size 4 \
    --threads "$THREADS"
}

# 4. MFIBA on each: its base codec's ladder (as in 2), then the per-level task loss-rate model on 40 of the
#    unlabelled images, measured against the uncompressed detector's own detections scoring >= 0.5 (no labels there),
#    then the importance predictor (600 steps): `train mfiba-* --ladder` does all three.
MFIBA=(--fit-images 40 --predictor-steps 600)

train_all() {
  local jobs=() job
  lmsfc_family lmsfc & jobs+=($!)
  lmsfc_family lmsfc-nocm & jobs+=($!)
  lmsfc_family tamsf --no-task-loss & jobs+=($!)
  tiled mfiba-elic "$TILED_POINTS" 2500 300 --width 16 --latent 40 "${MFIBA[@]}" & jobs+=($!)  # and elic-feat
  tiled mfiba-tcm "$TCM_TILED_POINTS" 3000 300 --width 16 --latent 32 "${MFIBA[@]}" & jobs+=($!)  # and tcm-feat
  image_codec elic 700 200 --width 16 --latent 40 & jobs+=($!)
  image_codec tcm 600 400 --width 8 --latent 32 & jobs+=($!)
  for job in "${jobs[@]}"; do wait "$job"; done  # any failed training stops the script here
}

# 5. Every method on the 96 val images, then the report against the VVC feature anchor. --redo: the learned
#    methods' results in $RUN (from an earlier training) are recomputed; the anchors' are reused.
LEARNED=lmsfc,lmsfc-nocm,tamsf,elic,tcm,elic-feat,tcm-feat,mfiba-elic,mfiba-tcm
run_val() {  # methods methods-to-recompute [run options...]
  $BIN/fcmbench run --methods "$1" --redo "$2" --dataset coco --images "$SHARED/data/coco-val2017-96/images" \
    --annotations "$SHARED/data/coco-val2017-96/instances.json" --task-model $TASK --checkpoints "$CKPT" \
    --codec-opt vtm-feature.preset=faster --codec-opt vtm-image.preset=faster --workers 2 --out "$RUN" "${@:3}"
}
# MFIBA on LIC-TCM: the λ its rate model proposes jump from all levels at the lowest quality (λ 1e6, 0.026 bpp)
# to 0.12 bpp (λ 0.4), above which box mAP no longer rises; these λ fill the gap. After the --redo of
# mfiba-tcm's own points, which drops λ points it does not propose.
MFIBA_TCM_EXTRA=lam4,lam16,lam64,lam256
mfiba_tcm_extra() {
  run_val mfiba-tcm mfiba-tcm --rates "$MFIBA_TCM_EXTRA"
}
evaluate() {
  run_val all $LEARNED
  mfiba_tcm_extra
  # --monotone: BD-rate on each curve's monotone envelope, the dropped points named in the table
  $BIN/fcmbench report --out "$OUT" "$RUN" --anchor vtm-feature --monotone
}

# 6. All of the above takes longer than one 2-core session. To redo a part: retrain what changed, then rerun those
#    methods and report them with every other method's points read from an earlier report's rd.csv (a method
#    that was rerun replaces all of its points there). The anchors are deterministic: rerun, they give the same
#    bits and box mAP to every digit, so the earlier points stay comparable.
rerun_part() {  # methods earlier-rd.csv
  run_val "$1" "$1"
  if [[ ,$1, == *,mfiba-tcm,* ]]; then mfiba_tcm_extra; fi
  $BIN/fcmbench report --out "$OUT" "$RUN" "$2" --anchor vtm-feature --monotone
}

# Run as a script: everything. Sourced: only the definitions, to rerun one stage (e.g. `tiled elic-feat ...`).
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  train_all
  evaluate
fi
