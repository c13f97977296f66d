# Front door: `make demo` (main job on the embedded digits) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is capped at 2.14.1 on the project's machines and served from local disk there.
TORCH ?= torch==2.14.1 torchvision==0.29.1
# The default torch wheel on Linux is the CUDA build (about 4 GB of NVIDIA libraries). For the CPU-only
# build, with internet: make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

.PHONY: install demo test lint format bench figures browser-check clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/seis-lightning fit --config recipes/digits_cnn.yaml

test: install
	$(PY) -m pytest -q --timeout=600

lint: install
	$(VENV)/bin/ruff check seis_lightning tests bench scripts
	$(VENV)/bin/ruff format --check seis_lightning tests bench scripts

format: install
	$(VENV)/bin/ruff format seis_lightning tests bench scripts
	$(VENV)/bin/ruff check --fix seis_lightning tests bench scripts

bench: install
	$(PY) bench/bench_metric.py
	$(PY) bench/bench_memory.py
	$(PY) bench/bench_callback.py

figures: install  # into logs/figures/ (ignored); --out docs/figures refreshes the README's copies
	$(PY) scripts/reproduce_figures.py

browser-check: install  # headless Chromium (apt-get install chromium) on TensorBoard of a short demo run
	rm -rf logs/browser-check
	$(VENV)/bin/seis-lightning fit --config recipes/digits_cnn.yaml --trainer.max_epochs=2 \
		--trainer.logger.init_args.save_dir=logs/browser-check
	$(PY) scripts/tensorboard_screenshot.py logs/browser-check logs/browser-check/screenshots \
		--tab scalars,custom_scalars,images --check

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
