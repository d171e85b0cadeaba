"""The book's sources: every chapter's notebook is in sync with its markdown, output-free, in the
table of contents, and opens with the set-up cell and a Colab badge."""
import json
import ast
import os
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from rtlib.colab import REPO_URL, SETUP_CELL, badge, with_setup_cell
from rtlib.paths import REPO

SOURCES = sorted((REPO / "book").glob("*.md"))
CHAPTERS = [path.stem for path in SOURCES if path.stem not in ("run", "report")]  # this book's prose


def toc_files() -> list[str]:
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


def code_cells(name: str) -> list[dict]:
    notebook = json.loads((REPO / "notebooks" / f"{name}.ipynb").read_text())
    return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def test_notebooks_are_in_sync_with_their_markdown_sources(tmp_path):
    """Regenerate each notebook from its .md (the source) as `jupytext --sync` does after an
    edit, keeping the committed cell ids, and require the committed notebook byte for byte."""
    (tmp_path / "book").mkdir()
    (tmp_path / "notebooks").mkdir()
    shutil.copy(REPO / "jupytext.toml", tmp_path)
    now = time.time()
    for source in SOURCES:
        notebook = REPO / "notebooks" / f"{source.stem}.ipynb"
        assert notebook.exists(), f"{source.name} has no notebooks/{notebook.name}: run `make sync`"
        shutil.copy(notebook, tmp_path / "notebooks")
        os.utime(tmp_path / "notebooks" / notebook.name, (now - 100, now - 100))
        shutil.copy(source, tmp_path / "book")
        os.utime(tmp_path / "book" / source.name, (now, now))  # the source is the newer file
    subprocess.run([sys.executable, "-m", "jupytext", "--sync", "--quiet",
                    *[f"book/{source.name}" for source in SOURCES]], cwd=tmp_path, check=True)
    stale = [source.stem for source in SOURCES
             if (tmp_path / "notebooks" / f"{source.stem}.ipynb").read_bytes()
             != (REPO / "notebooks" / f"{source.stem}.ipynb").read_bytes()]
    assert not stale, f"notebooks out of sync with book/*.md: {stale}; run `make sync`"


@pytest.mark.parametrize("name", [path.stem for path in SOURCES])
def test_notebooks_are_committed_without_outputs(name):
    for cell in code_cells(name):
        assert cell.get("outputs", []) == [] and cell.get("execution_count") is None


def test_every_chapter_is_in_the_table_of_contents_and_exists():
    listed = toc_files()
    assert sorted(listed) == sorted(f"notebooks/{path.stem}" for path in SOURCES)
    for entry in listed:
        assert (REPO / f"{entry}.ipynb").exists(), entry


@pytest.mark.parametrize("name", [path.stem for path in SOURCES])
def test_every_page_opens_with_its_colab_badge_and_the_setup_cell(name):
    text = (REPO / "book" / f"{name}.md").read_text()
    assert with_setup_cell(name, text) == text, f"book/{name}.md: set-up cell or badge not current: run `make sync`"
    assert badge(name) in text.split("```")[0], f"{name}: its badge is not above its first cell"
    first = code_cells(name)[0]
    assert "".join(first["source"]) == SETUP_CELL
    assert "hide-cell" in first["metadata"].get("tags", [])


def test_the_book_and_the_setup_cell_name_one_repository():
    config = yaml.safe_load((REPO / "_config.yml").read_text())
    assert config["repository"]["url"] == REPO_URL
    assert SETUP_CELL.count("github.com") == 1


@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_has_summary_and_exercises_and_short_cells(name):
    text = (REPO / "book" / f"{name}.md").read_text()
    assert "\n## Summary\n" in text and "\n## Exercises\n" in text
    for cell in code_cells(name)[1:]:
        assert len("".join(cell["source"]).splitlines()) <= 16, f"{name}: a code cell over 16 lines"



def timing_leaks(cells: list[str]) -> tuple[set[str], list[str]]:
    """Follow `toys.time_layers`'s result through the cells' assignments, in order; returns the
    names that hold it or something computed from it, and those that reach a Markdown(...)."""
    def names(node) -> set[str]:
        return {name.id for name in ast.walk(node) if isinstance(name, ast.Name)}

    tainted, leaks = set(), []
    for cell in cells:
        for statement in ast.parse(cell).body:
            for node in ast.walk(statement):
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Markdown":
                    leaks += sorted(names(node) & tainted)
                if isinstance(node, (ast.Assign, ast.For)):
                    value = node.value if isinstance(node, ast.Assign) else node.iter
                    targets = names(node.target) if isinstance(node, ast.For) else set().union(*map(names, node.targets))
                    timed = any(getattr(call, "attr", "") == "time_layers" for call in ast.walk(value))
                    tainted = tainted | targets if timed or names(value) & tainted else tainted - targets
    return tainted, leaks


def test_no_sentence_of_the_intuition_chapter_depends_on_the_build_machines_timings():
    """Wall times on the build machine flip with its load, so no Markdown the chapter writes uses
    `toys.time_layers`'s result or anything computed from it."""
    tainted, leaks = timing_leaks(["".join(cell["source"]) for cell in code_cells("intuition")])
    assert "timings" in tainted and leaks == []
