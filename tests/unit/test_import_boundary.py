"""policies/ and envs/ never import Ray or torch.distributed (the guide's layering: Ray lives
in thin functions in services/ and tune/), not even lazily inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("ray", "torch.distributed")


def forbidden_imports(source: str) -> list[str]:
    """Modules of `FORBIDDEN` (or below them) that `source` imports, at any depth."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found += [n for n in names if any(n == f or n.startswith(f + ".") for f in FORBIDDEN)]
    return found


def test_the_scan_finds_lazy_and_from_imports():
    src = "def f():\n    import ray.train\n    from torch import distributed\n    import rayon\n"
    assert forbidden_imports(src) == ["ray.train", "torch.distributed"]


@pytest.mark.parametrize("package", ["policies", "envs"])
def test_package_never_imports_ray(package):
    bad = {
        str(p.relative_to(ROOT)): hits
        for p in sorted((ROOT / package).rglob("*.py"))
        if (hits := forbidden_imports(p.read_text()))
    }
    assert bad == {}
