"""The DSRL HDF5 loader: round trip, episode structure, and one-line errors on malformed files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from flrp.data.hdf5 import REQUIRED_KEYS, load_dsrl_hdf5, write_dsrl_hdf5
from flrp.errors import FlrpError
from tests.conftest import synthetic_arrays


def _write_raw(path, arrays):
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)


def test_round_trip_and_episodes(tmp_path, arrays):
    path = write_dsrl_hdf5(tmp_path / "d.hdf5", arrays)
    ds = load_dsrl_hdf5(path)
    assert len(ds) == 500 and ds.num_episodes == 20
    np.testing.assert_array_equal(ds.observations, arrays["observations"])
    assert ds.episode_bounds[0] == (0, 25) and ds.episode_bounds[-1] == (475, 500)
    np.testing.assert_allclose(ds.episode_costs()[0], arrays["costs"][:25].sum())
    assert [p.name for p in tmp_path.iterdir()] == ["d.hdf5"]  # no temp file left


def test_terminals_and_timeouts_both_end_episodes(tmp_path, arrays):
    arrays["terminals"][10] = True  # an early termination inside episode 0
    ds = load_dsrl_hdf5(write_dsrl_hdf5(tmp_path / "d.hdf5", arrays))
    assert ds.episode_bounds[:2] == [(0, 11), (11, 25)]
    assert ds.num_episodes == 21


def test_column_vectors_are_squeezed(tmp_path, arrays):
    arrays["rewards"] = arrays["rewards"][:, None]
    arrays["costs"] = arrays["costs"][:, None]
    _write_raw(tmp_path / "d.hdf5", arrays)
    ds = load_dsrl_hdf5(tmp_path / "d.hdf5")
    assert ds.rewards.shape == (500,) and ds.costs.shape == (500,)


@pytest.mark.parametrize("key", REQUIRED_KEYS)
def test_missing_key(tmp_path, arrays, key):
    del arrays[key]
    _write_raw(tmp_path / "d.hdf5", arrays)
    with pytest.raises(FlrpError, match=rf"d\.hdf5: missing key '{key}'") as e:
        load_dsrl_hdf5(tmp_path / "d.hdf5")
    assert "\n" not in str(e.value)


def test_mismatched_lengths(tmp_path, arrays):
    arrays["costs"] = arrays["costs"][:-3]
    _write_raw(tmp_path / "d.hdf5", arrays)
    with pytest.raises(FlrpError, match=r"d\.hdf5: key 'costs' has 497 rows, 'observations' has 500"):
        load_dsrl_hdf5(tmp_path / "d.hdf5")


def test_wrong_rank(tmp_path, arrays):
    arrays["actions"] = arrays["actions"][:, 0]
    _write_raw(tmp_path / "d.hdf5", arrays)
    with pytest.raises(FlrpError, match=r"key 'actions' must have rank 2"):
        load_dsrl_hdf5(tmp_path / "d.hdf5")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite(tmp_path, arrays, bad):
    arrays["rewards"][7] = bad
    _write_raw(tmp_path / "d.hdf5", arrays)
    with pytest.raises(FlrpError, match=r"d\.hdf5: key 'rewards' has 1 NaN/inf"):
        load_dsrl_hdf5(tmp_path / "d.hdf5")


def test_empty_dataset(tmp_path):
    arrays = {k: v[:0] for k, v in synthetic_arrays().items()}
    _write_raw(tmp_path / "d.hdf5", arrays)
    with pytest.raises(FlrpError, match=r"d\.hdf5: key 'observations' is empty"):
        load_dsrl_hdf5(tmp_path / "d.hdf5")


def test_empty_file(tmp_path):
    (tmp_path / "d.hdf5").write_bytes(b"")
    with pytest.raises(FlrpError, match=r"d\.hdf5: file is empty"):
        load_dsrl_hdf5(tmp_path / "d.hdf5")


def test_truncated_file(tmp_path, arrays):
    path = write_dsrl_hdf5(tmp_path / "d.hdf5", arrays)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FlrpError, match=r"d\.hdf5: .*(truncated|unreadable)") as e:
        load_dsrl_hdf5(path)
    assert "\n" not in str(e.value)


def test_not_hdf5(tmp_path):
    (tmp_path / "d.hdf5").write_text("hello, not hdf5")
    with pytest.raises(FlrpError, match=r"d\.hdf5: not a readable HDF5 file"):
        load_dsrl_hdf5(tmp_path / "d.hdf5")


def test_missing_file(tmp_path):
    with pytest.raises(FlrpError, match=r"nope\.hdf5: no such file"):
        load_dsrl_hdf5(tmp_path / "nope.hdf5")


def test_writer_rejects_bad_arrays_and_leaves_nothing(tmp_path, arrays):
    arrays["observations"][0, 0] = np.nan
    with pytest.raises(FlrpError, match="NaN/inf"):
        write_dsrl_hdf5(tmp_path / "d.hdf5", arrays)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_partial_file(tmp_path, arrays, monkeypatch):
    class Boom(RuntimeError):
        pass

    orig = h5py.File.create_dataset

    def failing(self, name, *a, **k):
        if name == "costs":
            raise Boom("disk full")
        return orig(self, name, *a, **k)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing)
    with pytest.raises(Boom):
        write_dsrl_hdf5(tmp_path / "d.hdf5", arrays)
    assert list(tmp_path.iterdir()) == []


def test_written_files_get_normal_permissions(tmp_path, arrays):
    import os
    import stat

    umask = os.umask(0o022)
    try:
        path = write_dsrl_hdf5(tmp_path / "d.hdf5", arrays)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
