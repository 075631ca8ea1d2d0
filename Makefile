# The Softmax Book.  Two commands do everything on a fresh clone:
#   make book   build the website into _build/html (executing every notebook)
#   make test   library tests, every notebook under nbval, the book with warnings as errors
# and more:
#   make execute    re-run every notebook in place (commit the outputs)
#   make serve      serve _build/html on http://localhost:8000
#   make bench-gpu  measure the Triton kernels on a GPU into chapters/results/
#                   (runs $(PYTHON), default python3, which must already have torch
#                   with CUDA and triton; installs nothing;
#                   BENCH_ARGS="--budget-s 480 --resume" runs it in pieces)
#   make tune-gpu   time the long-row (cooperative) kernel's settings on a GPU into
#                   chapters/results/softmax_cooperative_tuning.json (then edit the table)
#   make bench-cpu  softmax_lib against scipy.special on this CPU

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
JB := $(VENV)/bin/jupyter-book
STAMP := $(VENV)/.installed
MATHJAX_VERSION := 3.2.2
MATHJAX := _vendor/mathjax/tex-chtml.js
JOBS ?= 2
BENCH_ARGS ?=
export PYTHONHASHSEED := 0

.PHONY: setup book test test-lib test-notebooks test-book test-browser test-colab execute serve bench-gpu tune-gpu bench-cpu clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# MathJax is served by the site itself (no CDN): fetched from the npm registry at a
# pinned version when the book is built.
$(MATHJAX):
	rm -rf _build/mathjax && mkdir -p _build/mathjax _vendor
	cd _build/mathjax && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null && tar xzf mathjax-$(MATHJAX_VERSION).tgz
	rm -rf _vendor/mathjax && cp -r _build/mathjax/package/es5 _vendor/mathjax
	rm -rf _build/mathjax

setup: $(STAMP) $(MATHJAX)

book: setup
	$(JB) build . --keep-going

execute: setup
	$(PY) .ci/execute_notebooks.py --jobs $(JOBS)

test: test-lib test-notebooks test-book test-browser test-colab

test-lib: setup
	$(PY) -m pytest tests softmax_lib --doctest-modules -q -n $(JOBS) --dist loadscope -m "not browser" --ignore=tests/test_colab_path.py

test-notebooks: setup
	$(PY) -m pytest -q -n $(JOBS) --dist loadscope --nbval chapters --nbval-sanitize-with tests/nbval_sanitize.cfg \
		--nbval-cell-timeout 300 -p no:cacheprovider -o testpaths=chapters -W default

# nbval has just executed every notebook and matched the stored outputs, so the test
# build renders those outputs instead of executing everything a second time.
test-book: setup
	sed 's/execute_notebooks: force/execute_notebooks: "off"/' _config.yml > .config-test.yml
	$(JB) build . -W -n --keep-going --config .config-test.yml; status=$$?; rm -f .config-test.yml; exit $$status

test-browser: setup
	@if [ -f tests/test_site_browser.py ]; then $(PY) -m pytest -q tests/test_site_browser.py; fi

test-colab: setup
	@if [ -f tests/test_colab_path.py ]; then $(PY) -m pytest -q tests/test_colab_path.py; fi

serve:
	$(PY) -m http.server --directory _build/html 8000

bench-gpu:
	PYTHONPATH=. $(PYTHON) -m softmax_lib.bench --out chapters/results $(BENCH_ARGS)

tune-gpu:
	PYTHONPATH=. $(PYTHON) -m softmax_lib.bench --out chapters/results --only tune $(BENCH_ARGS)

bench-cpu: setup
	$(PY) -m softmax_lib.bench_cpu

clean:
	rm -rf _build
