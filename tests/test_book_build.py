"""The scripts around the book build: refresh_book_cache.py re-executes a cached page when rtlib's
source changes, and a page that reads results/ when results/ change, and nothing else."""
import importlib.util
from pathlib import Path

import nbformat
import pytest
from jupyter_cache import get_cache

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


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

