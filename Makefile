# Fresh machine: `make demo` (the whole job end to end) and `make test` (the tests).
# Both create .venv when missing and reuse it afterwards; the install is pinned by requirements.lock.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_out

.PHONY: demo test venv clean-demo bench

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/videopoet demo --out $(DEMO_DIR)

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	for b in bench/*.py; do $(PY) -P $$b || exit 1; done

clean-demo:
	rm -rf $(DEMO_DIR)
