"""Progress that suits where it goes: a tqdm bar on a terminal, a periodic line in a log.

A bar redraws ~10 times a second; in a log file (``flrp train ... 2> train.log``, a sweep's
``train.log``, a batch job) every redraw is a carriage-return frame, thousands per run. When the
stream is not a terminal, :func:`progress` prints instead one plain line every
``$FLRP_PROGRESS_SECONDS`` (default 30) seconds and one at the end::

    flrp: flrp 1500/15000 steps (10%), 42.1 steps/s, 5m21s left; q_h=-0.98 elbo=3.1
"""

from __future__ import annotations

import os
import sys
import time
from typing import IO, Any

__all__ = ["LineProgress", "progress"]

DEFAULT_SECONDS = 30.0


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("FLRP_PROGRESS_SECONDS", DEFAULT_SECONDS)))
    except ValueError:
        return DEFAULT_SECONDS


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class LineProgress:
    """tqdm's ``update``/``set_postfix``/``write``/``close``/``n``, as periodic plain lines."""

    def __init__(self, total: int, initial: int = 0, desc: str = "", unit: str = "it", stream: IO[str] | None = None,
                 interval: float | None = None, disable: bool = False) -> None:
        self.total, self.n, self.desc, self.unit = int(total), int(initial), desc, unit
        self.stream = stream if stream is not None else sys.stderr
        self.interval = _interval() if interval is None else interval
        self.disable = disable
        self.postfix: dict[str, Any] = {}
        self._start_n, self._t0 = self.n, time.monotonic()
        self._last_t, self._last_n = self._t0, self.n
        self._closed = False

    def update(self, k: int = 1) -> None:
        self.n += k
        now = time.monotonic()
        if not self.disable and now - self._last_t >= self.interval:
            self._emit(now)

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        self.postfix = {**(ordered_dict or {}), **kwargs}

    def write(self, s: str, file: IO[str] | None = None) -> None:
        print(s, file=file if file is not None else self.stream, flush=True)

    def line(self, now: float | None = None) -> str:
        """The summary line as of ``now``."""
        now = time.monotonic() if now is None else now
        elapsed = max(now - self._t0, 1e-9)
        rate = (self.n - self._start_n) / elapsed
        parts = [f"{self.n}/{self.total} {self.unit}s" if self.total else f"{self.n} {self.unit}s"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        if self.n > self._start_n:
            parts.append(f"{rate:.3g} {self.unit}s/s")
            if self.total and self.n < self.total:
                parts.append(f"{_duration((self.total - self.n) / rate)} left")
            elif self.n >= self.total:
                parts.append(f"done in {_duration(elapsed)}")
        text = f"flrp: {self.desc + ' ' if self.desc else ''}{', '.join(parts)}"
        if self.postfix:
            text += "; " + " ".join(f"{k}={v}" for k, v in self.postfix.items())
        return text

    def _emit(self, now: float) -> None:
        self.write(self.line(now))
        self._last_t, self._last_n = now, self.n

    def close(self) -> None:
        if not self._closed and not self.disable and self.n != self._last_n:
            self._emit(time.monotonic())
        self._closed = True


def progress(total: int, initial: int = 0, desc: str = "", unit: str = "it", enabled: bool = True,
             stream: IO[str] | None = None, leave: bool = True) -> Any:
    """A tqdm bar if ``stream`` (default stderr) is a terminal, else a :class:`LineProgress`;
    nothing is shown when ``enabled`` is false."""
    out = stream if stream is not None else sys.stderr
    if enabled and out.isatty():
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, unit=unit, file=out, leave=leave, dynamic_ncols=True, mininterval=0.5)
    return LineProgress(total, initial, desc, unit, stream=out, disable=not enabled)
