# Two entry points on a fresh machine: `make run` (train what is missing, then serve) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The versions this project is tested with; pyproject.toml admits a range around them.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: install data models run test test-fast lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_PINS)
	$(BIN)/pip install --quiet -e '.[train,dev,bench]'
	touch $(STAMP)

install: $(STAMP)

data: install
	$(BIN)/sae-train fetch --dataset all

models: data
	$(BIN)/sae-train train --dataset all --if-missing

run: models
	$(BIN)/sae-serve

test: models
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || (apt-get update -qq && apt-get install -y -qq nginx >/dev/null)
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -m "slow or not slow"

test-fast: install
	$(BIN)/pytest -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: models
	@command -v wrk >/dev/null || apt-get install -y -qq wrk
	$(BIN)/python bench/train_speed.py
	$(BIN)/python bench/serve_bench.py

clean:
	rm -rf $(VENV) artifacts
