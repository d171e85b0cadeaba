"""Rules of the code's shape that a reader relies on: functions short enough to read whole."""
import ast

from rtlib.paths import REPO

MAX_FUNCTION_LINES = 80
# a Triton kernel is one GPU program: where to split it is a performance choice, not a style one
EXEMPT = ("rtlib/kernels/",)


def long_functions(limit):
    """(path:line name, lines) of every function or method in rtlib longer than `limit` lines."""
    found = []
    for path in sorted((REPO / "rtlib").rglob("*.py")):
        name = path.relative_to(REPO).as_posix()
        if name.startswith(EXEMPT):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=name)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append((f"{name}:{node.lineno} {node.name}", lines))
    return found


def test_every_function_in_rtlib_fits_in_80_lines():
    offenders = long_functions(MAX_FUNCTION_LINES)
    assert not offenders, f"longer than {MAX_FUNCTION_LINES} lines: " + ", ".join(
        f"{where} ({lines})" for where, lines in offenders)


def test_the_check_finds_a_long_function():
    assert long_functions(10)
