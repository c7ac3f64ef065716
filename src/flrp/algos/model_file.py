"""The model/checkpoint file format (``model.pt``, ``checkpoint.pt``).

A file is one ``torch.save`` of a dict of tensors and plain values, read with
``torch.load(weights_only=True)``, so opening a crafted file runs no code. Keys: ``format``
(``"flrp"``), ``format_version``, ``flrp_version``, ``algo``, ``config``, ``spec``, ``modules``
(state dicts), ``step``, ``extra`` (algorithm state), ``checksum`` (sha256 of the rest); a
checkpoint adds ``optimizers``, ``rng`` and ``data_fingerprint``. Loading checks the version and
the checksum; every failure is one line. Saving is byte-reproducible.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import sys
from collections import OrderedDict
from dataclasses import fields
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

import flrp
from flrp.algos.registry import get_algorithm
from flrp.data.dataset import OfflineDataset
from flrp.data.spec import DataSpec
from flrp.errors import FlrpError
from flrp.files import fs_error, write_bytes

__all__ = [
    "CHECKPOINT_NAME",
    "FORMAT_VERSION",
    "MODEL_NAME",
    "checksum",
    "config_from_payload",
    "data_fingerprint",
    "plain",
    "read_payload",
    "require",
    "seal",
    "spec_from_payload",
    "write_payload",
]

CHECKPOINT_NAME = "checkpoint.pt"
MODEL_NAME = "model.pt"
# Version of the file layout; a file with a larger one is refused. Files without one (flrp 0.1
# before format versions) load without a checksum check.
FORMAT_VERSION = 1


def plain(obj: Any) -> Any:
    """A copy of ``obj`` that pickles the same way whatever its history, and loads with weights_only.

    numpy arrays/scalars become tensors/Python numbers. Containers are rebuilt and strings
    interned: pickle shares objects by identity, so a resumed run (whose strings came from
    unpickling) would otherwise write other bytes than an uninterrupted one."""
    if isinstance(obj, dict):
        out = (OrderedDict if isinstance(obj, OrderedDict) else dict)((plain(k), plain(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # state_dict's per-module versions
            out._metadata = plain(obj._metadata)  # type: ignore[attr-defined]
        return out
    if type(obj) in (list, tuple):
        return type(obj)(plain(v) for v in obj)
    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _digest(obj: Any, h: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(b"{")
        for k in sorted(obj, key=repr):
            h.update(repr(k).encode() + b":")
            _digest(obj[k], h)
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[")
        for v in obj:
            _digest(v, h)
        h.update(b"]")
    else:
        h.update(repr(obj).encode() + b",")


def checksum(payload: dict[str, Any]) -> str:
    """sha256 of everything in the file but the checksum: tensors' bytes, keys and plain values."""
    h = hashlib.sha256()
    _digest({k: v for k, v in payload.items() if k != "checksum"}, h)
    return h.hexdigest()


def seal(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` in canonical objects, with the format header and its checksum."""
    out = plain({"format": "flrp", "format_version": FORMAT_VERSION, "flrp_version": flrp.__version__, **payload})
    out["checksum"] = checksum(out)
    return out


def write_payload(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write a sealed payload atomically (one line on a full disk)."""
    # Serialised in memory: the zip's record names then do not depend on a temp file's name,
    # so identical runs give identical bytes.
    buf = io.BytesIO()
    torch.save(payload, buf)
    write_bytes(path, buf.getvalue())
    return Path(path)


def require(d: dict[str, Any], keys: Iterable[str], path: str | Path, prefix: str = "") -> None:
    missing = [k for k in keys if k not in d]
    if missing:
        raise FlrpError(f"{path}: missing key '{prefix}{missing[0]}' (not a complete flrp model/checkpoint file)")


def read_payload(path: str | Path) -> dict[str, Any]:
    """The payload of a model/checkpoint file, refused in one line unless it is intact and ours."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise FlrpError(f"{p}: no such model file") from None
    except OSError as exc:
        raise fs_error(p, exc, "cannot read") from None
    try:
        payload = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" in str(exc).lower():  # weights_only met a class or function: the file would run code
            raise FlrpError(f"{p}: refused: the file holds Python objects other than tensors and plain values (opening it could run code); not loaded") from None
        raise FlrpError(f"{p}: not a readable flrp model/checkpoint (corrupt or truncated)") from None
    except Exception:  # noqa: BLE001 - any unreadable file is one user-facing error
        raise FlrpError(f"{p}: not a readable flrp model/checkpoint (corrupt or truncated)") from None
    if not isinstance(payload, dict) or payload.get("format") != "flrp":
        raise FlrpError(f"{p}: not an flrp model/checkpoint file")
    version = payload.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise FlrpError(f"{p}: corrupt (format_version {version!r} is not an integer)")
    if version > FORMAT_VERSION:
        raise FlrpError(f"{p}: made by a newer flrp (file format {version}, flrp {payload.get('flrp_version')}); this flrp {flrp.__version__} reads format <= {FORMAT_VERSION}: upgrade flrp")
    require(payload, ("algo", "config", "spec", "modules", "step") + (("checksum",) if version >= 1 else ()), p)
    for key in ("config", "spec", "modules"):
        if not isinstance(payload[key], dict):
            raise FlrpError(f"{p}: corrupt ('{key}' is not a mapping)")
    try:
        config_cls = get_algorithm(str(payload["algo"])).Config
    except FlrpError as exc:
        raise FlrpError(f"{p}: {exc}") from None
    # Every field present: a silent default would change the model. The one exception: a field
    # added later, missing from a file written before it existed, takes the value that reproduces
    # what that older code did (LATER_FIELDS).
    later = LATER_FIELDS.get(str(payload["algo"]), {})
    require(payload["config"], [f.name for f in fields(config_cls) if f.name not in later], p, "config.")
    require(payload["spec"], [f.name for f in fields(DataSpec)], p, "spec.")
    if version >= 1 and payload["checksum"] != checksum(payload):
        raise FlrpError(f"{p}: corrupt (checksum mismatch: the file changed after it was saved)")
    for name, value in later.items():
        payload["config"].setdefault(name, value)
    return payload


# Config fields added after models were written, per algorithm, with the value that gives the
# behaviour of the code before the field existed.
LATER_FIELDS: dict[str, dict[str, Any]] = {
    "flrp": {"flow_episode_cost_max": None, "flow_episode_filter": "all-states", "select_margin": 0.0},
}


def config_from_payload(config_cls: Any, payload: dict[str, Any], path: str | Path) -> Any:
    try:
        return config_cls.from_dict(payload["config"])
    except FlrpError as exc:
        raise FlrpError(f"{path}: {exc}") from None


def spec_from_payload(payload: dict[str, Any]) -> DataSpec:
    return DataSpec(**{f.name: payload["spec"][f.name] for f in fields(DataSpec)})


def data_fingerprint(ds: OfflineDataset) -> str:
    """What a checkpoint records of its training data, so a resume on other data is refused."""
    h = hashlib.sha1()
    for arr in (ds.observations, ds.actions, ds.rewards, ds.costs):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]
