"""Shared fixtures: where the tests find the data sets and where they cache them."""
from __future__ import annotations

import functools
import importlib
import json
import os
import urllib.error
from pathlib import Path

import pytest
import torch

from rtlib.data import DataNotFoundError
from rtlib.data.fetch import MIRROR_ENV, write_mirror

# Without a GPU, Triton kernels (rtlib/kernels/gru_windows.py) run in Triton's interpreter; it is
# chosen when a kernel is defined, so before any test imports rtlib.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@functools.lru_cache(maxsize=None)
def _golden_file(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="session")
def golden():
    """`golden(golden_file, key, got)`: the numbers pinned under `key` in `golden_file`, to
    compare `got` with; with RTLIB_UPDATE_GOLDEN=1 it writes `got` there instead and returns None."""
    def lookup(path: Path, key: str, got):
        if os.environ.get("RTLIB_UPDATE_GOLDEN") == "1":
            saved = json.loads(path.read_text()) if path.exists() else {}
            path.parent.mkdir(exist_ok=True)
            path.write_text(json.dumps({**saved, key: got}, indent=1, sort_keys=True) + "\n")
            return None
        return _golden_file(path)[key]
    return lookup


@pytest.fixture(scope="session")
def data_mirror(tmp_path_factory: pytest.TempPathFactory):
    """A mirror of the data sets: the folder named by $RTLIB_DATA_MIRROR, or else one built from
    the canonical hosts' files (and named by $RTLIB_DATA_MIRROR for the session). Skips the test
    only when neither is there."""
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        if not Path(mirror).is_dir():
            pytest.fail(f"{MIRROR_ENV}={mirror} is not a folder")
        yield Path(mirror)
        return
    try:
        built = write_mirror(tmp_path_factory.mktemp("mirror"))
    except DataNotFoundError as error:
        pytest.skip(f"no data: {error}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(MIRROR_ENV, str(built))
        yield built


@pytest.fixture(scope="session")
def real_data(data_mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder for the real data sets (pass it as `data_dir=`), filled from the mirror
    on first use and shared by the session's tests; skips when there is no data."""
    return tmp_path_factory.mktemp("data_cache")


@pytest.fixture
def tmp_data_dir(tmp_path: Path) -> Path:
    """An empty cache folder for one test (pass it as `data_dir=`)."""
    return tmp_path / "data"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No data anywhere: an empty mirror, an empty cache, and every download fails as offline."""
    fetch_module = importlib.import_module("rtlib.data.fetch")  # rtlib.data.fetch is also a function

    def unreachable(url: str, timeout_s: float = 0.0) -> bytes:
        raise urllib.error.URLError("offline")

    monkeypatch.setenv(fetch_module.MIRROR_ENV, str(tmp_path / "empty_mirror"))
    monkeypatch.setenv(fetch_module.DATA_DIR_ENV, str(tmp_path / "empty_cache"))
    monkeypatch.setattr(fetch_module, "download", unreachable)
