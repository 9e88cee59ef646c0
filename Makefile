# Two entry points for a new user (see README.md):
#   make book   set up .venv and build the book on its defaults (shipped checkpoints, CPU)
#   make test   set up .venv and run the unit tests and nbval on every chapter
VENV ?= .venv
PY := $(VENV)/bin/python
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: setup book test chapters bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

book: setup
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/jupyter-book build -W -n --keep-going .
	@echo "The book is at $(CURDIR)/_build/html/index.html"

test: setup
	$(PY) -m pytest --nbval-lax --nbval-sanitize-with book/nbval_sanitize.cfg tests book

chapters: setup
	$(PY) scripts/run_chapters.py --out out/chapters

bench: setup
	$(PY) benchmarks/bench_train_step.py --tcmalloc

clean:
	rm -rf _build out
