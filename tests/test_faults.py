"""Fault tolerance (slow, run with `pytest -m slow`): 10 SIGKILLs at random moments, some mid-save."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_ten_kills_resume_from_complete_checkpoints_and_finish_identically():
    out = subprocess.run([sys.executable, "benchmarks/kill_resume.py", "--kills", "10"], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all from complete checkpoints: True" in out.stdout
    assert "identical to the uninterrupted run: True" in out.stdout
