# Two entry points (README): `make book` sets up and builds the book; `make test` runs every check.
# Both check the data first, before installing anything: a file missing from the cache, the mirror
# ($RTLIB_DATA_MIRROR) and its canonical host stops them within seconds, with one line saying so.
PYTHON ?= python3
# PyTorch is installed only when `import torch` fails. PyPI's Linux wheel is the CUDA build (with
# its CUDA wheels, several GB), so where there is no NVIDIA driver (no nvidia-smi) the CPU wheel is
# taken. Override, e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_SPEC ?= torch==$(TORCH_VERSION)$(if $(shell command -v nvidia-smi 2>/dev/null),, --index-url $(TORCH_CPU_INDEX))
# Warnings are errors: a broken cross reference, a missing figure or a failing cell fails the build.
BOOK_FLAGS ?= -W -n --keep-going
# The smoke build (RTLIB_SMOKE=1) has its own folder, so its execution cache never feeds the real book.
SMOKE_BUILD ?= _build/smoke
JUPYTER_BOOK ?= $(PYTHON) -c "from jupyter_book.cli.main import main; main()"
# The kernel the build, nbval and papermill start: the standard python3 one, quiet about its TCP
# transport (ipykernel warns on every start that loopback TCP is not encrypted).
export JUPYTER_PATH := $(CURDIR)/jupyter$(if $(JUPYTER_PATH),:$(JUPYTER_PATH))
# `$(call timed,WHAT,COMMAND)`: run COMMAND, then say how long it took.
timed = echo '$(2)' && start=$$(date +%s) && $(2) && echo "$(1) took $$(( $$(date +%s) - start )) s"

.PHONY: data setup book test unit nbval book-smoke linkcheck sync
# Prerequisites run in the order written: the data check before the install.
.NOTPARALLEL:

data:
	$(PYTHON) -m rtlib data

# `make book` installs the book's extra only; `make test` adds the test tools (pytest, nbval, Triton, ...).
EXTRAS ?= book,test
book: EXTRAS = book
setup:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q $(TORCH_SPEC)
	$(PYTHON) -m pip install -q -e ".[$(EXTRAS)]"

# The book: every chapter executed (cached; re-executed when its code cells, rtlib/ or, for the
# chapters that read it, results/ changed) into _build/html.
book: data setup
	$(PYTHON) scripts/refresh_book_cache.py _build/.jupyter_cache
	@$(call timed,the book build,$(JUPYTER_BOOK) build . --all $(BOOK_FLAGS))

# Every check: unit tests (incl. the book/*.md <-> notebooks/*.ipynb pairing), every notebook
# executed by nbval in smoke mode, and a smoke-mode build of the whole book.
test: data setup
	@$(call timed,the checks,$(MAKE) unit nbval book-smoke)

unit:
	@$(call timed,the unit tests,$(PYTHON) -m pytest -q)

nbval:
	@$(call timed,nbval,RTLIB_SMOKE=1 $(PYTHON) -m pytest -q -p no:cacheprovider --nbval-lax notebooks/)

# The smoke book lands in $(SMOKE_BUILD)/_build/html; its pages are then checked for what a reader
# should never see (object addresses, <NA>, the build machine's paths).
book-smoke:
	$(PYTHON) scripts/refresh_book_cache.py $(SMOKE_BUILD)/_build/.jupyter_cache
	@$(call timed,the smoke build,RTLIB_SMOKE=1 $(JUPYTER_BOOK) build . --path-output $(SMOKE_BUILD) $(BOOK_FLAGS))
	$(PYTHON) scripts/check_pages.py $(SMOKE_BUILD)/_build/html

# Every external link of the book answers (needs the network; the publishing workflow runs it
# after `make book`, whose execution cache it reuses).
linkcheck:
	$(JUPYTER_BOOK) build . --builder linkcheck $(BOOK_FLAGS)

# After editing a chapter (book/<name>.md, the source): write its set-up cell and Colab badge
# (rtlib/colab.py), then regenerate its notebook (needs jupytext, from the test extra).
sync:
	$(PYTHON) -m rtlib.colab
	$(PYTHON) -m jupytext --sync book/*.md
