"""Training-step throughput of the baselines shared with OSRL: flrp vs OSRL's own code, same run.

For BC (bc-all), BCQ-Lag (OSRL BCQL), CPQ and CDT this builds OSRL's model + trainer at OSRL's
default config sizes (``examples/configs/*_configs.py``: hidden sizes, batch, num_q, VAE width,
sample_action_num, CDT embedding/layers/heads/seq_len/batch 2048) and flrp's algorithm with its
config set to the same sizes, then times one training update of each on the same obs/act dims,
interleaved in rounds (OSRL chunk, flrp chunk, alternating which goes first), on
``--threads`` torch threads (default 1). Rates are steps per CPU-second of the timing thread
(``time.thread_time``: robust on a shared machine where the process waits for a core), with the
wall-clock ratio printed too. FLOPs per step come from torch's FlopCounterMode.

``cpq`` runs flrp's CPQ with ``ood_penalty="osrl"`` (OSRL's arithmetic: the OOD term without
gradient, on the target cost critic); ``cpq-paper`` runs flrp's default ``"paper"`` mode, whose
OOD term back-propagates through the online cost critic on the 10 x batch samples (more work).

* OSRL step: ``trainer.train_one_step(...)`` on a fixed batch of random tensors of OSRL's shapes
  and dtypes (no DataLoader, so OSRL's data loading is *not* charged).
* flrp step: ``algo.sample_batch`` + ``algo.update`` + ``algo.after_update`` as in
  ``benchmarks/bench_update.py`` (minibatch sampling *is* charged to flrp).

OSRL is imported from a checkout given by ``--osrl-src`` (e.g. ``git --git-dir=<mirror> archive
HEAD | tar -x -C DIR``); nothing of it is copied here. Its logging/dataset-only dependencies
(``fsrl.utils`` loggers) are replaced by stub modules when not installed, and the ``osrl``,
``osrl.common`` and ``osrl.algorithms`` package ``__init__`` files are bypassed (they import the
dataset code, which needs scipy/yaml/oapackage, irrelevant to an update step). Not a test:
nothing is asserted.

    python benchmarks/bench_osrl.py --osrl-src /work/osrl-src [--algos bc-all bcq-lag cpq cpq-paper cdt]
        [--seconds 12] [--rounds 6] [--min-steps 2] [--update-only] [--threads 1] [--obs-dim 72 --act-dim 2]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from flrp.algos.base import get_algorithm
from flrp.data.dataset import OfflineDataset

EPISODE_LEN = 300  # OSRL CarCircle episode_len (bc/bcql/cpq/cdt configs)
COST_LIMIT = 10


# ---------------------------------------------------------------------------- OSRL import
def load_osrl(src: Path) -> dict[str, types.ModuleType]:
    """Import OSRL's algorithm modules from a source checkout without its logging/dataset deps."""
    src = src.resolve()
    if not (src / "osrl" / "common" / "net.py").exists():
        raise SystemExit(f"{src}: not an OSRL checkout (no osrl/common/net.py)")
    sys.path.insert(0, str(src))
    try:
        import fsrl.utils  # noqa: F401
    except ImportError:
        fsrl = types.ModuleType("fsrl")
        utils = types.ModuleType("fsrl.utils")

        class DummyLogger:  # the subset of fsrl's logger OSRL's trainers call during an update
            def __init__(self, *args, **kwargs) -> None:
                pass

            def store(self, tab=None, **kwargs) -> None:
                pass

            def __getattr__(self, name):
                return lambda *a, **k: None

        utils.DummyLogger = DummyLogger
        utils.WandbLogger = DummyLogger
        fsrl.utils = utils
        fsrl.__path__ = []
        sys.modules["fsrl"], sys.modules["fsrl.utils"] = fsrl, utils
    # Bypass the package __init__s (osrl.common's imports dataset.py: scipy, yaml, oapackage).
    for pkg in ("osrl", "osrl.common", "osrl.algorithms"):
        mod = types.ModuleType(pkg)
        mod.__path__ = [str(src / pkg.replace(".", "/"))]
        sys.modules[pkg] = mod
    return {n: importlib.import_module(f"osrl.algorithms.{n}") for n in ("bc", "bcql", "cpq", "cdt")}


# ---------------------------------------------------------------------------- data
def synthetic(obs_dim: int, act_dim: int, n: int = 30_000, episode_len: int = EPISODE_LEN) -> OfflineDataset:
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    timeouts = np.zeros(n, bool)
    timeouts[episode_len - 1 :: episode_len] = True
    return OfflineDataset(obs, obs + 0.01, rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
                          rng.normal(size=n).astype(np.float32), (rng.uniform(size=n) < 0.1).astype(np.float32),
                          np.zeros(n, bool), timeouts)


def transition_batch(B: int, S: int, A: int) -> tuple[torch.Tensor, ...]:
    """OSRL TransitionDataset sample: obs, next_obs, act, rew, cost, done (float32)."""
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(B, S, generator=g)
    return (obs, obs + 0.01, torch.rand(B, A, generator=g) * 2 - 1, torch.randn(B, generator=g) * 0.1,
            (torch.rand(B, generator=g) < 0.1).float(), torch.zeros(B))


def sequence_batch(B: int, T: int, S: int, A: int) -> tuple[torch.Tensor, ...]:
    """OSRL SequenceDataset sample: states, actions, returns, costs_return, time_steps, mask
    (float64, right padding for windows near an episode end), episode_cost, costs."""
    g = torch.Generator().manual_seed(0)
    start = torch.randint(0, EPISODE_LEN, (B,), generator=g)
    time_steps = start[:, None] + torch.arange(T)
    mask = (time_steps < EPISODE_LEN).double()
    m32 = mask.float()
    costs = (torch.rand(B, T, generator=g) < 0.1).float() * m32
    return (torch.randn(B, T, S, generator=g) * m32[..., None], (torch.rand(B, T, A, generator=g) * 2 - 1) * m32[..., None],
            torch.rand(B, T, generator=g) * 50 * m32, torch.rand(B, T, generator=g) * 30 * m32, time_steps, mask,
            torch.rand(B, generator=g) * 30, costs)


# ---------------------------------------------------------------------------- builders
def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def osrl_step(name: str, osrl: dict[str, types.ModuleType], S: int, A: int) -> tuple[Callable[[], None], dict[str, int], str]:
    """OSRL model + trainer at its default config (CarCircle); returns step, param counts, sizes."""
    torch.manual_seed(0)
    if name == "bc-all":  # bc_configs.py
        model = osrl["bc"].BC(S, A, 1.0, a_hidden_sizes=[256, 256], episode_len=EPISODE_LEN)
        trainer = osrl["bc"].BCTrainer(model, None, actor_lr=1e-3, bc_mode="all", cost_limit=COST_LIMIT)
        obs, _, act, *_ = transition_batch(512, S, A)
        sizes = "actor [256,256], batch 512"
        return (lambda: trainer.train_one_step(obs, act)), {"actor": n_params(model.actor)}, sizes
    if name == "bcq-lag":  # bcql_configs.py
        model = osrl["bcql"].BCQL(S, A, 1.0, a_hidden_sizes=[256, 256], c_hidden_sizes=[256, 256], vae_hidden_sizes=400,
                                  sample_action_num=10, gamma=0.99, tau=0.005, phi=0.05, lmbda=0.75, beta=0.5,
                                  PID=[0.1, 0.003, 0.001], num_q=2, num_qc=2, cost_limit=COST_LIMIT, episode_len=EPISODE_LEN)
        trainer = osrl["bcql"].BCQLTrainer(model, None, actor_lr=1e-3, critic_lr=1e-3, vae_lr=1e-3, reward_scale=0.1, cost_scale=1)
        batch = transition_batch(512, S, A)
        sizes = "a/c [256,256], vae 400x2, num_q=num_qc=2 (x2 double-Q = 4 nets each), N=10, batch 512"
        nets = {k: n_params(getattr(model, k)) for k in ("vae", "actor", "critic", "cost_critic", "actor_old", "critic_old", "cost_critic_old")}
        return (lambda: trainer.train_one_step(*batch)), nets, sizes
    if name.startswith("cpq"):  # cpq_configs.py
        model = osrl["cpq"].CPQ(S, A, 1.0, a_hidden_sizes=[256, 256], c_hidden_sizes=[256, 256], vae_hidden_sizes=400,
                                sample_action_num=10, gamma=0.99, tau=0.005, beta=0.5, num_q=2, num_qc=2, qc_scalar=1.5,
                                cost_limit=COST_LIMIT, episode_len=EPISODE_LEN)
        trainer = osrl["cpq"].CPQTrainer(model, None, actor_lr=1e-4, critic_lr=1e-3, alpha_lr=1e-4, vae_lr=1e-3, reward_scale=0.1, cost_scale=1)
        batch = transition_batch(512, S, A)
        sizes = "a/c [256,256], vae 400x2, num_q=num_qc=2, N=10, batch 512"
        nets = {k: n_params(getattr(model, k)) for k in ("vae", "actor", "critic", "cost_critic", "actor_old", "critic_old", "cost_critic_old")}
        return (lambda: trainer.train_one_step(*batch)), nets, sizes
    if name == "cdt":  # cdt_configs.py CDTTrainConfig (= CDTCarCircleConfig)
        T = 10
        model = osrl["cdt"].CDT(S, A, 1.0, seq_len=T, episode_len=EPISODE_LEN, embedding_dim=128, num_layers=3, num_heads=8,
                                attention_dropout=0.1, residual_dropout=0.1, embedding_dropout=0.1, time_emb=True, use_rew=True,
                                use_cost=True, cost_transform=True, add_cost_feat=False, mul_cost_feat=False, cat_cost_feat=False,
                                action_head_layers=1, cost_prefix=False, stochastic=True, init_temperature=0.1, target_entropy=-A)
        trainer = osrl["cdt"].CDTTrainer(model, None, learning_rate=1e-4, weight_decay=1e-4, betas=(0.9, 0.999), clip_grad=0.25,
                                         lr_warmup_steps=500, reward_scale=0.1, cost_scale=1, loss_cost_weight=0.02,
                                         loss_state_weight=0, cost_reverse=False, no_entropy=False)
        model.train()
        batch = sequence_batch(2048, T, S, A)
        sizes = "embed 128, 3 layers, 8 heads, seq_len 10 (40 tokens), dropout 0.1, batch 2048"
        nets = {"model": n_params(model), "  of which state_pred_head": n_params(model.state_pred_head)}
        return (lambda: trainer.train_one_step(*batch)), nets, sizes
    raise ValueError(name)


def flrp_step(name: str, ds: OfflineDataset, update_only: bool = False) -> tuple[Callable[[], None], dict[str, int], str, object]:
    """flrp algorithm with its config set to OSRL's sizes; step as in bench_update.py."""
    cls = get_algorithm("cpq" if name.startswith("cpq") else name)
    base = dict(batch_size=512, hidden=256, seed=0)
    if name == "bc-all":
        cfg = cls.Config(**base, lr=1e-3)
        sizes = f"actor {list(cfg.hidden_sizes)}, batch {cfg.batch_size}"
    elif name == "bcq-lag" or name.startswith("cpq"):
        extra = {"ood_penalty": "paper" if name == "cpq-paper" else "osrl"} if name.startswith("cpq") else {}
        cfg = cls.Config(**base, vae_hidden=400, num_q=2, num_qc=2, sample_action_num=10, episode_len=EPISODE_LEN, **extra)
        sizes = (f"a/c {list(cfg.hidden_sizes)}, vae {cfg.vae_hidden}x2, num_q={cfg.num_q} num_qc={cfg.num_qc}, "
                 f"N={cfg.sample_action_num}, batch {cfg.batch_size}" + (f", ood_penalty={cfg.ood_penalty}" if extra else ""))
    elif name == "cdt":
        cfg = cls.Config(batch_size=2048, embed_dim=128, num_layers=3, num_heads=8, seq_len=10, attention_dropout=0.1,
                         residual_dropout=0.1, embedding_dropout=0.1, stochastic=True, seed=0)
        sizes = (f"embed {cfg.embed_dim}, {cfg.num_layers} layers, {cfg.num_heads} heads, seq_len {cfg.seq_len}, "
                 f"dropout {cfg.attention_dropout}, batch {cfg.batch_size}")
    else:
        raise ValueError(name)
    algo = cls(cfg, device="cpu")
    algo.fit(ds, steps=1, progress=False)
    data = algo._to_device(algo.prepare_data(ds))
    for m in algo.modules.values():
        m.train()

    fixed = algo.sample_batch(data, algo.config.batch_size)

    def step() -> None:
        algo.update(fixed if update_only else algo.sample_batch(data, algo.config.batch_size))
        algo.after_update()
        algo.step += 1

    nets = {k: n_params(m) for k, m in algo.modules.items() if n_params(m)}
    return step, nets, sizes, algo


# ---------------------------------------------------------------------------- timing
def count_flops(step: Callable[[], None]) -> int:
    with FlopCounterMode(display=False) as fc:
        step()
    return fc.get_total_flops()


def run_for(step: Callable[[], None], seconds: float, min_steps: int) -> tuple[float, float]:
    """Steps per second of wall time and of this thread's CPU time (user + system), the latter
    insensitive to the time the thread waits for a core on a shared machine."""
    n, t0, c0 = 0, time.perf_counter(), time.thread_time()
    while True:
        step()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= seconds and n >= min_steps:
            return n / dt, n / (time.thread_time() - c0)


def interleaved(a: Callable[[], None], b: Callable[[], None], seconds: float, rounds: int, min_steps: int):
    """Alternating chunks (a b, b a, a b, ...); per-round (wall, cpu) rates of each."""
    for _ in range(2):
        a(), b()
    ra, rb = [], []
    chunk = seconds / rounds
    for r in range(rounds):
        if r % 2 == 0:
            ra.append(run_for(a, chunk, min_steps))
            rb.append(run_for(b, chunk, min_steps))
        else:
            rb.append(run_for(b, chunk, min_steps))
            ra.append(run_for(a, chunk, min_steps))
    return ra, rb


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--osrl-src", type=Path, required=True, help="a checkout of liuzuxin/OSRL")
    p.add_argument("--algos", nargs="+", default=["bc-all", "bcq-lag", "cpq", "cpq-paper", "cdt"],
                   choices=["bc-all", "bcq-lag", "cpq", "cpq-paper", "cdt"],
                   help="cpq = flrp CPQ with ood_penalty='osrl' (OSRL's arithmetic); cpq-paper = flrp's default")
    p.add_argument("--seconds", type=float, default=12.0, help="timed seconds per algorithm per side")
    p.add_argument("--rounds", type=int, default=6, help="interleaved OSRL/flrp chunks per algorithm")
    p.add_argument("--min-steps", type=int, default=2, help="at least this many steps per chunk (CDT: ~10 s a step)")
    p.add_argument("--update-only", action="store_true",
                   help="time flrp's update on one pre-sampled batch, like OSRL's fixed batch (default: sample every step)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--obs-dim", type=int, default=72, help="default: CarCircle's observation width")
    p.add_argument("--act-dim", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    osrl = load_osrl(args.osrl_src)
    S, A = args.obs_dim, args.act_dim
    ds = synthetic(S, A)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, obs {S}, act {A}, episode_len {EPISODE_LEN}; "
          f"OSRL from {args.osrl_src}; {args.seconds:g} s per side in {args.rounds} interleaved rounds; "
          f"flrp step = {'update on a fixed batch' if args.update_only else 'sample_batch + update + after_update'}")
    rows = []
    for name in args.algos:
        o_step, o_nets, o_sizes = osrl_step(name, osrl, S, A)
        f_step, f_nets, f_sizes, _ = flrp_step(name, ds, args.update_only)
        print(f"\n[{name}]\n  OSRL sizes: {o_sizes}\n  flrp sizes: {f_sizes}")
        print("  OSRL params: " + ", ".join(f"{k} {v:,}" for k, v in o_nets.items()))
        print("  flrp params: " + ", ".join(f"{k} {v:,}" for k, v in f_nets.items()))
        o_flops, f_flops = count_flops(o_step), count_flops(f_step)
        ro, rf = interleaved(o_step, f_step, args.seconds, args.rounds, args.min_steps)
        for k, label in ((0, "wall"), (1, "cpu ")):
            print(f"  per-round steps/s ({label})  OSRL " + " ".join(f"{x[k]:.3g}" for x in ro) + " | flrp " + " ".join(f"{x[k]:.3g}" for x in rf))
        med = lambda xs: statistics.median(xs)  # noqa: E731
        ratio = [med([f[k] / o[k] for f, o in zip(rf, ro)]) for k in (0, 1)]
        rows.append((name, med([x[1] for x in ro]), med([x[1] for x in rf]), ratio[1], ratio[0], o_flops / 1e9, f_flops / 1e9))
    print(f"\n{'algorithm':<10} {'OSRL st/s':>10} {'flrp st/s':>10} {'flrp/OSRL':>10} {'(wall)':>7} {'OSRL GFLOP':>11} {'flrp GFLOP':>11}")
    for name, o, f, r, rw, og, fg in rows:
        print(f"{name:<10} {o:10.3g} {f:10.3g} {r:10.2f} {rw:7.2f} {og:11.3f} {fg:11.3f}")
    print("(steps per CPU-second of the timing thread, median over rounds; flrp/OSRL: median of the per-round paired\n"
          " ratios, by CPU time and by wall time; GFLOP per step from FlopCounterMode)")


if __name__ == "__main__":
    main()
