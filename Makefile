# Two commands do everything: `make reproduce` and `make test`. Each sets itself up on a fresh machine
# (a .venv with requirements.txt and this package, the site's npm assets, then the data) and is quick
# once set up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RESULTS ?= results
# The original run, seed 0: what lessons 04-08 reuse (`original_run()`) and the site's demo exports.
CHECKPOINT := results/lessons/seed0/model_weights.pth

.PHONY: setup data checkpoint reproduce test test-fast lab docs serve benchmarks clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -r requirements.txt -e .
	touch $(STAMP)

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

setup: $(STAMP) node_modules/.installed

data: setup
	$(BIN)/fmnist-lab data

checkpoint: $(CHECKPOINT)

$(CHECKPOINT): | data
	$(BIN)/fmnist-lab train --out $(dir $(CHECKPOINT)) --no-progress

reproduce: data
	$(BIN)/fmnist-lab train --out $(RESULTS)

test: data checkpoint
	FMNIST_LAB_SMOKE=1 NO_MKDOCS_2_WARNING=1 $(BIN)/python -m pytest tests solutions --nbval --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg

docs: setup checkpoint
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

serve: setup checkpoint
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --livereload

# The edit-test loop: the in-process unit tests, without nbval, the site, the wheel, the tests that start a kernel
# or the CLI (marked process) and those that train on the whole dataset or use torchrun (marked slow).
# `make test` runs everything.
test-fast: data
	$(BIN)/python -m pytest tests -m "not slow and not process" --ignore-glob="tests/test_site*.py" --ignore=tests/test_demo.py \
		--ignore=tests/test_wheel.py

lab: data
	$(BIN)/jupyter lab lessons/

benchmarks: data
	$(BIN)/python benchmarks/reproduce.py
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/inference_speed.py
	$(BIN)/python benchmarks/going_further.py
	$(BIN)/python benchmarks/going_further.py --speed-runs

clean:
	rm -rf $(RESULTS) site .pytest_cache .cache tests/artifacts
