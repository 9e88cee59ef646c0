# Two entry points for a new user (see README.md):
#   make book   set up .venv and build the book on its defaults (shipped checkpoints, CPU)
#   make test   set up .venv and run the unit tests and nbval on every chapter
#   make test-cpus   nbval again under other CPUs' kernels and one thread (CI runs it after make test)
#   make book-stored the book from the committed, nbval-checked outputs (CI's book build)
VENV ?= .venv
PY := $(VENV)/bin/python
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: setup book book-stored seed-claims test test-cpus test-cpus-all check-html chapters bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

# The chapters a build executes write their claims to _build/claims, and the report page reads
# them there: a build never modifies a tracked file (.ci/run checks `git status`). The folder
# is seeded with the committed book/claims for the chapters the build does not re-execute (a
# committed file replaces a copy only when it is newer, e.g. after a pull).
BOOK_CLAIMS := $(CURDIR)/_build/claims

seed-claims:
	@mkdir -p "$(BOOK_CLAIMS)"; for f in book/claims/*.json; do dest="$(BOOK_CLAIMS)/$${f##*/}"; \
		if [ ! -e "$$dest" ] || [ "$$f" -nt "$$dest" ]; then cp -p "$$f" "$$dest"; fi; done

book: setup seed-claims
	HMMRNN_CLAIMS_DIR="$(BOOK_CLAIMS)" PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/jupyter-book build -W -n --keep-going .
	@echo "The book is at $(CURDIR)/_build/html/index.html"

# The same book without executing the chapters: their committed outputs, which `make test` has
# just re-executed and compared cell by cell (nbval), rendered with -W -n. CI builds this one:
# executing every chapter a third time (after `make test` and `make test-cpus`) does not fit in
# CI's 90 minutes on 2 cores. The report page still executes (its notebook forces it), reading
# the committed claims. The configuration is _config.yml with `execute_notebooks: off`.
STORED_CONFIG := _build/config-stored/_config.yml

book-stored: setup seed-claims
	@mkdir -p "$(dir $(STORED_CONFIG))"; \
	sed 's/^\(  execute_notebooks:\) cache/\1 "off"/' _config.yml > "$(STORED_CONFIG)"; \
	grep -q '^  execute_notebooks: "off"' "$(STORED_CONFIG)" || { echo "[book-stored] could not switch execution off in $(STORED_CONFIG)" >&2; exit 1; }
	HMMRNN_CLAIMS_DIR="$(BOOK_CLAIMS)" PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/jupyter-book build -W -n --keep-going --all --config "$(STORED_CONFIG)" .
	@echo "The book (stored outputs) is at $(CURDIR)/_build/html/index.html"

# nbval executes every chapter; their claims go to a scratch copy of book/claims (as in
# test-cpus), so that the tests never modify a tracked file.
test: setup
	@set -e; scratch=$$(mktemp -d); trap 'rm -rf "$$scratch"' EXIT; cp -r book/claims "$$scratch/claims"; \
	echo "[test] claims of the executed chapters go to $$scratch/claims"; \
	HMMRNN_CLAIMS_DIR="$$scratch/claims" $(PY) -m pytest --nbval-lax --nbval-sanitize-with book/nbval_sanitize.cfg tests book

# Cross-CPU check (CI runs it after `make test`): nbval again, computed as other machines compute.
# PyTorch and OpenBLAS pick their kernels by CPU, so the last bits of float results differ
# between machines; the checked outputs must not. Each setting imitates another machine:
#   ATEN_CPU_CAPABILITY=default OPENBLAS_CORETYPE=Nehalem   portable (SSE) kernels: an old or
#       unusual CPU
#   ATEN_CPU_CAPABILITY=avx2 OPENBLAS_CORETYPE=Haswell      an AVX2 laptop (no AVX-512)
#   OMP_NUM_THREADS=1                                        one thread (`make test` uses all cores)
# `make test-cpus` runs the three on the fast chapters (CPU_FAST_CHAPTERS, ~25 min on 2 busy cores);
# `make test-cpus-all` runs the portable kernels on every chapter (~26 min: the slow
# chapters take most of it), which is too long for CI's 90 minutes beside `make test`: run it
# before committing re-executed slow chapters. Claims go to a scratch folder, so that these
# runs never rewrite book/claims.
CPU_FAST_CHAPTERS ?= book/hmm_targets.ipynb book/training.ipynb book/grid.ipynb book/global_dynamics.ipynb \
	book/local_regions.ipynb book/kick_neurons.ipynb book/reproduction_report.ipynb
CPU_ALL_CHAPTERS ?= book
NBVAL := -m pytest -p no:cacheprovider --nbval-lax --nbval-sanitize-with book/nbval_sanitize.cfg
PORTABLE := ATEN_CPU_CAPABILITY=default OPENBLAS_CORETYPE=Nehalem
# nbval_under SETTINGS CHAPTERS: nbval on CHAPTERS with the environment SETTINGS, claims to scratch
define nbval_under
	@set -e; scratch=$$(mktemp -d); trap 'rm -rf "$$scratch"' EXIT; cp -r book/claims "$$scratch/claims"; \
	echo "[test-cpus] $$(date -u +%T) $(1): $(2)"; \
	env $(1) HMMRNN_CLAIMS_DIR="$$scratch/claims" $(PY) $(NBVAL) $(2)
endef

test-cpus: setup
	$(call nbval_under,$(PORTABLE),$(CPU_FAST_CHAPTERS))
	$(call nbval_under,ATEN_CPU_CAPABILITY=avx2 OPENBLAS_CORETYPE=Haswell,$(CPU_FAST_CHAPTERS))
	$(call nbval_under,OMP_NUM_THREADS=1,$(CPU_FAST_CHAPTERS))

test-cpus-all: setup
	$(call nbval_under,$(PORTABLE),$(CPU_ALL_CHAPTERS))

# The built book as a browser shows it (after `make book`): every page in headless Chromium
# (Debian's package; skipped with a message when it is not installed), formulas typeset, no
# page wider than a 1280 px window. Not part of CI.
check-html:
	$(PY) scripts/check_html.py _build/html

chapters: setup
	$(PY) scripts/run_chapters.py --out out/chapters

bench: setup
	$(PY) benchmarks/bench_train_step.py --tcmalloc

clean:
	rm -rf _build out
