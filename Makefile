# SR Lab: `make train` and `make test` are all a fresh clone needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch lies on this machine's disk; a bare `torch` would pull a 5 GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
export NO_ALBUMENTATIONS_UPDATE := 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help install train test test-slow test-all lint format bench bench-cache bench-eval bench-degradation bench-gan bench-depth bench-quantize efficient-recipe zoo leaderboard reproduce clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed  ## create the virtual environment and install everything

train: install  ## train EDSR x2 on the bundled sample photos (about 8 minutes on 2 CPU cores)
	$(PY) -m src.train experiment=edsr_x2_sample $(ARGS)

test: install  ## the default test suite (fast; no network, no GPU)
	$(PY) -m pytest -q $(ARGS)

test-slow: install  ## only the slow tests
	$(PY) -m pytest -q -m slow $(ARGS)

test-all: install  ## every test
	$(PY) -m pytest -q -m "slow or not slow" $(ARGS)

lint: install  ## ruff (lint + format check) and mypy on src/
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

format: install  ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix src tests bench
	$(VENV)/bin/ruff format src tests bench

bench: install  ## throughput benchmarks (training step, data loader; predict on a 480p video, about 7 min more)
	$(PY) -m bench.run $(ARGS)
	$(PY) -m bench.video $(VIDEO_ARGS)

bench-cache: install  ## set-up time, memory and disk of each data cache mode (cache=...)
	$(PY) -m bench.cache $(ARGS)

bench-depth: install  ## 16-bit and single-channel data: decode, LR, tensor and scoring cost against 8-bit RGB
	$(PY) -m bench.high_depth $(ARGS)

bench-degradation: install  ## Real-ESRGAN degradations: per-patch (CPU workers) vs batch (device) patches/s
	$(PY) -m bench.degradation $(ARGS)

bench-gan: install  ## a GAN training step (Real-ESRGAN compact recipe) against the PSNR step
	$(PY) -m bench.gan_step $(ARGS)

bench-eval: install  ## evaluation speed: the scorer and src.eval per set, in ms per megapixel
	$(PY) -m bench.eval $(ARGS)

bench-quantize: install  ## int8 (ONNX Runtime) vs fp32 ONNX and torch: PSNR on Set5/Set14/B100 and CPU latency (needs ../shared)
	$(PY) -m bench.quantize $(ARGS)

efficient-recipe: install  ## the efficient-SR path on this CPU: train, distil, fuse, prune, fine-tune, int8; one table (needs ../shared)
	$(PY) -m bench.efficient_recipe $(ARGS)

zoo: install  ## the model zoo table: parameters, GFLOPs and CPU latency of every model config
	$(PY) -m src.models $(ARGS)

leaderboard: install  ## table + plot of every run under DIR (a sweep folder; default outputs)
	$(PY) -m src.leaderboard $(or $(DIR),outputs) $(ARGS)

reproduce: install  ## published tables from official weights (needs ../shared)
	bash bench/reproduce.sh $(ARGS)

clean:  ## remove caches (keeps .venv and outputs/)
	rm -rf .pytest_cache .mypy_cache .ruff_cache
