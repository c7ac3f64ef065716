"""The contract every registered algorithm keeps (flrp.algos.base.Algorithm), one test per clause.

Finite metrics, every trained parameter moving, ``predict``'s shape and bounds, save/load
identity, bit-exact resume, lookup by name, exact soft target updates. An algorithm registered
without a tiny config in ``tests/conftest.py`` fails ``test_every_algorithm_has_a_tiny_config``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import flrp.algos  # noqa: F401  (registers every algorithm)
from flrp.algos.base import Algorithm
from flrp.algos.registry import ALGORITHMS, get_algorithm

NAMES = sorted(ALGORITHMS)
# Parameters that may legitimately stay put during a few steps, with the reason.
STILL: dict[str, set[str]] = {}


def _state(algo: Algorithm) -> dict[str, torch.Tensor]:
    """Every tensor of every module (parameters and buffers), by qualified name."""
    return {f"{k}.{n}": t.detach().clone() for k, m in algo.modules.items() for n, t in m.state_dict().items()}


def test_every_algorithm_has_a_tiny_config(tiny_configs):
    assert set(ALGORITHMS) == set(tiny_configs), "add a tiny config for each registered algorithm to tests/conftest.py"


@pytest.mark.parametrize("name", NAMES)
def test_lookup_by_name(name):
    cls = ALGORITHMS[name]
    assert cls.name == name and get_algorithm(name) is cls
    assert get_algorithm(name.upper().replace("-", "_")) is cls  # any case, _ or -
    assert issubclass(cls.Config, cls.Config.__mro__[-2]) and cls.Config().steps > 0


@pytest.mark.parametrize("name", NAMES)
def test_training_moves_every_trained_parameter_and_logs_finite_metrics(name, tiny, dataset):
    algo = tiny(name)
    algo.fit(dataset, steps=1, progress=False)
    before = {k: [p.detach().clone() for p in m.parameters()] for k, m in algo.modules.items()}
    hist = algo.fit(dataset, steps=5, log_every=1, progress=False)
    assert [row["step"] for row in hist] == [2, 3, 4, 5]
    assert all(np.isfinite(v) for row in hist for v in row.values()), hist
    still = []
    for k, m in algo.modules.items():
        for old, (pname, new) in zip(before[k], m.named_parameters()):
            assert torch.isfinite(new).all(), f"{k}.{pname}"
            if torch.equal(old, new) and f"{k}.{pname}" not in STILL.get(name, set()):
                still.append(f"{k}.{pname}")
    assert still == [], f"{name}: parameters that did not move: {still}"
    for k, m in algo.modules.items():  # target/EMA copies move by averaging only
        if k.endswith("_target") or k.endswith("_ema"):
            assert all(not p.requires_grad for p in m.parameters()), k


@pytest.mark.parametrize("name", NAMES)
def test_targets_move_by_exactly_tau(name, tiny, dataset):
    """After one ``after_update`` every ``X_target`` is ``(1 - tau) X_target + tau X``, exactly
    (a wrong tau, a hard copy or a skipped update fails); an algorithm without targets has an
    ``after_update`` that leaves every tensor as it was."""
    algo = tiny(name, tau=0.05) if "tau" in algo_fields(name) else tiny(name)
    algo.fit(dataset, steps=1, progress=False)
    pairs = [(k[: -len("_target")], k) for k in algo.modules if k.endswith("_target")]
    if not pairs:
        before = _state(algo)
        algo.after_update()
        after = _state(algo)
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before), name
        return
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # sources and targets far apart, so every parameter shows the step
        for src, _ in pairs:
            for p in algo.modules[src].parameters():
                p.add_(torch.randn(p.shape, generator=gen))
    old = {k: [p.detach().clone() for p in algo.modules[k].parameters()] for _, k in pairs}
    algo.after_update()
    tau = algo.config.tau
    for src, tgt in pairs:
        for o, s, n in zip(old[tgt], algo.modules[src].parameters(), algo.modules[tgt].parameters()):
            torch.testing.assert_close(n, (1 - tau) * o + tau * s.detach(), rtol=0, atol=1e-6)


def algo_fields(name: str) -> set[str]:
    import dataclasses

    return {f.name for f in dataclasses.fields(get_algorithm(name).Config)}


@pytest.mark.parametrize("name", NAMES)
def test_predict_shape_and_bounds(name, tiny, dataset):
    algo = tiny(name)
    algo.fit(dataset, steps=2, progress=False)
    bound = algo.spec.action_bound
    for deterministic in (True, False):
        batch = algo.predict(dataset.observations[:7], deterministic=deterministic)
        single = algo.predict(dataset.observations[0], deterministic=deterministic)
        assert batch.shape == (7, dataset.act_dim) and single.shape == (dataset.act_dim,)
        assert batch.dtype == np.float32 and np.isfinite(batch).all()
        assert np.all(np.abs(batch) <= bound + 1e-6)
    obs = dataset.observations[:7]
    np.testing.assert_array_equal(algo.predict(obs), algo.predict(obs))  # deterministic = repeatable
    with pytest.raises(Exception, match=f"width {dataset.obs_dim}"):
        algo.predict(np.zeros((2, dataset.obs_dim + 2), np.float32))


@pytest.mark.parametrize("name", NAMES)
def test_save_load_gives_the_same_model(name, tiny, dataset, tmp_path):
    algo = tiny(name)
    algo.fit(dataset, steps=3, progress=False)
    loaded = Algorithm.load(algo.save(tmp_path / "m.pt"), device="cpu")
    assert type(loaded) is type(algo) and loaded.config == algo.config and loaded.spec == algo.spec
    a, b = _state(algo), _state(loaded)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    obs = dataset.observations[:9]
    for deterministic in (True, False):  # same noise stream on both sides: stochastic paths match too
        algo._noise_gen.manual_seed(7)
        loaded._noise_gen.manual_seed(7)
        np.testing.assert_array_equal(algo.predict(obs, deterministic), loaded.predict(obs, deterministic))
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


@pytest.mark.parametrize("name", NAMES)
def test_resume_from_a_checkpoint_is_bit_exact(name, tiny, dataset, tmp_path):
    full = tiny(name)
    full.fit(dataset, steps=8, progress=False)
    tiny(name).fit(dataset, steps=4, run_dir=tmp_path / "run", checkpoint_every=4, progress=False)
    resumed = tiny(name)  # a fresh process would start exactly like this
    resumed.fit(dataset, steps=8, run_dir=tmp_path / "run", checkpoint_every=4, progress=False)
    assert resumed.step == 8
    a, b = _state(full), _state(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert repr(full._extra_state()) == repr(resumed._extra_state())  # multipliers, schedules, ...
    assert torch.equal(full._noise_gen.get_state(), resumed._noise_gen.get_state())
