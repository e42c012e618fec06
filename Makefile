# The two commands of the README:
#   make demo   set up a fresh machine and run the main job
#   make test   set up a fresh machine and run the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip

.PHONY: setup demo test lint clean

$(VENV)/.installed: pyproject.toml setup.py $(wildcard csrc/*.cpp csrc/*/*.cpp csrc/*/*.cu csrc/*/*.h csrc/*/*/*.h)
	$(PYTHON) -m venv $(VENV)
	# torch 2.13.0 is pinned so pip takes the CPU wheel; on a CUDA machine install your CUDA
	# torch first and run `pip install --no-build-isolation -e .` yourself (see README).
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q torch==2.13.0 "triton==3.8.*" ninja
	$(PIP) install -q --no-build-isolation -e ".[test,bench,models,dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/wmk demo

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/wmk info
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info wmkernels/_C*.so
