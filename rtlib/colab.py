"""Notebook set-up shared by the book's chapters.

The first code cell of every chapter installs this repository when it runs on Google Colab
(there `rtlib` is not importable until that cell has cloned and installed it); the second
calls `setup()`, which works the same everywhere:

- smoke mode: ``RTLIB_SMOKE=1`` in the environment makes every chapter use fewer training
  steps and smaller sizes, so CI can execute all of them in seconds each;
- figures: one consistent matplotlib style and resolution;
- tables: pandas shows floats with 4 significant digits.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPO_URL = "https://github.com/r-transformer-book/r-transformer-book"
SMOKE_ENV = "RTLIB_SMOKE"

# The first cell of each chapter, verbatim (kept here so that tests can check the chapters).
FIRST_CELL = '''\
try:  # on Colab: fetch and install the book's code; elsewhere this cell does nothing
    import google.colab, subprocess, sys
    subprocess.run("git clone -q --depth 1 https://github.com/r-transformer-book/r-transformer-book"
                   "; pip install -q -e r-transformer-book", shell=True)
    sys.path.insert(0, "r-transformer-book")
except ImportError:
    pass'''


def smoke_mode() -> bool:
    """True when $RTLIB_SMOKE is set to anything but "" or "0"."""
    return os.environ.get(SMOKE_ENV, "") not in ("", "0")


def in_colab() -> bool:
    try:
        import google.colab  # noqa: F401
    except ImportError:
        return False
    return True


def setup(dpi: int = 110) -> bool:
    """Set plotting and display defaults; returns `smoke_mode()`."""
    import warnings

    import matplotlib.pyplot as plt
    import pandas as pd

    warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets

    plt.rcParams.update({"figure.dpi": dpi, "axes.spines.top": False, "axes.spines.right": False,
                         "axes.titlesize": 10, "axes.labelsize": 9, "legend.frameon": False})
    pd.set_option("display.precision", 4)
    pd.set_option("display.max_colwidth", 80)
    return smoke_mode()
