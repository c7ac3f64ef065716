"""flrp export: self-contained TorchScript / ONNX policies that act like ``predict`` (deterministic)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import flrp.algos  # noqa: F401  (registers every algorithm)
from flrp.algos.registry import ALGORITHMS
from flrp.cli import main
from flrp.errors import FlrpError
from flrp.export import NOT_EXPORTABLE, export_policy, load_exported

SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}


def _states(n: int = 1000, dim: int = 3) -> np.ndarray:
    """Spread wider than the training data, so the normalisation inside the file matters."""
    return (np.random.default_rng(1).normal(size=(n, dim)) * 3 + 0.5).astype(np.float32)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_exported_policy_acts_like_predict(name, fmt, tiny, dataset, tmp_path):
    algo = tiny(name)
    algo.fit(dataset, steps=3, progress=False)
    out = tmp_path / f"policy{SUFFIX[fmt]}"
    if name in NOT_EXPORTABLE:
        with pytest.raises(FlrpError, match=f"{name} cannot be exported"):
            export_policy(algo, fmt, out=out)
        return
    policy = load_exported(export_policy(algo, fmt, out=out))
    obs = _states()
    np.testing.assert_allclose(policy(obs), algo.predict(obs, deterministic=True), rtol=0, atol=1e-5)
    assert policy(obs[0]).shape == (dataset.act_dim,)
    assert policy.meta["algo"] == name and policy.meta["outputs"] == ["action"] and policy.meta["obs_dim"] == dataset.obs_dim


def test_lspc_s_exports_its_own_deterministic_latent(tiny, dataset, tmp_path):
    algo = tiny("lspc", variant="lspc-s")
    algo.fit(dataset, steps=3, progress=False)
    obs = _states(200)
    for fmt in ("torchscript", "onnx"):
        policy = load_exported(export_policy(algo, fmt, out=tmp_path / f"p{SUFFIX[fmt]}"))
        np.testing.assert_allclose(policy(obs), algo.predict(obs), rtol=0, atol=1e-5)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_flrp_safety_outputs_are_q_h_of_the_action_and_the_base_kl(fmt, tiny, dataset, tmp_path):
    algo = tiny("flrp", lr=1e-2)
    algo.fit(dataset, steps=20, progress=False)
    policy = load_exported(export_policy(algo, fmt, out=tmp_path / f"p{SUFFIX[fmt]}", safety=True, kl_samples=64, seed=3))
    obs = _states(40)
    action, q_h, kl = policy(obs)
    np.testing.assert_allclose(action, algo.predict(obs), rtol=0, atol=1e-5)
    s = torch.as_tensor(algo.spec.normalize_obs(obs))
    with torch.no_grad():
        expected_q = algo.modules["q_h"](s, torch.as_tensor(action) / algo.spec.action_bound).max(0).values.numpy()
    np.testing.assert_allclose(q_h, expected_q, rtol=0, atol=1e-5)
    expected_kl = []
    for i in range(len(obs)):  # FLRP.base_kl drawing the file's base samples (seed 3, 64 of them)
        algo._noise_gen.manual_seed(3)
        expected_kl.append(algo.base_kl(obs[i : i + 1], samples=64)[0])
    np.testing.assert_allclose(kl, expected_kl, rtol=1e-5, atol=1e-5)
    assert (kl > 0).all() and policy.meta["outputs"] == ["action", "q_h", "base_kl"]


def test_safety_outputs_need_a_feasibility_critic(tiny, dataset, tmp_path):
    algo = tiny("bc-all")
    algo.fit(dataset, steps=1, progress=False)
    with pytest.raises(FlrpError, match="only flrp exports Q_h"):
        export_policy(algo, out=tmp_path / "p.pt", safety=True)


def test_torchscript_file_runs_without_flrp(tiny, dataset, tmp_path):
    algo = tiny("flrp")
    algo.fit(dataset, steps=2, progress=False)
    path = export_policy(algo, "torchscript", out=tmp_path / "p.pt")
    obs = _states(5)
    code = (
        "import sys, json, torch\n"
        f"m = torch.jit.load({str(path)!r})\n"
        f"a = m(torch.tensor({obs.tolist()!r}))\n"
        "assert 'flrp' not in sys.modules\n"
        "print(json.dumps(a.tolist()))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    np.testing.assert_allclose(np.array(json.loads(res.stdout)), algo.predict(obs), rtol=0, atol=1e-5)


def test_cli_export_writes_beside_the_model(tiny, dataset, tmp_path, capsys):
    algo = tiny("bc-safe")
    algo.fit(dataset, steps=2, run_dir=tmp_path / "run", progress=False)
    assert main(["export", str(tmp_path / "run"), "--format", "onnx"]) == 0
    assert "policy.onnx: onnx policy, deterministic" in capsys.readouterr().out
    policy = load_exported(tmp_path / "run" / "policy.onnx")
    np.testing.assert_allclose(policy(_states(10)), algo.predict(_states(10)), rtol=0, atol=1e-5)
    assert main(["export", str(tmp_path / "run"), "--safety"]) == 2
    assert "only flrp exports Q_h" in capsys.readouterr().err
