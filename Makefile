# Two commands do all set-up on a fresh Debian/Ubuntu machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test corpus lint typecheck bench system venv clean

# System packages: ffmpeg/ffprobe, redis-server, and Python's venv module, only if missing.
system:
	@missing=""; \
	command -v ffmpeg >/dev/null 2>&1 && command -v ffprobe >/dev/null 2>&1 || missing="$$missing ffmpeg"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	$(PYTHON) -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "mediatasks needs Python 3.11 or newer (found $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: system $(STAMP)

# A real job end to end: a generated 20 s clip with audio, subtitles and chapters, split into
# chunks on a private broker with local workers, muxed to MP4 and verified frame for frame.
demo: venv
	@mkdir -p demo
	$(BIN)/python scripts/make_clip.py demo/source.mkv --seconds 20 --size 1280x720
	$(BIN)/mediatasks plan demo/source.mkv -o demo/output.mp4 --chunk-seconds 4
	$(BIN)/mediatasks run demo/source.mkv -o demo/output.mp4 --chunk-seconds 4 --overwrite
	$(BIN)/mediatasks probe demo/output.mp4

test: venv
	$(BIN)/python -m pytest

corpus: venv
	MEDIATASKS_FULL_CORPUS=1 $(BIN)/python -m pytest tests/test_corpus.py

lint: venv
	$(BIN)/ruff check mediatasks tests scripts benchmarks celeryconfig.py
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy

# Writes docs/performance.md and docs/performance.png (about 12 minutes on 2 cores). BASELINE is
# the revision timed beside this one: the code before the performance work.
BASELINE ?= 391729a
bench: venv
	$(BIN)/python benchmarks/bench.py --baseline-rev $(BASELINE)

clean:
	rm -rf $(VENV) demo benchmarks/out .pytest_cache .mypy_cache .ruff_cache
