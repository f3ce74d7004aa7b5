# Two commands for a fresh machine: `make demo` and `make test`. Each installs into .venv on first use.
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_OUT ?= runs/demo

.PHONY: demo test install

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	# torch first, pinned: pip takes these two from the machine's local wheel store when it has one.
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fcmbench run --methods all --dataset shapes --limit 50 --vvenc-preset faster --out $(DEMO_OUT)
	$(BIN)/fcmbench report --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/ruff check fcmbench tests
	$(BIN)/pytest
