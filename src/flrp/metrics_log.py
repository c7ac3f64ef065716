"""Run metrics: JSONL (append, crash-tolerant), a CSV view rewritten atomically, optional tensorboard."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from flrp.files import append_text, ensure_dir, write_text

__all__ = ["MetricsLogger"]


class MetricsLogger:
    """Append one JSON line per log event; on resume, drop lines past the checkpoint's step.

    A run killed mid-write can leave at most a partial last line; ``truncate_after`` (called on
    resume) rewrites the file atomically without it, so the log matches the restored state. A
    garbled line anywhere is skipped; the valid rows after it are kept.
    """

    def __init__(self, run_dir: str | Path | None, tensorboard: bool = False) -> None:
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._tb: Any = None
        if self.run_dir is not None:
            ensure_dir(self.run_dir)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError as exc:  # pragma: no cover - optional dependency
                    from flrp.errors import FlrpError

                    raise FlrpError(f"--tensorboard needs the tensorboard package: pip install 'flrp[tensorboard]' ({exc})") from None
                self._tb = SummaryWriter(str(self.run_dir / "tb"))

    @property
    def path(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / "metrics.jsonl"

    def read(self) -> list[dict[str, Any]]:
        if self.path is None or not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a partial line from a killed run, or a damaged one
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                rows.append(row)
        return rows

    def truncate_after(self, step: int) -> None:
        if self.path is None:
            return
        rows = [r for r in self.read() if r["step"] <= step]
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))
        self.write_csv()

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": step, **metrics}
        if self.path is not None:
            append_text(self.path, json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(k, v, step)

    def write_csv(self) -> None:
        rows = self.read()
        if self.run_dir is None:
            return
        if not rows:
            (self.run_dir / "metrics.csv").unlink(missing_ok=True)
            return
        keys = sorted({k for r in rows for k in r} - {"step"})
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["step", *keys])
        w.writeheader()
        w.writerows(rows)
        write_text(self.run_dir / "metrics.csv", buf.getvalue())

    def close(self) -> None:
        self.write_csv()
        if self._tb is not None:
            self._tb.close()
