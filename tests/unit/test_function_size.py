"""No product function is over 60 lines (developers' guide: small functions; issue 11).

A long function is where a newcomer cannot find the one place to change: split it into
named steps (services/train/worker.py `setup` / `resume` / `MetricWindow` / `save` is the
pattern). Tests are exempt: a test reads top to bottom as one story.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("policies", "services", "envs", "tune", "prunepi", "benchmarks")
MAX_LINES = 60


def long_functions(root: Path = ROOT) -> list[str]:
    found = []
    for package in PRODUCT:
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > MAX_LINES:
                        found.append(f"{path.relative_to(root)}:{node.lineno} {node.name}: {lines}")
    return found


def test_no_product_function_is_over_60_lines():
    assert long_functions() == []


def test_the_check_sees_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "long.py").write_text(f"def long():\n{body}\n")
    assert long_functions(tmp_path) == ["policies/long.py:1 long: 61"]
