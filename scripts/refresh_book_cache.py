"""Drop the book's cached executions that are older than the newest file under results/.

Jupyter Book's `execute_notebooks: cache` keys a notebook's outputs on its code cells only, so
a chapter that reads run records would keep showing old tables after new records land. Chapters
that never read results/ keep their cache. Run by `make book` before the build.
"""
import sys
from datetime import datetime, timezone
from pathlib import Path

from jupyter_cache import get_cache

READS_RESULTS = ("results/", "load_records", "load_analyses", "rtlib.results")


def main(cache_dir: str = "_build/.jupyter_cache", results: str = "results") -> int:
    if not Path(cache_dir).exists():
        return 0
    files = [path for path in Path(results).rglob("*") if path.is_file()]
    if not files:
        return 0
    newest = datetime.fromtimestamp(max(path.stat().st_mtime for path in files), timezone.utc)
    cache = get_cache(cache_dir)
    for record in cache.list_cache_records():
        source = Path("book") / (Path(record.uri).stem + ".md")
        reads = source.exists() and any(marker in source.read_text() for marker in READS_RESULTS)
        created = record.created.replace(tzinfo=timezone.utc)
        if reads and created < newest:
            cache.remove_cache(record.pk)
            print(f"re-execute {source}: results/ changed since {created:%Y-%m-%d %H:%M}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
