# Set-up and the two entry points of the README. Everything installs into ./.venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch 2.14.1 + torchvision 0.29.1: the pair that imports together (CUDA build; runs on CPU too).
TORCH  := torch==2.14.1 torchvision==0.29.1
# Extras of this package to install (the Docker image adds tensorrt) and venv flags (the image
# passes --system-site-packages so the container's own TensorRT is visible).
EXTRAS ?= test
VENV_FLAGS ?=

.PHONY: setup data test test-fast pipeline clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	touch $@

data:
	@tools/get_data.sh

# The test command of the README (CI runs exactly this through .ci/run).
test: setup data
	$(BIN)/python -m pytest -n 2 -q

test-fast: setup
	$(BIN)/python -m pytest -n 2 -q -m "not slow"

# The main job of the README: the whole pipeline on Fashion-MNIST (ARGS=--full for the long schedule).
pipeline: setup data
	$(BIN)/repvgg-pipeline $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
