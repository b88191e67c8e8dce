# The two commands a newcomer needs: `make demo` (the main job) and `make test`.
# Both install what they need first; re-running is fast when nothing changed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test demo system-deps typecheck bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

# Debian packages the local engines, the benchmarks and the tests use. Installs only what is missing;
# needs root (CI runs as root; on a workstation it says what it would install and uses sudo).
DEBS ?= espeak-ng
system-deps:
	@CENTRALITA_DEBS="$(DEBS)" bash .ci/system-deps

test: install system-deps
	$(BIN)/pytest -q

typecheck: install
	$(BIN)/mypy

# One whole call on this machine, no keys: see `$(BIN)/centralita demo --help`.
demo: install system-deps
	$(BIN)/centralita demo

bench: install
	$(BIN)/python -m bench --help

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache build *.egg-info
