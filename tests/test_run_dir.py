"""The run-directory contract (flrp.rundir): lock, logs, file-system failures as one line (issue 12)."""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import pytest

import flrp.io
from flrp.cli import main
from flrp.errors import FlrpError
from flrp.logging import MetricsLogger
from flrp.rundir import run_lock


@pytest.fixture(autouse=True)
def _data_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FLRP_DATA_DIR", str(tmp_path_factory.getbasetemp() / "flrp-data"))


def _err(capsys, pattern: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("flrp: error:"), err
    assert re.search(pattern, err), err
    return err


def _steps(run: Path, name: str = "metrics.jsonl") -> list[int]:
    return [json.loads(line)["step"] for line in (run / name).read_text().splitlines()]


def test_lock_is_reentrant_within_a_process(tmp_path):
    with run_lock(tmp_path / "r"):
        with run_lock(tmp_path / "r"):
            pass
        assert (tmp_path / "r" / ".lock").read_text().split()[0] == str(os.getpid())


def test_garbled_log_line_keeps_later_rows(tmp_path):
    log = MetricsLogger(tmp_path)
    for s in (1, 2, 3, 4):
        log.log(s, {"loss": float(s)})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:7] + "\x00garbage"
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 5, "loss"')
    assert [r["step"] for r in log.read()] == [1, 3, 4]
    log.truncate_after(3)
    assert _steps(tmp_path) == [1, 3]
    assert (tmp_path / "metrics.csv").read_text().splitlines()[1:] == ["1,1.0", "3,3.0"]


def _enospc(fd, data):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_while_making_the_toy_dataset(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FLRP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(flrp.io, "_write_all", _enospc)
    assert main(["info", "toy", "--out", str(tmp_path / "s.png")]) == 2
    _err(capsys, r"data/ToyHazard-v0-seed0-1000\.hdf5: cannot write \(No space left on device\)")
    assert list((tmp_path / "data").iterdir()) == []


def test_fs_error_messages(tmp_path):
    e = flrp.io.fs_error("/x/y", PermissionError(errno.EACCES, "Permission denied"))
    assert str(e) == "/x/y: cannot write (Permission denied); check its permissions or choose another --out"
    (tmp_path / "garbled.json").write_text("{")
    with pytest.raises(FlrpError, match=r"garbled\.json: not valid JSON \(.*\); fix or delete it"):
        flrp.io.read_json(tmp_path / "garbled.json")
