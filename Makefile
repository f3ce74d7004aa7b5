# Two commands for a fresh machine: `make demo` and `make test`. Each installs into .venv on first use.
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_OUT ?= runs/demo

.PHONY: demo test install checkpoints refit-lic-tcm fuzz soak

# The shipped embedded-default checkpoints of the learned feature codecs (latent width 16, int8 kernels to stay
# small). Quality 4 is trained first and each lower quality starts from the one above it, then quality 4 once
# more from quality 3. λ for qualities 4..1: the MSE-only methods saturate at λ 0.5 on these 4x4 latents
# (measured box mAP 0.418, 0.421, 0.426 at λ 0.5, 2, 8: within the noise of 50 images, so their curve was not
# monotone), so their ladder spans the rising part below it; TA-MSF's task loss keeps it rising up to λ 8.
LEARNED := lmsfc lmsfc-nocm tamsf
LAMBDAS_lmsfc := 4:0.5 3:0.125 2:0.06 1:0.03
LAMBDAS_lmsfc-nocm := $(LAMBDAS_lmsfc)
LAMBDAS_tamsf := 4:8 3:2 2:0.5 1:0.125
top_lambda = $(lastword $(subst :, ,$(firstword $(LAMBDAS_$*))))
TRAIN_AT = $(BIN)/fcmbench train --task-model shapes_rcnn --dataset shapes --latent 16 --batch-size 4 --lr $(1) \
	--threads 1 --int8-weights --out fcmbench/checkpoints
TRAIN := $(call TRAIN_AT,2e-3)
# Last, every quality 800 steps more at a tenth of that rate: Adam at 2e-3 leaves the weights noisy (lmsfc
# quality 4: box mAP 0.418 -> 0.455 on the demo's 40 images, validation loss 0.160 -> 0.149).
POLISH := $(call TRAIN_AT,2e-4) --steps 800

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	# torch first, pinned: pip takes these two from the machine's local wheel store when it has one.
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fcmbench run --methods all --dataset shapes --limit 40 --workers 2 --out $(DEMO_OUT) \
		--codec-opt vtm-feature.preset=faster --codec-opt vtm-image.preset=faster
	$(BIN)/fcmbench report --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/ruff check fcmbench tests
	$(BIN)/lint-imports
	$(BIN)/pytest

# Hostile bitstreams, on demand: 10,000 structure-aware cases per codec (CI runs 200). Every stream that fails is
# kept in tests/fuzz_corpus/CODEC/, which CI replays; outcome counts per codec go to fuzz-outcomes.jsonl.
# Kill and resume, on demand: 20 SIGKILLs at seeded random moments (CI: 3), then the tables of an uninterrupted run.
soak: $(STAMP)
	FCMBENCH_SOAK_KILLS=20 $(BIN)/pytest tests/test_kill_resume.py -q

FUZZ_CASES ?= 10000
fuzz: $(STAMP)
	FCMBENCH_FUZZ_CASES=$(FUZZ_CASES) FCMBENCH_FUZZ_LOG=fuzz-outcomes.jsonl $(BIN)/pytest tests/test_fuzz.py -s -q

# ELIC and LIC-TCM for the tiled-feature methods (elic-feat, tcm-feat and MFIBA on them), ~0.4 M parameters
# each (ours; the references are N/M 192/320 and 128/320). λ is above the image λ (0.0025..0.05): below 0.05
# the detector loses most of its accuracy on these features (measured: box mAP 0.02 at λ 0.0035).
TILED := elic-feat tcm-feat
TILED_LAMBDAS := 1:0.05 2:0.13 3:0.32 4:0.8 5:2
SIZE_elic-feat := --width 16 --latent 40
SIZE_tcm-feat := --width 8 --latent 32
TRAIN_TILED = $(BIN)/fcmbench train --task-model shapes_rcnn --dataset shapes $(SIZE_$*) \
	--batch-size 4 --lr 1e-3 --threads 1 --int8-weights --out fcmbench/checkpoints

# MFIBA on each: the per-level task loss-rate model fitted on 60 training images, then the importance predictor
MFIBA_ARGS := --task-model shapes_rcnn --dataset shapes --images 60 --threads 1 --out fcmbench/checkpoints

# The image codecs on the shapes images themselves (the demo's image-codec rows), each trained along one lineage,
# every stage from the one before (at quality 6 in runs/CODEC-lineage/, not shipped), then the shipped qualities
# 5..1, each from the one above (runs/CODEC-ladder/), and where POLISH_ is set each of those that many steps more
# at a tenth of the learning rate (runs/CODEC-polish/). Their λ are ours, far below the reference's 0.0067-0.05:
# from λ 0.005 up the detector's accuracy stays flat (ELIC: 0.73-0.75 box mAP, 89-91 % of its unsplit 0.816)
# while the rate grows, so the ladders span the rates below that.
# ELIC at N=32, M=80 (1.3 M parameters; the reference is 192/320): λ 0.05 (1,500 steps), 0.2 (3,000), 0.08, 0.03,
# 0.012 (1,200 each), then the ladder at 1,200 steps a quality.
SIZE_elic := --width 32 --latent 80
LINEAGE_elic := 1:0.05:1500 2:0.2:3000 3:0.08:1200 4:0.03:1200 5:0.012:1200
LADDER_elic := 5:0.005 4:0.002 3:0.0008 2:0.0003 1:0.0001
STEPS_elic := 1200
SHIP_elic := 5 4 3 2 1
# LIC-TCM at N=16, M=32 (it converges more slowly than ELIC and costs 2x its time a step at these widths): λ 0.2
# (6,000 steps), 0.08, 0.012 (800 each), then the ladder at 800 steps a quality, then each quality 800 steps at
# lr 1e-4 (Adam at 1e-3 left its weights noisy: quality 5's validation loss 0.932 -> 0.854, box mAP 0.655 -> 0.689).
SIZE_tcm := --width 16 --latent 32
LINEAGE_tcm := 1:0.2:6000 2:0.08:800 3:0.012:800
LADDER_tcm := 5:0.005 4:0.002 3:0.0008 2:0.0003 1:0.0001
STEPS_tcm := 800
SHIP_tcm := 5 4 3 2 1
POLISH_tcm := 800
IMAGE_AT = $(BIN)/fcmbench train $* --dataset shapes $(SIZE_$*) --batch-size 4 --lr $(1) --threads 1 --int8-weights
TRAIN_IMAGE = $(call IMAGE_AT,1e-3)
POLISH_IMAGE = $(call IMAGE_AT,1e-4) --steps $(POLISH_$*)

IMAGE_CODECS := elic tcm

checkpoints: $(addprefix checkpoints-,$(LEARNED) $(TILED) mfiba-elic mfiba-tcm $(IMAGE_CODECS))

checkpoints-elic checkpoints-tcm: checkpoints-%: $(STAMP)
	init=; for stage in $(LINEAGE_$*); do n=$${stage%%:*}; rest=$${stage#*:}; \
	  $(TRAIN_IMAGE) --quality 6 --lmbda $${rest%%:*} --steps $${rest##*:} $$init --out runs/$*-lineage/$$n || exit 1; \
	  init="--init runs/$*-lineage/$$n/$*/images/q6.pt"; done; \
	for point in $(LADDER_$*); do q=$${point%%:*}; \
	  $(TRAIN_IMAGE) --quality $$q --lmbda $${point##*:} --steps $(STEPS_$*) $$init --out runs/$*-ladder || exit 1; \
	  init="--init runs/$*-ladder/$*/images/q$$q.pt"; done
	rm -f fcmbench/checkpoints/$*/images/q*.pt
	for point in $(LADDER_$*); do q=$${point%%:*}; from=runs/$*-ladder; \
	  case " $(SHIP_$*) " in *" $$q "*) ;; *) continue;; esac; \
	  if [ -n "$(POLISH_$*)" ]; then from=runs/$*-polish; \
	    $(POLISH_IMAGE) --quality $$q --lmbda $${point##*:} --init runs/$*-ladder/$*/images/q$$q.pt --out $$from || exit 1; fi; \
	  cp $$from/$*/images/q$$q.pt fcmbench/checkpoints/$*/images/ || exit 1; done

checkpoints-mfiba-elic: checkpoints-elic-feat
checkpoints-mfiba-tcm: checkpoints-tcm-feat
checkpoints-mfiba-elic checkpoints-mfiba-tcm: checkpoints-mfiba-%:
	$(BIN)/fcmbench fit-rate-model mfiba-$* $(MFIBA_ARGS)
	$(BIN)/fcmbench train mfiba-$* --steps 600 --lr 1e-3 $(MFIBA_ARGS)

checkpoints-elic-feat checkpoints-tcm-feat: checkpoints-%: $(STAMP)
	$(TRAIN_TILED) $* --quality 1 --lmbda 0.05 --steps 2000
	for point in $(wordlist 2,5,$(TILED_LAMBDAS)); do q=$${point%%:*}; \
	  $(TRAIN_TILED) $* --quality $$q --lmbda $${point##*:} --steps 1000 \
	    --init fcmbench/checkpoints/$*/shapes_rcnn/q$$((q - 1)).pt || exit 1; done

checkpoints-%: $(STAMP)
	$(TRAIN) $* --quality 4 --lmbda $(top_lambda) --steps 3000
	for point in $(wordlist 2,4,$(LAMBDAS_$*)); do q=$${point%%:*}; \
	  $(TRAIN) $* --quality $$q --lmbda $${point##*:} --steps 1500 \
	    --init fcmbench/checkpoints/$*/shapes_rcnn/q$$((q + 1)).pt || exit 1; done
	# quality 4 once more, from quality 3: as long a lineage as the others (alone it fell below quality 3)
	$(TRAIN) $* --quality 4 --lmbda $(top_lambda) --steps 1500 --init fcmbench/checkpoints/$*/shapes_rcnn/q3.pt
	for point in $(LAMBDAS_$*); do q=$${point%%:*}; \
	  $(POLISH) $* --quality $$q --lmbda $${point##*:} --init fcmbench/checkpoints/$*/shapes_rcnn/q$$q.pt || exit 1; done

# How the shipped tiled LIC-TCM checkpoints were re-fitted when SWAtten's wiring was corrected to the reference's
# (2026-12-05): each quality fine-tuned 300 steps from its previous weights (g_a and g_s were unchanged by the
# fix; the entropy model re-adapts), then MFIBA refitted on them. `make checkpoints-tcm-feat checkpoints-mfiba-tcm`
# retrains them from scratch instead. (The image codec `tcm` was retrained from scratch since: checkpoints-tcm.)
LIC_TCM_BEFORE := b1357e5
refit-lic-tcm: $(STAMP)
	mkdir -p runs/lic-tcm-before
	for point in $(TILED_LAMBDAS); do q=$${point%%:*}; \
	  git show $(LIC_TCM_BEFORE):fcmbench/checkpoints/tcm-feat/shapes_rcnn/q$$q.pt > runs/lic-tcm-before/tcm-feat-q$$q.pt; \
	  $(TRAIN_TILED) tcm-feat --quality $$q --lmbda $${point##*:} --steps 300 \
	    --init runs/lic-tcm-before/tcm-feat-q$$q.pt || exit 1; done
	$(BIN)/fcmbench fit-rate-model mfiba-tcm $(MFIBA_ARGS)
	$(BIN)/fcmbench train mfiba-tcm --steps 600 --lr 1e-3 $(MFIBA_ARGS)
