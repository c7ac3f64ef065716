"""flrp.progress: a bar on a terminal, periodic plain lines otherwise (no carriage returns in logs)."""

from __future__ import annotations

import io

from flrp.progress import LineProgress, progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_and_a_log_gets_lines():
    from tqdm.auto import tqdm

    bar = progress(10, stream=_Terminal())
    assert isinstance(bar, tqdm)
    bar.close()
    assert isinstance(progress(10, stream=io.StringIO()), LineProgress)


def test_lines_come_at_the_interval_and_at_the_end():
    out = io.StringIO()
    p = LineProgress(100, initial=20, desc="bc-all", unit="step", stream=out, interval=3600)
    for _ in range(30):
        p.update()
    assert out.getvalue() == ""  # within the interval: silent
    p.interval = 0
    p.set_postfix({"loss": "0.5"})
    p.update()
    p.n = 100
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue()
    assert lines[0].startswith("flrp: bc-all 51/100 steps (51%), ") and "left; loss=0.5" in lines[0]
    assert lines[1].startswith("flrp: bc-all 100/100 steps (100%), ") and "done in" in lines[1]
    p.close()  # once only
    assert len(out.getvalue().splitlines()) == 2


def test_disabled_progress_prints_nothing():
    out = io.StringIO()
    p = progress(5, stream=out, enabled=False)
    p.update(5)
    p.close()
    assert out.getvalue() == ""


def test_training_into_a_log_writes_summary_lines(tiny, dataset, capsys, monkeypatch):
    monkeypatch.setenv("FLRP_PROGRESS_SECONDS", "0")
    tiny("bc-all").fit(dataset, steps=3, log_every=1, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.splitlines()
    assert lines[0].startswith("flrp: bc-all 1/3 steps") and lines[-1].startswith("flrp: bc-all 3/3 steps (100%)")
