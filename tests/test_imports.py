"""The package's import graph has layers: every import (lazy ones included) points to a lower one.

A unit is a top-level module or subpackage of ``flrp``; imports inside one unit are free. A new
module must be placed in ``LAYERS`` (the test names it otherwise).
"""

from __future__ import annotations

import ast
from pathlib import Path

import flrp

ROOT = Path(flrp.__file__).parent

# Lowest first; units on one line may not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("errors",),
    ("files", "devices", "runtime", "progress"),
    ("rundir", "metrics_log"),
    ("data",),
    ("nn",),
    ("envs",),
    ("plotting",),
    ("collect",),
    ("algos",),
    ("evaluation",),
    ("training",),
    ("export",),
    ("sweep",),
    ("cli",),
    ("__main__", "__init__"),  # __init__: the package's lazy ``flrp.make``
]
RANK = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _edges() -> set[tuple[str, str, str]]:
    edges = set()
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        here = _unit(".".join(rel.parts))
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                if name == "flrp" or name.startswith("flrp."):
                    there = _unit(name)
                    if there != here and name != "flrp":
                        edges.add((here, there, str(path.relative_to(ROOT.parent))))
    return edges


def test_every_unit_has_a_layer():
    units = {_unit(".".join(p.relative_to(ROOT.parent).with_suffix("").parts)) for p in ROOT.rglob("*.py")}
    assert units - set(RANK) == set(), "place these modules in LAYERS"


def test_imports_point_down_the_layers():
    up = sorted(f"{where}: {a} -> {b}" for a, b, where in _edges() if RANK[b] >= RANK[a])
    assert up == [], "\n".join(up)
