"""The scripts around the book build: refresh_book_cache.py re-executes a cached page when rtlib's
source changes, and a page that reads results/ when results/ change, and nothing else;
check_pages.py fails on what a reader should not see."""
import importlib.util
from pathlib import Path

import nbformat
import pytest
from jupyter_cache import get_cache

from rtlib.paths import REPO

SCRIPTS = REPO / "scripts"


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def refresh(tmp_path, monkeypatch):
    """The cache script, pointed at a small repository in tmp_path with two pages: `report`
    reads results/, `theory` does not."""
    module = script("refresh_book_cache")
    for name, text in {"rtlib/models/net.py": "WIDTH = 1\n", "results/records/a.json": "{}\n",
                       "book/report.md": "records = load_records()\n", "book/theory.md": "1 + 1\n"}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(module, "REPO", tmp_path)
    return module


def cache_pages(cache_dir: Path, tmp_path: Path) -> None:
    cache = get_cache(cache_dir)
    for name in ("report", "theory"):
        path = tmp_path / "notebooks" / f"{name}.ipynb"
        path.parent.mkdir(exist_ok=True)
        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"print({name!r})")])
        nbformat.write(notebook, path)
        cache.cache_notebook_file(str(path), check_validity=False, overwrite=True)


def cached(cache_dir: Path) -> list[str]:
    return sorted(Path(record.uri).stem for record in get_cache(cache_dir).list_cache_records())


def test_pages_are_dropped_when_their_inputs_change(refresh, tmp_path, capsys):
    cache_dir = tmp_path / "_build" / ".jupyter_cache"
    assert refresh.main(str(cache_dir)) == 0 and not cache_dir.exists()  # no cache yet: nothing to do

    cache_pages(cache_dir, tmp_path)
    refresh.main(str(cache_dir))
    assert cached(cache_dir) == []  # ran before any stamp: what they ran with is unknown
    cache_pages(cache_dir, tmp_path)
    refresh.main(str(cache_dir))
    assert cached(cache_dir) == ["report", "theory"]  # nothing changed since

    (tmp_path / "results" / "records" / "b.json").write_text("{}\n")
    refresh.main(str(cache_dir))
    assert cached(cache_dir) == ["theory"]
    assert "re-execute report.ipynb: results changed since it ran" in capsys.readouterr().out

    cache_pages(cache_dir, tmp_path)
    (tmp_path / "rtlib" / "models" / "net.py").write_text("WIDTH = 2\n")
    refresh.main(str(cache_dir))
    assert cached(cache_dir) == []


@pytest.mark.parametrize("shown, problem", [
    ("<pre>&lt;torch._C.Generator at 0x7f11aad901b0&gt;</pre>", "memory address"),
    ("<td>NaN</td>", "table cell"),
    ("<td>&lt;NA&gt;</td>", "table cell"),
    ('<div class="output stderr"><pre>UserWarning</pre></div>', "warning output"),
    ("<p>14 run records read from {repo}/results/records</p>", "build machine's path"),
])
def test_check_pages_names_what_a_reader_should_not_see(tmp_path, capsys, shown, problem):
    check_pages = script("check_pages")
    (tmp_path / "clean.html").write_text("<p>14 run records read from results/records</p><td>–</td>")
    assert check_pages.main(str(tmp_path)) == 0
    page = shown.format(repo=check_pages.REPO)
    (tmp_path / "page.html").write_text(page)
    assert check_pages.main(str(tmp_path)) == 1
    assert "page.html: shows" in capsys.readouterr().err
    assert [problem in found for found in check_pages.problems(page)] == [True]
