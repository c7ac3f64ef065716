"""Training-step throughput: FLRP (and the baselines) vs one plain 3x256 MLP update, same run.

Prints, on one intra-op thread by default: steps/s, FLOPs per step (torch FlopCounterMode) and
achieved GFLOP/s, and the same for a plain MLP (3 hidden layers of 256, batch 512, Adam) as the
machine's practical ceiling for this kind of work. Not a test: nothing is asserted.

GPU estimate (no GPU here): an eager-mode training loop on a GPU is bound by the host issuing
its ops when the arithmetic is small. The script counts the ops of one step and times the same
step at batch 8 on this CPU, where the arithmetic is negligible: that time is the host-side cost
a GPU run pays per step at least. The estimate is max(that, FLOPs / --gpu-tflops).

    python benchmarks/bench_update.py [--algos flrp bc-all] [--seconds 10] [--threads 1] [--eval-task CarGoal1|none]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from flrp.algos.base import get_algorithm
from flrp.data.dataset import OfflineDataset


def synthetic(obs_dim: int, act_dim: int, n: int = 20_000) -> OfflineDataset:
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    timeouts = np.zeros(n, bool)
    timeouts[199::200] = True
    return OfflineDataset(obs, obs + 0.01, rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
                          rng.normal(size=n).astype(np.float32), (rng.uniform(size=n) < 0.04).astype(np.float32),
                          np.zeros(n, bool), timeouts)


def time_steps(step_fn, seconds: float) -> float:
    for _ in range(5):
        step_fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step_fn()
        n += 1
    return n / (time.perf_counter() - t0)


def count_flops(step_fn) -> int:
    with FlopCounterMode(display=False) as fc:
        step_fn()
    return fc.get_total_flops()


def matmul_rate(seconds: float, device: torch.device) -> float:
    """fp32 GFLOP/s of (512 x 256) @ (256 x 256), the shape of a hidden layer at batch 512."""
    a = torch.randn(512, 256, device=device)
    b = torch.randn(256, 256, device=device)
    out = torch.empty(512, 256, device=device)

    def step() -> None:
        for _ in range(20):
            torch.mm(a, b, out=out)

    rate = time_steps(step, seconds)
    return rate * 20 * 2 * 512 * 256 * 256 / 1e9


def plain_mlp_step(obs_dim: int, act_dim: int, batch: int, device: torch.device):
    net = torch.nn.Sequential(
        torch.nn.Linear(obs_dim, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, act_dim)).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=3e-4)
    x = torch.randn(batch, obs_dim, device=device)
    y = torch.randn(batch, act_dim, device=device)

    def step() -> None:
        loss = (net(x) - y).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def count_ops(step_fn) -> int:
    """Compute ops dispatched by one step (views excluded): about the kernels a GPU would launch."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not getattr(func, "is_view", False):
                Counter.n += 1
            return func(*args, **(kwargs or {}))

    with Counter():
        step_fn()
    return Counter.n


def algo_step(name: str, ds: OfflineDataset, device: torch.device, batch_size: int | None = None):
    cls = get_algorithm(name)
    cfg = cls.Config() if batch_size is None else cls.Config(batch_size=batch_size)
    algo = cls(cfg, device=device)
    algo.fit(ds, steps=1, progress=False)
    data = algo._to_device(algo.prepare_data(ds))

    def step() -> None:
        algo.update(algo.sample_batch(data, algo.config.batch_size))
        algo.after_update()

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algos", nargs="+", default=None, help="default: every registered algorithm")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--obs-dim", type=int, default=72, help="default: CarCircle's observation width")
    p.add_argument("--act-dim", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--gpu-estimate", action=argparse.BooleanOptionalAction, default=True,
                   help="also time each step at batch 8 (pure per-op host overhead) and estimate a GPU run")
    p.add_argument("--eval-task", default="CarGoal1",
                   help="also print sequential vs parallel evaluation env-steps/s on this task (bench_eval.py); 'none' skips")
    p.add_argument("--gpu-tflops", type=float, default=10.0,
                   help="fp32 rate assumed for a GPU at these small shapes (TFLOP/s; ~half an A100's peak)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ds = synthetic(args.obs_dim, args.act_dim)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, obs {args.obs_dim}, act {args.act_dim}, batch 512, hidden 256")
    mm = matmul_rate(min(args.seconds, 3.0), device)
    print(f"{'fp32 matmul':<18} {mm:6.1f} GFLOP/s at 512x256 @ 256x256 (the machine's limit for this work)")
    ref = plain_mlp_step(args.obs_dim, args.act_dim, 512, device)
    ref_flops, ref_rate = count_flops(ref), time_steps(ref, args.seconds)
    ref_gflops = ref_flops * ref_rate / 1e9
    print(f"{'plain 3x256 MLP':<18} {ref_rate:8.1f} steps/s  {ref_flops / 1e9:7.3f} GFLOP/step  {ref_gflops:6.1f} GFLOP/s  = {ref_gflops / mm:.2f} of matmul")
    from flrp.algos import ALGORITHMS

    for name in args.algos or sorted(ALGORITHMS):
        step = algo_step(name, ds, device)
        flops, rate = count_flops(step), time_steps(step, args.seconds)
        g = flops * rate / 1e9
        print(f"{name:<18} {rate:8.1f} steps/s  {flops / 1e9:7.3f} GFLOP/step  {g:6.1f} GFLOP/s  = {g / mm:.2f} of matmul, {g / ref_gflops:.2f} x the plain MLP; 1e6 steps ~ {1e6 / rate / 3600:.1f} h")
        if args.gpu_estimate:
            tiny = algo_step(name, ds, device, batch_size=8)
            ops = count_ops(tiny)  # one pass per step, as on a GPU (CPU CDT splits big batches)
            host = 1.0 / time_steps(tiny, args.seconds / 2)  # s/step with ~no arithmetic: dispatch overhead
            gpu = max(host, flops / (args.gpu_tflops * 1e12))
            print(f"{'':<18} {ops} ops/step, {host * 1e6 / ops:.1f} us host overhead per op (batch-8 step {host * 1e3:.2f} ms); "
                  f"GPU estimate (eager, host-bound unless FLOPs dominate at {args.gpu_tflops:g} TFLOP/s): "
                  f"{gpu * 1e3:.2f} ms/step, 1e6 steps ~ {1e6 * gpu / 3600:.1f} h")
    if args.eval_task.lower() != "none":
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_eval import compare

        compare(args.eval_task)


if __name__ == "__main__":
    main()
