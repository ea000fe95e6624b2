# Two commands for a fresh machine: `make demo` and `make test`.
# Both install what they need first: Debian packages (ffmpeg, espeak-ng) when
# missing, a virtualenv at .venv and `pip install -e .[dev]`.

VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
XTTSFT  := $(VENV)/bin/xttsft
STAMP   := $(VENV)/.xttsft-installed
PYTEST_ARGS ?=

.PHONY: help install system-deps test test-heavy demo bench gpu-check clean

help:
	@echo "make demo   - install, then run the pipeline offline on the bundled demo voice"
	@echo "make test   - install, then run the test suite"
	@echo "make test-heavy - the full-size-architecture tests (parity with coqui's recipe; ~12 GB RAM)"
	@echo "make bench  - install, then run every benchmark and write benchmarks/RESULTS.md"
	@echo "make gpu-check - on a CUDA GPU: GPU tests, VRAM/speed matrix, synth and Whisper on the GPU (~8 min)"

system-deps:
	@bash scripts/install-system-deps.sh

$(STAMP): pyproject.toml
	@bash scripts/install-system-deps.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# the full-size XTTS-v2 architecture on the CPU (about 12 GB of RAM, minutes): not in CI's `make test`
test-heavy: install
	$(PY) -m pytest -m heavy $(PYTEST_ARGS)

demo: install
	$(XTTSFT) --workdir demo-workspace run-all --demo

bench: install
	$(PY) benchmarks/run_all.py

gpu-check: install
	$(PY) scripts/gpu_check.py

clean:
	rm -rf demo-workspace .pytest_cache build src/*.egg-info
