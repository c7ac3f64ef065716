"""BC-All follows the data's cost; BC-Safe, cloning only episodes within the limit, stays safe."""

from __future__ import annotations

from flrp.algos.bc import BC, BCConfig, BCSafe, BCSafeConfig
from flrp.datasets import resolve_dataset
from flrp.evaluation.rollout import evaluate


def test_bc_all_inherits_the_datas_cost_and_bc_safe_stays_safe(tmp_path, monkeypatch):
    monkeypatch.setenv("FLRP_DATA_DIR", str(tmp_path))
    ds, task = resolve_dataset("toy")
    data_cost = ds.episode_costs().mean()  # 37.8: most behaviour episodes cross the hazard
    bc_all = BC(BCConfig(hidden=64, steps=3000), device="cpu")
    bc_all.fit(ds, progress=False)
    bc_safe = BCSafe(BCSafeConfig(hidden=64, steps=3000), device="cpu")
    bc_safe.fit(ds, progress=False)
    r_all = evaluate(bc_all, task, episodes=10)
    r_safe = evaluate(bc_safe, task, episodes=10)
    assert r_all.norm_cost_mean > 1.0, r_all.line()  # cloning everything is unsafe...
    assert r_all.cost_mean > 0.25 * data_cost, (r_all.line(), data_cost)  # ...like the data
    assert r_safe.norm_cost_mean <= 1.0, r_safe.line()
    assert r_safe.cost_mean < r_all.cost_mean
