"""Fail when a built page of the book shows what a reader should never see.

Reads every HTML page under the given build folder (default _build/html) and reports, page by
page: object reprs with memory addresses (`<torch._C.Generator at 0x...>`), table cells holding
NaN, <NA> or None (`rtlib.colab.table_html` shows missing values as "–"), the build machine's
path to the repository, and error or warning output of a cell. Run by `make test` after the
smoke build.
"""
import html
import re
import sys
from pathlib import Path

from rtlib.paths import REPO

TAG = re.compile(r"<[^>]+>")
SCRIPT_OR_STYLE = re.compile(r"<(script|style)\b.*?</\1>", re.S)
IN_HTML = {
    "a NaN, <NA> or None table cell": re.compile(r"<td>(?:NaN|nan|&lt;NA&gt;|None)</td>"),
    "a cell's error or warning output": re.compile(r'class="output (?:stderr|traceback)'),
}
IN_TEXT = {"an object's memory address": re.compile(r"<[^<>]* at 0x[0-9a-f]+>")}


def problems(page: str) -> list[str]:
    text = html.unescape(TAG.sub(" ", SCRIPT_OR_STYLE.sub(" ", page)))
    found = [what for what, pattern in IN_HTML.items() if pattern.search(page)]
    found += [what for what, pattern in IN_TEXT.items() if pattern.search(text)]
    if str(REPO) in text:
        found.append(f"the build machine's path {REPO}")
    return found


def main(build: str = "_build/html") -> int:
    pages = sorted(Path(build).rglob("*.html"))
    if not pages:
        print(f"check_pages: no HTML pages under {build}", file=sys.stderr)
        return 1
    report = {page: problems(page.read_text(encoding="utf-8")) for page in pages}
    bad = {page: found for page, found in report.items() if found}
    for page, found in bad.items():
        print(f"{page}: shows {'; '.join(found)}", file=sys.stderr)
    print(f"check_pages: {len(pages)} pages, {len(bad)} with something a reader should not see")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
