"""Model and checkpoint files: no code runs on load, format version + checksum, byte-reproducible (issue 12)."""

from __future__ import annotations

import io
import os
import struct
import zipfile

import numpy as np
import pytest
import torch

from flrp.algos import FLRP, Algorithm, FLRPConfig
from flrp.algos.model_file import FORMAT_VERSION
from flrp.algos.model_file import checksum as _checksum
from flrp.algos.registry import get_algorithm
from flrp.cli import main
from flrp.errors import FlrpError

TINY = dict(hidden=16, batch_size=32, prior_layers=2, posterior_layers=1)


@pytest.fixture
def model(dataset, tmp_path):
    algo = FLRP(FLRPConfig(**TINY), device="cpu")
    algo.fit(dataset, steps=2, progress=False)
    return algo, algo.save(tmp_path / "model.pt")


def _payload(path) -> dict:
    return torch.load(path, weights_only=True)


def _resave(payload: dict, path, fix_checksum: bool = False) -> None:
    if fix_checksum:
        payload["checksum"] = _checksum(payload)
    torch.save(payload, path)


def _load_error(path) -> str:
    with pytest.raises(FlrpError) as e:
        Algorithm.load(path, device="cpu")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(path))
    return msg


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_file_runs_no_code(model, tmp_path, capsys, monkeypatch):
    _, path = model
    marker = tmp_path / "PWNED"
    payload = _payload(path)
    payload["extra"] = {"x": _Evil(str(marker))}
    torch.save(payload, path)  # a zip-format torch file whose pickle calls os.system
    msg = _load_error(path)
    assert "refused" in msg and "could run code" in msg
    with pytest.raises(FlrpError, match="refused"):
        FLRP(FLRPConfig(**TINY), device="cpu").load_checkpoint(path)
    # the same through the CLI: one line, exit 2
    monkeypatch.setenv("FLRP_DATA_DIR", str(tmp_path / "data"))
    assert main(["eval", str(tmp_path), "--task", "ToyHazard", "--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "refused" in err
    # a plain (legacy-format) pickle is refused too
    import pickle

    (tmp_path / "legacy.pt").write_bytes(pickle.dumps({"format": "flrp", "x": _Evil(str(marker))}, protocol=2))
    assert "refused" in _load_error(tmp_path / "legacy.pt")
    assert not marker.exists()


def test_random_and_truncated_bytes(model, tmp_path):
    _, path = model
    raw = path.read_bytes()
    (tmp_path / "rand.pt").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    assert "not a readable flrp model/checkpoint" in _load_error(tmp_path / "rand.pt")
    (tmp_path / "half.pt").write_bytes(raw[: len(raw) // 2])
    assert "not a readable flrp model/checkpoint" in _load_error(tmp_path / "half.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    assert "not an flrp model/checkpoint file" in _load_error(tmp_path / "other.pt")


def test_flipped_tensor_bytes_are_caught_by_the_checksum(model, tmp_path):
    _, path = model
    raw = bytearray(path.read_bytes())
    info = next(i for i in zipfile.ZipFile(io.BytesIO(bytes(raw))).infolist() if "/data/" in i.filename and i.file_size > 64)
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    raw[info.header_offset + 30 + name_len + extra_len + 7] ^= 0x10  # one bit inside a weight tensor
    path.write_bytes(bytes(raw))
    assert "corrupt (checksum mismatch" in _load_error(path)


def test_missing_config_key_is_named(model):
    _, path = model
    payload = _payload(path)
    del payload["config"]["refine_steps"]
    _resave(payload, path, fix_checksum=True)
    assert "missing key 'config.refine_steps'" in _load_error(path)
    del payload["spec"]
    _resave(payload, path)
    assert "missing key 'spec'" in _load_error(path)


def test_a_field_added_later_takes_the_value_of_the_code_that_wrote_the_file(model):
    """Models written before FLRPConfig.flow_episode_cost_max and flow_episode_filter existed load with None, "all-states" (what the
    older code did); a value present in the file is kept."""
    algo, path = model
    payload = _payload(path)
    del payload["config"]["flow_episode_cost_max"], payload["config"]["flow_episode_filter"]
    _resave(payload, path, fix_checksum=True)
    loaded = Algorithm.load(path, device="cpu")
    assert loaded.config == algo.config and loaded.config.flow_episode_cost_max is None
    assert loaded.config.flow_episode_filter == "all-states"
    payload["config"]["flow_episode_cost_max"] = 5.0
    _resave(payload, path, fix_checksum=True)
    assert Algorithm.load(path, device="cpu").config.flow_episode_cost_max == 5.0


def test_newer_format_is_refused(model):
    _, path = model
    payload = _payload(path)
    payload["format_version"] = FORMAT_VERSION + 1
    payload["flrp_version"] = "9.9.9"
    _resave(payload, path, fix_checksum=True)
    msg = _load_error(path)
    assert "made by a newer flrp" in msg and "9.9.9" in msg


def test_edited_fields_without_a_new_checksum_are_corrupt(model):
    _, path = model
    payload = _payload(path)
    payload["flrp_version"] = "9.9.9"
    _resave(payload, path)
    assert "checksum mismatch" in _load_error(path)


def test_changed_architecture_is_one_line(model):
    _, path = model
    payload = _payload(path)
    payload["config"]["hidden"] = 32
    _resave(payload, path, fix_checksum=True)
    assert "do not fit the network its config describes" in _load_error(path)


def test_files_without_a_format_version_still_load(model, dataset):
    algo, path = model
    payload = _payload(path)
    del payload["format_version"], payload["checksum"]
    _resave(payload, path)
    loaded = Algorithm.load(path, device="cpu")
    np.testing.assert_array_equal(loaded.predict(dataset.observations[:5]), algo.predict(dataset.observations[:5]))


def test_saving_is_byte_reproducible(dataset, tmp_path):
    def run(d):
        algo = FLRP(FLRPConfig(**TINY), device="cpu")
        algo.fit(dataset, steps=3, run_dir=d, progress=False, log_every=1)
        return (d / "model.pt").read_bytes(), (d / "checkpoint.pt").read_bytes()

    assert run(tmp_path / "a") == run(tmp_path / "b")


def test_numpy_extra_state_is_stored_as_plain_values(dataset, tmp_path, monkeypatch):
    algo = get_algorithm("cdt")(get_algorithm("cdt").Config(hidden=16, embed_dim=16, num_heads=2, num_layers=1, batch_size=8), device="cpu")
    algo.fit(dataset, steps=1, progress=False)
    monkeypatch.setattr(type(algo), "_extra_state", lambda self: {"default_target_return": np.float64(3.5), "table": np.arange(3)})
    path = algo.save_checkpoint(tmp_path / "ckpt.pt")
    payload = _payload(path)  # weights_only: would fail on numpy objects
    assert payload["extra"]["default_target_return"] == 3.5 and isinstance(payload["extra"]["default_target_return"], float)
    assert torch.equal(payload["extra"]["table"], torch.arange(3))
    assert Algorithm.load(path, device="cpu")._default_target_return == 3.5


@pytest.mark.parametrize("name", ["bc-all", "bc-safe", "bcq-lag", "cpq", "cdt", "fisor", "lspc", "flrp"])
def test_every_algorithms_checkpoint_loads_with_weights_only(name, dataset, tmp_path):
    cls = get_algorithm(name)
    sizes = {**TINY, "batch_size": 16, "embed_dim": 16, "num_heads": 2, "num_layers": 1, "actor_hidden": 16, "vae_hidden": 16}
    small = {k: v for k, v in sizes.items() if k in cls.Config.__dataclass_fields__}
    algo = cls(cls.Config(**small), device="cpu")
    algo.fit(dataset, steps=2, progress=False)
    path = algo.save_checkpoint(tmp_path / "c.pt")
    assert torch.load(path, weights_only=True)["format_version"] == FORMAT_VERSION
    other = cls(cls.Config(**small), device="cpu")
    other.build(algo.spec)
    other.load_checkpoint(path)
    assert torch.equal(other.parameters_vector(), algo.parameters_vector()) and other.step == 2
