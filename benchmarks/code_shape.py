"""The shape of the code, measured with ``ast``: files, file lengths, function lengths.

    python benchmarks/code_shape.py [--root DIR] [--long 50]

Counts the Python files under ``engine/`` and ``qmtl_lock/`` (tests and benchmarks excluded).
A file's length is its number of lines; a function's is from its ``def`` line to its last line,
decorators excluded. Nested functions count on their own and inside their parent.
"""

from __future__ import annotations

import argparse
import ast
import statistics
from pathlib import Path

PACKAGES = ("engine", "qmtl_lock")


def _percentile(values: list[int], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def measure(root: Path, long: int = 50) -> dict[str, object]:
    files = sorted(p for pkg in PACKAGES for p in (root / pkg).rglob("*.py"))
    file_lines: list[int] = []
    functions: list[tuple[int, str]] = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        file_lines.append(len(text.splitlines()))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                functions.append((length, f"{path.relative_to(root)}:{node.lineno} {node.name}"))
    lengths = [n for n, _ in functions]
    return {
        "files": len(files),
        "median_file_lines": statistics.median(file_lines) if file_lines else 0,
        "p90_file_lines": round(_percentile(file_lines, 0.9), 1),
        "functions": len(functions),
        "median_function_lines": statistics.median(lengths) if lengths else 0,
        f"functions_over_{long}_lines": sorted((f for f in functions if f[0] > long),
                                               reverse=True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--long", type=int, default=50)
    args = parser.parse_args()
    for key, value in measure(args.root, args.long).items():
        if isinstance(value, list):
            print(f"{key}: {len(value)}")
            for length, where in value:
                print(f"  {length:4d}  {where}")
        else:
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
