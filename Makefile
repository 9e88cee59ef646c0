# Two entry points for a new user (see README.md):
#   make book   set up .venv and build the book on its defaults (shipped checkpoints, CPU)
#   make test   set up .venv and run the unit tests and nbval on every chapter
#   make test-cpus   nbval again under other CPUs' kernels and one thread (CI runs it after make test)
VENV ?= .venv
PY := $(VENV)/bin/python
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: setup book test test-cpus check-html chapters bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

# The chapters a build executes write their claims to _build/claims, and the report page reads
# them there: a build never modifies a tracked file (.ci/run checks `git status`). The folder
# is seeded with the committed book/claims for the chapters the build does not re-execute (a
# committed file replaces a copy only when it is newer, e.g. after a pull).
BOOK_CLAIMS := $(CURDIR)/_build/claims

book: setup
	@mkdir -p "$(BOOK_CLAIMS)"; for f in book/claims/*.json; do dest="$(BOOK_CLAIMS)/$${f##*/}"; \
		if [ ! -e "$$dest" ] || [ "$$f" -nt "$$dest" ]; then cp -p "$$f" "$$dest"; fi; done
	HMMRNN_CLAIMS_DIR="$(BOOK_CLAIMS)" PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/jupyter-book build -W -n --keep-going .
	@echo "The book is at $(CURDIR)/_build/html/index.html"

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
#       unusual CPU; run on EVERY chapter
#   ATEN_CPU_CAPABILITY=avx2 OPENBLAS_CORETYPE=Haswell      an AVX2 laptop (no AVX-512)
#   OMP_NUM_THREADS=1                                        one thread (`make test` uses all cores)
# The last two run on the fast chapters (CPU_FAST_CHAPTERS): all three settings over every
# chapter would take ~20 min on 2 cores; this takes ~12 min. Claims go to a scratch folder, so
# that these runs never rewrite book/claims.
CPU_FAST_CHAPTERS ?= book/hmm_targets.ipynb book/training.ipynb book/global_dynamics.ipynb \
	book/local_regions.ipynb book/kick_neurons.ipynb book/reproduction_report.ipynb
CPU_ALL_CHAPTERS ?= book
NBVAL := -m pytest -p no:cacheprovider --nbval-lax --nbval-sanitize-with book/nbval_sanitize.cfg

test-cpus: setup
	@set -e; scratch=$$(mktemp -d); trap 'rm -rf "$$scratch"' EXIT; \
	run() { rm -rf "$$scratch/claims"; cp -r book/claims "$$scratch/claims"; \
		echo "[test-cpus] $$1: $$2"; env $$1 HMMRNN_CLAIMS_DIR="$$scratch/claims" $(PY) $(NBVAL) $$2; }; \
	run "ATEN_CPU_CAPABILITY=default OPENBLAS_CORETYPE=Nehalem" "$(CPU_ALL_CHAPTERS)"; \
	run "ATEN_CPU_CAPABILITY=avx2 OPENBLAS_CORETYPE=Haswell" "$(CPU_FAST_CHAPTERS)"; \
	run "OMP_NUM_THREADS=1" "$(CPU_FAST_CHAPTERS)"

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
