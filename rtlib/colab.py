"""The set-up cell that opens every page of the book, and what it calls.

Every notebook's first cell is `SETUP_CELL` (hidden on the book's pages). On Google Colab, where
`rtlib` is not importable until then, it clones this repository and installs it, and stops with a
message saying which step failed; anywhere else without `rtlib` it says how to install it. Then
it calls `setup()`, which works the same everywhere:

- smoke mode: ``RTLIB_SMOKE=1`` in the environment makes every chapter use fewer training
  steps and smaller sizes, so CI can execute all of them in seconds each (`setup()` returns it);
- on Colab, which runtime type to pick (`runtime_advice`);
- figures: one consistent matplotlib style and resolution;
- tables: pandas shows floats to 4 decimals, missing values as "–" and large
  integers with thousands separators (`table_html`).

The repository's URL is written once, in `REPO_URL`: `make sync` runs `write_setup_cells`, which
writes the set-up cell and the Colab badge into every chapter source (book/*.md).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .paths import BOOK_DIR

REPO_URL = "https://github.com/r-transformer-book/r-transformer-book"
SMOKE_ENV = "RTLIB_SMOKE"
MISSING = "–"  # how tables show a value that is not there (pandas: NaN, <NA>, None)

SETUP_CELL = f'''\
# Set-up. On Colab: fetch and install this book's code. Everywhere: display defaults and SMOKE.
import importlib.util, subprocess, sys
REPO_URL = "{REPO_URL}"
if importlib.util.find_spec("rtlib") is None:
    if "google.colab" not in sys.modules:
        raise ModuleNotFoundError("rtlib is not installed: run `make book` in the repository")
    folder = REPO_URL.rsplit("/", 1)[1]
    for step in (f"test -d {{folder}} || git clone -q --depth 1 {{REPO_URL}}",
                 f"pip install -q -e {{folder}}"):
        if subprocess.run(step, shell=True).returncode != 0:
            raise RuntimeError(f"Colab set-up failed at `{{step}}` (output above): check that "
                               "the runtime reaches the internet, then run this cell again")
    sys.path.insert(0, folder)
from rtlib.colab import setup
SMOKE = setup()'''


def smoke_mode() -> bool:
    """True when $RTLIB_SMOKE is set to anything but "" or "0"."""
    return os.environ.get(SMOKE_ENV, "") not in ("", "0")


def in_colab() -> bool:
    try:
        import google.colab  # noqa: F401
    except ImportError:
        return False
    return True


def runtime_advice(gpu: str | None) -> str:
    """What to tell a Colab reader whose runtime has the GPU named `gpu` (None: no GPU)."""
    pick = "Runtime > Change runtime type"
    if gpu is None:
        return ("Runtime: CPU. Every page of this book runs on it. Only training at the paper's "
                "sizes (the run notebook with profile 'paper' or 'fast') needs a GPU: "
                f"{pick} > T4 GPU, then run the notebook again.")
    return (f"Runtime: GPU ({gpu}). Only the run notebook's 'paper' and 'fast' profiles use it; "
            f"every other page runs on a CPU runtime ({pick} > CPU), which spares your GPU quota.")


def table_html(frame) -> str:
    """`frame` as HTML the way notebooks show a DataFrame, but with missing values as `MISSING`
    (not NaN, <NA> or None) and thousands separators in integer columns that reach 10,000
    (parameter and token counts; not seeds or table numbers)."""
    import numpy as np
    import pandas as pd

    def separated(value) -> str:
        return MISSING if pd.isna(value) else f"{value:,}"

    def missing_as_nan(column):  # pandas writes its na_rep only for NaN, not for pd.NA or None
        plain = column.dtype.kind in "fiub" and not isinstance(column.dtype, pd.api.extensions.ExtensionDtype)
        return column if plain or not column.isna().any() else column.astype(object).where(column.notna(), np.nan)

    large = {name: separated for name, column in frame.items()
             if pd.api.types.is_integer_dtype(column) and not pd.api.types.is_bool_dtype(column)
             and (column.abs() >= 10_000).any()}
    shown = frame.apply(missing_as_nan) if frame.size else frame
    return shown.to_html(notebook=True, na_rep=MISSING, formatters=large,
                         max_rows=pd.get_option("display.max_rows"),
                         max_cols=pd.get_option("display.max_columns"),
                         show_dimensions=pd.get_option("display.show_dimensions"))


def setup(dpi: int = 110) -> bool:
    """Set plotting and display defaults, advise on the Colab runtime; returns `smoke_mode()`."""
    import warnings

    import matplotlib.pyplot as plt
    import pandas as pd

    warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets

    plt.rcParams.update({"figure.dpi": dpi, "axes.spines.top": False, "axes.spines.right": False,
                         "axes.titlesize": 10, "axes.labelsize": 9, "legend.frameon": False})
    pd.set_option("display.precision", 4)
    pd.set_option("display.max_colwidth", 80)
    try:
        from IPython import get_ipython
    except ImportError:
        get_ipython = lambda: None  # noqa: E731
    if get_ipython() is not None:
        get_ipython().display_formatter.formatters["text/html"].for_type(pd.DataFrame, table_html)
    if in_colab():
        import torch
        print(runtime_advice(torch.cuda.get_device_name() if torch.cuda.is_available() else None))
    return smoke_mode()


def badge(name: str) -> str:
    """The Colab badge of notebooks/<name>.ipynb, as a Markdown image link."""
    github = REPO_URL.removeprefix("https://github.com/")
    return ("[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"(https://colab.research.google.com/github/{github}/blob/main/notebooks/{name}.ipynb)")


BADGE = re.compile(r"\[!\[Open in Colab\]\([^)]*\)\]\([^)]*\)")
CODE_CELL = "```{code-cell} ipython3\n"


def with_setup_cell(name: str, text: str) -> str:
    """A chapter source (MyST markdown) with its Colab badge and its set-up cell made current:
    an earlier set-up cell (the first code cell, if it mentions google.colab) is replaced, else
    the set-up cell goes before the first code cell."""
    if not BADGE.search(text):
        raise ValueError(f"book/{name}.md has no Colab badge")
    text = BADGE.sub(lambda _: badge(name), text, count=1)
    start = text.find(CODE_CELL)
    if start < 0:
        raise ValueError(f"book/{name}.md has no code cell")
    end = text.index("\n```\n", start) + len("\n```\n")
    rest = text[end:].lstrip("\n") if "google.colab" in text[start:end] else text[start:]
    return text[:start] + f"{CODE_CELL}:tags: [hide-cell]\n\n{SETUP_CELL}\n```\n\n" + rest


def write_setup_cells(book: str | Path = BOOK_DIR) -> list[str]:
    """Update every book/*.md by `with_setup_cell`; returns the names of the files it changed."""
    changed = []
    for source in sorted(Path(book).glob("*.md")):
        text = source.read_text()
        updated = with_setup_cell(source.stem, text)
        if updated != text:
            source.write_text(updated)
            changed.append(source.name)
    return changed


if __name__ == "__main__":
    for name in write_setup_cells():
        print(f"updated the set-up cell and badge of book/{name}")
