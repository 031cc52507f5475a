"""`make setup` keeps a torch the user installed first and installs the CPU wheel otherwise.

Runs the real Makefile recipe against a throw-away venv folder whose `python` is a wrapper
(with or without torch importable) and whose pip only echoes what it was asked to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _setup_commands(tmp_path: Path, python: str) -> str:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    wrapper = venv / "bin" / "python"
    wrapper.write_text(f'#!/bin/sh\nexec {python} "$@"\n')
    wrapper.chmod(0o755)
    out = subprocess.run(
        ["make", "-s", "-B", f"VENV={venv}", "PIP=echo PIP", f"{venv}/bin/prunepi"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "MAKEFLAGS": ""},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_setup_keeps_an_installed_torch(tmp_path):
    pytest.importorskip("torch")
    out = _setup_commands(tmp_path, sys.executable)  # this venv's python: torch importable
    assert "torch==" not in out
    assert "PIP install -q -c constraints.txt -e .[dev]" in out


def test_setup_installs_the_cpu_wheel_without_torch(tmp_path):
    bare = shutil.which("python3.11") or shutil.which("python3")
    probe = subprocess.run([bare, "-c", "import torch"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip(f"{bare} has torch installed: no torch-free python to try")
    out = _setup_commands(tmp_path, bare)
    assert out.splitlines()[0] == "PIP install -q torch==2.13.0", out


def test_constraints_do_not_pin_torch():
    pins = [
        line.split("#")[0].strip() for line in (REPO / "constraints.txt").read_text().splitlines()
    ]
    assert not [p for p in pins if p.startswith("torch")], pins
