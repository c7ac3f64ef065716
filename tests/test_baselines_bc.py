"""BC-All follows the data's cost; BC-Safe, cloning only episodes within the limit, stays safe."""

from __future__ import annotations

from flrp.algos.bc import BC, BCConfig, BCSafe, BCSafeConfig
from flrp.evaluation.rollout import evaluate
from flrp.training.datasets import resolve_dataset


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


def test_resume_across_a_sampling_block_is_bit_exact(tmp_path, monkeypatch):
    """Minibatch indices are drawn SAMPLE_BLOCK steps at a time: a checkpoint inside a block and
    a run that crosses blocks after resuming still reproduce the uninterrupted run exactly."""
    import torch

    from flrp.algos.base import SAMPLE_BLOCK

    monkeypatch.setenv("FLRP_DATA_DIR", str(tmp_path))
    ds, _ = resolve_dataset("toy")
    cfg = BCConfig(hidden=8, batch_size=16)
    total, cut = SAMPLE_BLOCK + 40, SAMPLE_BLOCK - 30
    full = BC(cfg, device="cpu")
    full.fit(ds, steps=total, progress=False)
    BC(cfg, device="cpu").fit(ds, steps=cut, run_dir=tmp_path / "run", checkpoint_every=cut, progress=False)
    # a checkpoint loaded and saved again before any step keeps the position inside the block
    relay = BC(cfg, device="cpu")
    relay.load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    relay.save_checkpoint(tmp_path / "run" / "checkpoint.pt")
    resumed = BC(cfg, device="cpu")
    resumed.fit(ds, steps=total, run_dir=tmp_path / "run", checkpoint_every=10_000, progress=False)
    assert resumed.step == total
    for a, b in zip(full.modules["actor"].parameters(), resumed.modules["actor"].parameters()):
        assert torch.equal(a, b)
    # and the block draws are the per-step draws: a fresh generator gives the same first batch
    g = torch.Generator().manual_seed(cfg.seed + 1)
    first = torch.randint(len(ds.observations), (cfg.batch_size,), generator=g)
    probe = BC(cfg, device="cpu")
    probe.build(full.spec)
    data = probe._to_device(probe.prepare_data(ds))
    assert torch.equal(probe.sample_batch(data, cfg.batch_size)["obs"], data["obs"][first])
