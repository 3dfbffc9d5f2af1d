# make demo / make test work on a fresh clone: each creates .venv when missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv demo test serve clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -c constraints.txt
	touch $(STAMP)

demo: venv
	$(BIN)/python -m fcnseg.demo

test: venv
	$(BIN)/python -m pytest -q --durations=20

# a local Prefect server + worker with the deployments of deploy/prefect.yaml (Ctrl-C stops both)
serve: venv
	bash deploy/serve.sh

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
