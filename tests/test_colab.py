"""rtlib.colab: the set-up cell on Colab and elsewhere, the runtime advice, how tables show."""
import importlib.util
import re
import subprocess
import sys
import types

import numpy as np
import pandas as pd
import pytest

from rtlib.colab import (MISSING, REPO_URL, SETUP_CELL, badge, runtime_advice,
                         table_html, with_setup_cell)


@pytest.fixture
def fresh_colab(monkeypatch):
    """A Colab runtime on which rtlib is not installed yet; returns the shell steps the set-up
    cell runs, and a setter for their exit codes."""
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "rtlib" else real_find_spec(name, *args))
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    steps, codes = [], {}

    def run(step, shell):
        steps.append(step)
        return subprocess.CompletedProcess(step, codes.get(len(steps), 0))

    monkeypatch.setattr(subprocess, "run", run)
    return steps, codes


def test_setup_cell_on_colab_clones_installs_then_sets_up(fresh_colab, capsys):
    steps, _ = fresh_colab
    namespace = {}
    exec(SETUP_CELL, namespace)
    assert steps == [f"test -d r-transformer-book || git clone -q --depth 1 {REPO_URL}",
                     "pip install -q -e r-transformer-book"]
    assert sys.path[0] == "r-transformer-book" and namespace["SMOKE"] in (True, False)
    assert capsys.readouterr().out.startswith("Runtime: ")


@pytest.mark.parametrize("failing_step", [1, 2])
def test_setup_cell_on_colab_stops_at_a_failed_step(fresh_colab, failing_step):
    steps, codes = fresh_colab
    codes[failing_step] = 1
    with pytest.raises(RuntimeError, match="Colab set-up failed at `") as raised:
        exec(SETUP_CELL, {})
    assert len(steps) == failing_step and steps[-1] in str(raised.value)


def test_setup_cell_elsewhere_without_rtlib_says_how_to_install(fresh_colab, monkeypatch):
    steps, _ = fresh_colab
    monkeypatch.delitem(sys.modules, "google.colab")
    with pytest.raises(ModuleNotFoundError, match="make book"):
        exec(SETUP_CELL, {})
    assert steps == []


def test_runtime_advice_names_the_runtime_type_to_pick():
    assert "needs a GPU" in runtime_advice(None) and "T4 GPU" in runtime_advice(None)
    on_gpu = runtime_advice("Tesla T4")
    assert "Tesla T4" in on_gpu and "> CPU" in on_gpu


def test_tables_show_missing_values_and_large_counts_readably():
    frame = pd.DataFrame({"seed": [1111, 1112], "parameters": [204426, 9],
                          "released": pd.array([229738, None], dtype="Int64"),
                          "metric": [0.5, np.nan], "verdict": ["reproduced", None]})
    rows = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table_html(frame), re.S)]
    assert [row for row in rows if row] == [["1111", "204,426", "229,738", "0.5", "reproduced"],
                                            ["1112", "9", MISSING, MISSING, MISSING]]


def test_with_setup_cell_replaces_an_old_one_or_inserts_it_first():
    old_badge = "[![Open in Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://x)"
    old = ("# Title\n\n" + old_badge + "\n\n```{code-cell} ipython3\n:tags: [hide-cell]\n\n"
           "import google.colab\n```\n\n```{code-cell} ipython3\nx = 1\n```\n")
    new = with_setup_cell("intro", old)
    assert badge("intro") in new and SETUP_CELL in new and "import google.colab\n```" not in new
    assert new.index(SETUP_CELL) < new.index("x = 1") and with_setup_cell("intro", new) == new
    without = old.replace(":tags: [hide-cell]\n\nimport google.colab\n```\n\n```{code-cell} ipython3\n", "")
    assert with_setup_cell("intro", without) == new
