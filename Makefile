# Two entry points (README): `make book` sets up and builds the book; `make test` runs every check.
PYTHON ?= python3
# Override for your platform, e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.0
export RTLIB_DATA_MIRROR ?= $(if $(wildcard ../shared/data/SHA256SUMS),$(abspath ../shared/data),)

.PHONY: setup book test

setup:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q $(TORCH_SPEC)
	$(PYTHON) -m pip install -q -e ".[book,test]"

test: setup
	$(PYTHON) -m pytest -q
