# Two commands do everything: `make reproduce` and `make test`. Each sets itself up on a fresh machine
# (a .venv with requirements.txt and this package, then the data) and is quick once set up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RESULTS ?= results

.PHONY: setup data reproduce test lab benchmarks clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -r requirements.txt -e .
	touch $(STAMP)

setup: $(STAMP)

data: setup
	$(BIN)/fmnist-lab data

reproduce: data
	$(BIN)/fmnist-lab train --out $(RESULTS)

test: data
	$(BIN)/python -m pytest

lab: data
	$(BIN)/jupyter lab lessons/

benchmarks: data
	$(BIN)/python benchmarks/reproduce.py
	$(BIN)/python benchmarks/train_speed.py

clean:
	rm -rf $(RESULTS) .pytest_cache
