"""A sweep's records in a directory you can commit: what survives when its machine does not.

A sweep directory holds each run's model and checkpoints (megabytes, often not worth committing)
next to the few small files its result is made of. :func:`archive_records` copies the latter —
``sweep.json`` and, of every evaluated run, ``run.json``, ``config.json``, ``eval.json`` (with
its per-episode returns and costs) and ``timing.json`` — into another directory in the same
layout, merging with what is there, and rebuilds the report there. That directory is itself a
sweep directory without models:

* ``flrp sweep report DEST`` rebuilds the same report from it alone (the bootstrap intervals
  included: the episodes are in the records);
* runs archived from an earlier machine stay in it, so a sweep spread over machines that do not
  keep their disks ends with one report over all its runs;
* copied back into a sweep directory (``cp -r DEST/. runs/x``), its runs count as done
  (:func:`flrp.sweep.spec.run_status` looks for ``eval.json``) and a rerun of the sweep's
  command trains only the rest.

``flrp sweep report DIR --archive DEST`` calls it.
"""

from __future__ import annotations

import os
from pathlib import Path

from flrp.errors import FlrpError
from flrp.files import fs_error, write_bytes

__all__ = ["RECORD_FILES", "archive_records"]

#: The files of a run that its row of the report is made of (``eval.json`` marks it evaluated).
RECORD_FILES = ("run.json", "config.json", "eval.json", "timing.json")


def archive_records(root: str | os.PathLike[str], dest: str | os.PathLike[str]) -> list[str]:
    """Copy the manifest and every evaluated run's :data:`RECORD_FILES` from ``root`` into ``dest``.

    ``dest``'s manifest is merged with ``root``'s (its runs first, then ``root``'s new ones);
    a run in both takes ``root``'s files. Each file is written atomically.

    Returns:
        The run directories copied, relative to ``root``.

    Raises:
        FlrpError: ``root`` has no ``sweep.json``; ``dest`` is ``root`` or inside it; ``dest``'s manifest
            records other sweep settings.
    """
    from flrp.sweep.spec import MANIFEST_NAME, RunSpec, SweepSettings, _load_manifest, update_manifest

    src, out = Path(root).expanduser().resolve(), Path(dest).expanduser().resolve()
    if src == out or src in out.parents:
        raise FlrpError(f"--archive {dest}: the sweep directory or inside it; give a directory outside {root}")
    if not (src / MANIFEST_NAME).is_file():
        raise FlrpError(f"{root}: not a sweep directory (no {MANIFEST_NAME})")
    manifest = _load_manifest(src) or {}
    settings = SweepSettings.from_dict(manifest.get("settings", {}))
    recorded = _load_manifest(out) if out.is_dir() else None
    theirs = SweepSettings.from_dict(recorded.get("settings", {})) if recorded is not None else settings
    if theirs != settings:
        raise FlrpError(f"--archive {dest}: its {MANIFEST_NAME} records a sweep with {theirs.describe()}, not {settings.describe()}; give another directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fs_error(out, exc, "cannot create") from None
    update_manifest(out, [RunSpec.from_dict(r) for r in manifest.get("runs", [])], settings)
    copied: list[str] = []
    for ev in sorted(src.rglob("eval.json")):
        run_dir = ev.parent
        if not (run_dir / "run.json").is_file():
            continue
        rel = run_dir.relative_to(src)
        for name in RECORD_FILES:
            if (run_dir / name).is_file():
                (out / rel).mkdir(parents=True, exist_ok=True)
                write_bytes(out / rel / name, (run_dir / name).read_bytes())
        copied.append(rel.as_posix())
    return copied
