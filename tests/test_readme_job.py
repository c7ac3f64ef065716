"""Opt-in (FLRP_README_JOB=1; ~10 min on 2 idle cores): run the README's main job and compare the
lines it prints with the ones the README quotes, character for character (same seed, same numbers).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def main_job() -> tuple[list[str], list[str]]:
    """(the main job's ``flrp train`` argv, the output lines the README quotes for it)."""
    text = README.read_text()
    command = re.search(r"pip install \. && (flrp train [^\n`]*)", text)
    quoted = re.search(r"run prints[^\n]*\n+```\n(.*?)```", text, re.S)
    assert command and quoted, "README: the main job's command or its printed lines moved"
    return shlex.split(command.group(1))[1:], [ln for ln in quoted.group(1).splitlines() if ln.strip()]


def test_the_readme_quotes_a_command_and_its_output():
    argv, lines = main_job()
    assert argv[:3] == ["train", "--dataset", "toy"] and lines and all(ln.startswith("flrp: ") for ln in lines)


@pytest.mark.skipif(not os.environ.get("FLRP_README_JOB"), reason="opt-in: FLRP_README_JOB=1 runs the README's main job (~10 min)")
def test_the_main_job_prints_what_the_readme_says(tmp_path):
    argv, lines = main_job()
    env = {**os.environ, "FLRP_DATA_DIR": str(tmp_path / "data")}
    res = subprocess.run([sys.executable, "-m", "flrp", *argv, "--out", str(tmp_path / "run")], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    # a line that names a file it wrote ends ' -> PATH': the README quotes it without the machine's path
    printed = [re.sub(r" -> \S+$", "", ln) for ln in res.stdout.splitlines()]
    for line in lines:
        assert line in printed, f"README says:\n{line}\nthe run printed:\n" + "\n".join(printed)
