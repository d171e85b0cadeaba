"""Shared fixtures: where the tests find the data sets and where they cache them."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

MIRROR_ENV = "RTLIB_DATA_MIRROR"
REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_MIRROR = REPO_ROOT.parent / "shared" / "data"  # the workspace's copy of the data sets

# Without a GPU, Triton kernels (rtlib/models/gru_windows.py) run in Triton's interpreter; it is
# chosen when a kernel is defined, so before any test imports rtlib.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

if not os.environ.get(MIRROR_ENV) and SHARED_MIRROR.is_dir():
    os.environ[MIRROR_ENV] = str(SHARED_MIRROR)


@pytest.fixture(scope="session")
def data_mirror() -> Path:
    """The folder named by $RTLIB_DATA_MIRROR; skips the test when there is none."""
    mirror = os.environ.get(MIRROR_ENV)
    if not mirror or not Path(mirror).is_dir():
        pytest.skip(f"no data mirror: set {MIRROR_ENV} to a folder laid out as data/README.md says")
    return Path(mirror)


@pytest.fixture(scope="session")
def real_data(data_mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder for the real data sets (pass it as `data_dir=`), filled from the mirror
    on first use and shared by the session's tests; skips when there is no mirror."""
    return tmp_path_factory.mktemp("data_cache")


@pytest.fixture
def tmp_data_dir(tmp_path: Path) -> Path:
    """An empty cache folder for one test (pass it as `data_dir=`)."""
    return tmp_path / "data"
