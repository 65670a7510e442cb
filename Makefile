# `make demo` runs the pipeline on the bundled sample; `make test` runs every test.
# Both create .venv on first use; a second run with nothing changed installs nothing.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# PROFILE=gpu runs with profiles/gpu.toml instead of prixlm.toml (the CPU demo's budgets).
PROFILE ?=
export PRIXLM_CONFIG := $(if $(PROFILE),$(CURDIR)/profiles/$(PROFILE).toml,$(CURDIR)/prixlm.toml)

.PHONY: install demo test test-fast ui mirror env clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and alone: the pinned CPU wheel on local disk, never a CUDA build.
	$(PY) -m pip install -q $$(grep -E '^torch==' requirements.txt)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	touch $@

demo: install
	$(PY) -m tools.demo

test: install
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

ui: install
	$(PY) -m tools.ui

mirror: install
	$(PY) -m tools.sample_mirror

env: install
	@$(PY) -m jobs.runtime --print

clean:
	rm -rf var/raw var/parsed var/sequences var/split var/shards var/runs var/models var/reports var/predictions var/quarantine var/tmp
