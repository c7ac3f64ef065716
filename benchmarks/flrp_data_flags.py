"""What a trained FLRP's HJ critics say about the *logged* data, grouped by how costly each
pair's episode was (issue 11): the share of logged states with V_h(s) > 0 and of logged pairs
with Q_h(s, a) <= t. Shows how much of what the ELBO imitates (Eq. 11 weights pairs by
sig(-Q_h) sig(-V_h)) comes from unsafe episodes. `flrp diagnose` reports the headline figures
(its "data:" rows); this prints them by threshold.

    python benchmarks/flrp_data_flags.py --model RUN/model.pt --dataset FILE.hdf5
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from flrp.algos import Algorithm  # noqa: E402
from flrp.evaluation.diagnose import critic_values_on_data  # noqa: E402
from flrp.training.datasets import resolve_dataset  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--pairs", type=int, default=40_000, help="logged pairs sampled (seed 0)")
    p.add_argument("--cost-limit", type=float, default=10.0)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    algo = Algorithm.load(a.model, device="cpu")
    ds, _ = resolve_dataset(a.dataset, None)
    ep_cost = ds.episode_costs()[ds.episode_index()]
    idx, q, v = critic_values_on_data(algo, ds, a.pairs, seed=0)
    c = ep_cost[idx]
    groups = [("cost 0", c == 0), (f"cost in (0, {a.cost_limit:g}]", (c > 0) & (c <= a.cost_limit)), (f"cost > {a.cost_limit:g}", c > a.cost_limit)]
    print(f"{a.model} on {a.dataset}: {len(idx)} logged pairs")
    print("| episode cost | pairs | share of data | V_h(s) > 0 | Q_h(s,a) <= 0 | Q_h <= -0.5 | Q_h <= -0.8 | Q_h 10/50/90 % |")
    print("|---|---|---|---|---|---|---|---|")
    for name, m in groups:
        if not m.any():
            continue
        qq = q[m]
        qs = " / ".join(f"{x:.2f}" for x in np.quantile(qq, [0.1, 0.5, 0.9]))
        print(f"| {name} | {m.sum()} | {m.mean():.2f} | {np.mean(v[m] > 0):.2f} | {np.mean(qq <= 0):.2f} | "
              f"{np.mean(qq <= -0.5):.2f} | {np.mean(qq <= -0.8):.2f} | {qs} |")
    for t in (0.0, -0.5, -0.8):
        safe = (q <= t) & (c <= a.cost_limit)
        n = int((q <= t).sum())
        unsafe_share = 1 - safe.sum() / n if n else float("nan")
        print(f"pairs with Q_h <= {t:g}: {np.mean(q <= t):.2f} of the data, {unsafe_share:.2f} of them from episodes with cost > {a.cost_limit:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
