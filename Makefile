# The two commands of this project (see README.md):
#   make book   set up .venv, build the HTML book with executed notebooks into _build/html
#   make test   set up .venv, run unit tests, nbval on every chapter (fast mode), strict book build
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Offline machines read the datasets from the shared folder beside the checkout, if present.
QNNLIB_DATA ?= $(abspath $(wildcard ../shared/data))
export QNNLIB_DATA
NOTEBOOKS := $(sort $(wildcard book/[0-9][0-9]_*.ipynb))

.PHONY: book test unit nbval strict-book clean help

help:
	@echo "make book   build the HTML book (full mode) into _build/html"
	@echo "make test   unit tests + nbval (fast mode) + strict book build"

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . --keep-going
	@echo "The book is at file://$(CURDIR)/_build/html/index.html"

test: unit nbval strict-book
	@echo "make test: all checks passed"

unit: $(STAMP)
	QNNLIB_FAST=1 $(BIN)/python -m pytest -q tests

nbval: $(STAMP)
	QNNLIB_FAST=1 $(BIN)/python -m pytest -q --nbval-lax --nbval-current-env -p no:cacheprovider $(NOTEBOOKS)

strict-book: $(STAMP)
	QNNLIB_FAST=1 $(BIN)/jupyter-book build . -W -n --keep-going
	@echo "Strict build passed: file://$(CURDIR)/_build/html/index.html"

clean:
	rm -rf _build
