"""Drop the cached executions of book pages whose inputs beyond their code cells have changed.

Jupyter Book's `execute_notebooks: cache` keys a page's outputs on its code cells only, so a page
would keep showing what an older `rtlib` computed, or old tables after new records land. This
script keeps, beside the cache, the SHA-256 of the library's source (`rtlib/**/*.py`) and of
`results/` as they were when the cached pages ran. When the library changed, every cached page is
dropped (every page imports it); when results/ changed, the pages that read results/ are. Run
by `make book` and `make test` before each build, with the build's cache folder.
"""
import hashlib
import json
import sys
from pathlib import Path

from jupyter_cache import get_cache
from rtlib.paths import REPO

READS_RESULTS = ("results/", "load_records", "load_analyses", "rtlib.results")
STAMP = "inputs.sha256.json"  # in the cache folder


def tree_hash(files) -> str:
    """SHA-256 over the paths (relative to the repository) and contents of `files`."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def current_inputs() -> dict[str, str]:
    return {"rtlib": tree_hash((REPO / "rtlib").rglob("*.py")),
            "results": tree_hash(path for path in (REPO / "results").rglob("*") if path.is_file())}


def reads_results(uri: str) -> bool:
    source = REPO / "book" / f"{Path(uri).stem}.md"
    return source.exists() and any(marker in source.read_text() for marker in READS_RESULTS)


def main(cache_dir: str) -> int:
    cache_path = Path(cache_dir)
    if not cache_path.exists():
        return 0
    stamp = cache_path / STAMP
    previous = json.loads(stamp.read_text()) if stamp.exists() else {}
    now = current_inputs()
    cache = get_cache(cache_path)
    for record in cache.list_cache_records():
        changed = [name for name in now if previous.get(name) != now[name]
                   and (name == "rtlib" or reads_results(record.uri))]
        if changed:
            cache.remove_cache(record.pk)
            print(f"re-execute {Path(record.uri).name}: {' and '.join(changed)} changed since it ran")
    stamp.write_text(json.dumps(now, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
