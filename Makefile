# Two entry points on a fresh machine: `make run` (train what is missing, then serve) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The versions this project is tested with; pyproject.toml admits a range around them.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
# Every package `make install` installs, pinned with its hashes; `make lock` writes it, and from the same versions
# SERVE_LOCK: the service's own dependencies (no torch), which the serving image installs; RAY_LOCK: those and the
# `ray` extra, which the Ray image (deploy/ray/Dockerfile) installs.
LOCK := requirements.lock
SERVE_LOCK := requirements-serve.lock
RAY_LOCK := requirements-ray.lock
# The gRPC stubs, generated from the proto by grpcio-tools (the `stubs` extra), never committed.
PROTO := proto/grpc_predict_v2.proto
STUBS := service/grpc/stubs/grpc_predict_v2_pb2.py

.PHONY: install lock stubs data models run system-deps test test-fast test-deploy testbed-up testbed-down lint bench gpu-check gpu-bundle clean

# pip, not uv, installs: it reads pip's configuration, which may name local copies of the wheels. The project itself
# goes in editable, its dependencies being the lock's.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

$(STUBS): $(PROTO) proto/generate.sh $(STAMP)
	sh proto/generate.sh $(BIN)/python

stubs: $(STUBS)

install: $(STAMP) $(STUBS)

# Re-resolve the project and all its extras to the newest versions pyproject.toml admits, PyTorch at TORCH_PINS, for
# this Python; then `make test`, and commit the lock with the change that needed it.
lock: $(STAMP)
	printf '%s\n' $(TORCH_PINS) | $(BIN)/uv pip compile --quiet --upgrade --all-extras --generate-hashes \
		--python $(BIN)/python --constraint - --custom-compile-command 'make lock' pyproject.toml -o $(LOCK)
	sed -n 's/^\([A-Za-z0-9_.-]*==[^ ]*\).*/\1/p' $(LOCK) | $(BIN)/uv pip compile --quiet --generate-hashes \
		--python $(BIN)/python --constraint - --custom-compile-command 'make lock' pyproject.toml -o $(SERVE_LOCK)
	sed -n 's/^\([A-Za-z0-9_.-]*==[^ ]*\).*/\1/p' $(LOCK) | $(BIN)/uv pip compile --quiet --generate-hashes --extra ray \
		--python $(BIN)/python --constraint - --custom-compile-command 'make lock' pyproject.toml -o $(RAY_LOCK)

# As root, a machine whose apt package lists were never fetched gets them when Fashion-MNIST needs them.
data: install
	$(BIN)/sae-train fetch --dataset all $(if $(filter 0,$(shell id -u)),--apt-update)

# RECIPE=best (or seed) trains that recipe where the newest version is not already its, so `make run RECIPE=best`
# serves the best models; without RECIPE, any verified checkpoint is kept.
models: data
	$(BIN)/sae-train train --dataset all --if-missing $(if $(RECIPE),--recipe $(RECIPE))

run: models
	$(BIN)/sae-serve

# Debian packages the tests drive for real: nginx, Chromium, and a Docker engine with debootstrap for its base images.
SYSTEM_DEPS := /usr/sbin/nginx:nginx /usr/bin/chromium:chromium /usr/sbin/dockerd:docker.io /usr/sbin/debootstrap:debootstrap

system-deps:
	@missing="$(foreach dep,$(SYSTEM_DEPS),$(if $(wildcard $(word 1,$(subst :, ,$(dep)))),,$(word 2,$(subst :, ,$(dep)))))"; \
	if [ -n "$$(echo $$missing)" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

test: models system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -m "slow or not slow"

test-fast: install
	$(BIN)/pytest -m "not slow"

# Only the deployment tests: build the images, run the compose stack on a private Docker engine, break it.
test-deploy: data system-deps
	$(BIN)/pytest -m docker tests/deploy

# The private Docker engine and stand-in base images, for using the compose files by hand (see deploy/testbed).
testbed-up: install system-deps
	$(BIN)/python deploy/testbed/testbed.py up

testbed-down: install
	$(BIN)/python deploy/testbed/testbed.py down

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: models
	@command -v wrk >/dev/null || apt-get install -y -qq wrk
	$(BIN)/python -m bench.training.train_speed
	$(BIN)/python -m bench.serving.serve_bench
	$(BIN)/python -m bench.serving.runtime_bench
	$(BIN)/python -m bench.serving.profile_request
	$(BIN)/python -m bench.serving.similar_bench
	$(BIN)/python -m bench.serving.workers_bench
	$(BIN)/python -m bench.serving.fork_memory
	$(BIN)/python -m bench.serving.grpc_bench

# On a machine with an NVIDIA GPU: train, check parity, serve and measure there (bench/gpu/gpu_check.py).
gpu-check: models
	$(BIN)/python -m bench.gpu.gpu_check --device cuda --out docs/benchmarks

# For a GPU machine with PyTorch but no package index: pack wheels, data and reference checkpoints into
# .bundle/, copy the checkout there and run `sh bench/gpu/gpu_device.sh OUT_DIR`.
gpu-bundle: models
	$(BIN)/python -m bench.gpu.gpu_bundle --out .bundle

clean:
	rm -rf $(VENV) artifacts service/grpc/stubs
