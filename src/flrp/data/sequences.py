"""Episode windows for sequence models (CDT): returns/costs-to-go, Pareto augmentation, sampling.

Everything follows OSRL's ``osrl/common/dataset.py`` (``SequenceDataset``, ``augmentation``,
``get_nearest_point``, ``grid_filter``, ``compute_cost_sample_prob``) and
``examples/train/train_cdt.py``, rewritten vectorised and with explicit random generators:

* **Returns- and costs-to-go** are undiscounted suffix sums within each episode (episodes end at
  ``terminals | timeouts``, :class:`~flrp.data.dataset.OfflineDataset`); OSRL computes them with
  ``discounted_cumsum(..., gamma=1)``.
* **Windows** of ``seq_len`` steps start uniformly anywhere in a trajectory (OSRL
  ``random.randint(0, len - 1)``); a window running past the end is *right*-padded with zeros and
  a validity mask, and its timesteps continue past the episode (``arange(start, start + seq_len)``,
  hence a timestep table of ``episode_len + seq_len`` entries). RTG/CTG are multiplied by the
  reward/cost scales at sampling time.
* **Trajectories are drawn** with probability proportional to ``max(0, threshold - C_traj)``
  where ``C_traj`` is the trajectory's (possibly relabelled) cost-to-go at its first step;
  ``threshold = 70`` in OSRL's train script (``ct = lambda x: 70 - x``, ``cost_sample=True``,
  ``linear=True``; the class default ``50 - x`` is overridden there).
* **Pareto-frontier return augmentation** (CDT paper Sec. 4.3, "data augmentation by return
  relabeling"): see :func:`pareto_augmentation`. OSRL finds the frontier with OApackage; here it
  is :func:`pareto_frontier_mask`, an exact O(n log n) non-dominated filter (maximise return,
  minimise cost; equal points are kept, as OApackage's ``ParetoDoubleLong`` keeps every index of a
  Pareto-optimal value).

Augmented trajectories are *virtual*: they reuse the transitions of their source episode and only
add a constant to its RTG and CTG, so augmentation costs no memory beyond a few numbers per
trajectory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from flrp.errors import FlrpError

__all__ = [
    "episode_starts_lengths",
    "to_go",
    "pareto_frontier_mask",
    "fit_frontier",
    "grid_filter",
    "nearest_sources",
    "Augmentation",
    "pareto_augmentation",
    "cost_sample_weights",
    "sequence_arrays",
    "sample_window_index",
    "gather_windows",
]


# ---------------------------------------------------------------------------- per-step labels
def episode_starts_lengths(bounds: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Half-open episode bounds -> (E,) start indices and (E,) lengths (int64)."""
    b = np.asarray(bounds, dtype=np.int64).reshape(-1, 2)
    return b[:, 0].copy(), (b[:, 1] - b[:, 0])


def to_go(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Undiscounted suffix sums within each episode: ``out[t] = sum(values[t:end])`` (float64).

    Episodes must tile ``values`` in order (``starts[0] == 0``, contiguous), as in an
    :class:`~flrp.data.dataset.OfflineDataset`.
    """
    v = np.asarray(values, dtype=np.float64)
    if lengths.sum() != len(v):
        raise FlrpError(f"episodes cover {int(lengths.sum())} steps but there are {len(v)} values")
    csum = np.concatenate([[0.0], np.cumsum(v)])  # csum[i] = sum(v[:i])
    ends = np.repeat(starts + lengths, lengths)  # (N,) end of each step's episode
    return csum[ends] - csum[:-1]


# ---------------------------------------------------------------------------- Pareto frontier
def pareto_frontier_mask(costs: np.ndarray, returns: np.ndarray) -> np.ndarray:
    """(E,) True for the non-dominated points of (low cost, high return).

    ``j`` dominates ``i`` if ``c_j <= c_i`` and ``r_j >= r_i`` with one inequality strict. So ``i``
    is on the frontier iff its return is the maximum among points of equal cost and exceeds every
    return at strictly lower cost. Identical points are all kept.
    """
    c = np.asarray(costs, dtype=np.float64)
    r = np.asarray(returns, dtype=np.float64)
    if c.shape != r.shape or c.ndim != 1:
        raise FlrpError("pareto_frontier_mask: costs and returns must be 1-D arrays of equal length")
    if len(c) == 0:
        return np.zeros(0, dtype=bool)
    uniq, group = np.unique(c, return_inverse=True)  # groups of equal cost, ascending
    group_max = np.full(len(uniq), -np.inf)
    np.maximum.at(group_max, group, r)
    # best return at strictly lower cost than each group
    below = np.concatenate([[-np.inf], np.maximum.accumulate(group_max)[:-1]])
    return (r >= group_max[group]) & (r > below[group])


def fit_frontier(costs: np.ndarray, returns: np.ndarray, deg: int) -> np.poly1d:
    """Least-squares polynomial ``return = f(cost)`` through frontier points (OSRL ``np.polyfit``).

    The degree is lowered to (number of distinct costs - 1) when there are too few points: OSRL
    passes ``deg`` unchanged and ``np.polyfit`` then fails or warns (liuzuxin/OSRL#6, small cost
    limits on CarPush1).
    """
    c = np.asarray(costs, dtype=np.float64)
    r = np.asarray(returns, dtype=np.float64)
    if len(c) == 0:
        raise FlrpError("fit_frontier: no frontier points")
    deg = int(max(0, min(deg, len(np.unique(c)) - 1)))
    return np.poly1d(np.polyfit(c, r, deg=deg))


def grid_filter(
    costs: np.ndarray,
    returns: np.ndarray,
    rng: np.random.Generator,
    cost_bins: int = 10,
    reward_bins: int = 50,
    max_per_bin: int = 10,
    min_per_bin: int = 2,
) -> np.ndarray:
    """Outlier filter run before augmentation (OSRL ``grid_filter`` with the values ``augmentation``
    passes: 10 cost bins x 50 reward bins, at most 10 per bin, bins holding <= 2 points dropped).

    Returns the kept indices, ascending. Bins with more than ``max_per_bin`` points keep a random
    subset (``rng``). Points at the maximum fall in the last bin (OSRL's ``//`` puts them in a bin
    of their own).
    """
    c = np.asarray(costs, dtype=np.float64)
    r = np.asarray(returns, dtype=np.float64)
    n = len(c)
    if n == 0:
        return np.zeros(0, dtype=np.int64)

    def _bin(x: np.ndarray, bins: int) -> np.ndarray:
        lo, hi = x.min(), x.max()
        step = (hi - lo) / bins if hi > lo else 1.0
        return np.minimum(((x - lo) // step).astype(np.int64), bins - 1)

    key = _bin(c, cost_bins) * reward_bins + _bin(r, reward_bins)
    perm = rng.permutation(n)
    order = perm[np.argsort(key[perm], kind="stable")]  # grouped by bin, random order inside
    sorted_key = key[order]
    first = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    counts = np.diff(np.r_[first, n])
    rank = np.arange(n) - np.repeat(first, counts)
    keep = (rank < max_per_bin) & (np.repeat(counts, counts) > min_per_bin)
    return np.sort(order[keep])


def nearest_sources(
    costs: np.ndarray,
    returns: np.ndarray,
    target_costs: np.ndarray,
    target_returns: np.ndarray,
    rng: np.random.Generator,
    max_rew_decrease: float,
    beta: float = 1.0,
) -> np.ndarray:
    """Pick a source trajectory for each target (cost, return) (OSRL ``get_nearest_point``).

    A target's source is the nearest point (Euclidean in (cost, return)) among those with cost <=
    the target cost. When several targets share a source, the first keeps it and each further one
    draws a substitute among points with cost <= the source's cost and return >= the source's
    return - ``max_rew_decrease``, with probability ``1 / (distance to the source + beta)``.
    (OSRL collects the substitutes grouped by source and then zips them with the targets in target
    order, which can pair a substitute with another target; here each keeps its own target.)
    """
    c = np.asarray(costs, dtype=np.float64)
    r = np.asarray(returns, dtype=np.float64)
    tc = np.asarray(target_costs, dtype=np.float64)
    tr = np.asarray(target_returns, dtype=np.float64)
    dist = np.hypot(c[None, :] - tc[:, None], r[None, :] - tr[:, None])  # (M, E)
    dist[c[None, :] > tc[:, None]] = np.inf
    if np.isinf(dist).all(axis=1).any():
        raise FlrpError("nearest_sources: a target cost is below every trajectory's cost")
    src = np.argmin(dist, axis=1)
    out = src.copy()
    uniq, counts = np.unique(src, return_counts=True)
    for j, k in zip(uniq[counts > 1], counts[counts > 1]):
        repeats = np.flatnonzero(src == j)[1:]  # every occurrence after the first
        cand = np.flatnonzero((c <= c[j]) & (r >= r[j] - max_rew_decrease))  # contains j itself
        w = 1.0 / (np.hypot(c[cand] - c[j], r[cand] - r[j]) + beta)
        out[repeats] = cand[rng.choice(len(cand), size=k - 1, p=w / w.sum())]
    return out


@dataclass
class Augmentation:
    """Virtual trajectories: ``source`` episode indices relabelled to start at the target values."""

    source: np.ndarray  # (M,) int64 episode index into the original dataset
    target_cost: np.ndarray  # (M,) float64 cost-to-go at the first step (raw units)
    target_return: np.ndarray  # (M,) float64 return-to-go at the first step (raw units)
    frontier: np.poly1d | None = None
    pool: np.ndarray | None = None  # indices that survived the grid filter

    def __len__(self) -> int:
        return len(self.source)


def pareto_augmentation(
    episode_costs: np.ndarray,
    episode_returns: np.ndarray,
    rng: np.random.Generator,
    augment_percent: float = 0.2,
    deg: int = 1,
    max_reward: float | None = None,
    min_reward: float = 1.0,
    max_rew_decrease: float | None = None,
    beta: float = 1.0,
    filter_outliers: bool = True,
) -> Augmentation:
    """CDT's return relabelling along the Pareto frontier (OSRL ``augmentation``).

    1. Filter outliers with :func:`grid_filter` (falls back to all episodes if fewer than two
       survive; OSRL would crash on such tiny datasets).
    2. Fit a degree-``deg`` polynomial ``f`` to the frontier (:func:`pareto_frontier_mask`,
       :func:`fit_frontier`).
    3. ``M = int(augment_percent * pool size)`` target costs evenly spaced over the pool's cost
       range; each target return ~ U(f(c) + ``min_reward``, ``max_reward``): returns the data
       does not reach at that cost (low end capped at ``max_reward``).
    4. Each target gets a source trajectory whose cost is at most the target cost
       (:func:`nearest_sources`); the virtual trajectory behaves like the source while being told
       the (unreachable) return and the (at least as large) cost budget. It teaches the model to
       prefer safety when asked for an infeasible return.

    ``max_reward`` and ``max_rew_decrease`` are per-task constants in OSRL's ``cdt_configs.py``
    (e.g. CarCircle 600 / 100, AntRun 1000 / 150, DroneRun 700 / 100: about 1.05-1.12x the
    dataset's best return and 0.15-0.19x its return range). ``None`` uses those ratios as
    scale-free defaults: ``r_max + 0.1 (r_max - r_min)`` and ``0.2 (r_max - r_min)``.
    """
    c = np.asarray(episode_costs, dtype=np.float64)
    r = np.asarray(episode_returns, dtype=np.float64)
    empty = Augmentation(np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
    if augment_percent <= 0 or len(c) < 2:
        return empty
    span = float(r.max() - r.min())
    if max_reward is None:
        max_reward = float(r.max()) + 0.1 * span
    if max_rew_decrease is None:
        max_rew_decrease = 0.2 * span
    pool = grid_filter(c, r, rng) if filter_outliers else np.arange(len(c))
    if len(pool) < 2:
        pool = np.arange(len(c))
    pc, pr = c[pool], r[pool]
    front = pareto_frontier_mask(pc, pr)
    frontier = fit_frontier(pc[front], pr[front], deg)
    m = int(augment_percent * len(pool))
    if m == 0:
        return Augmentation(empty.source, empty.target_cost, empty.target_return, frontier, pool)
    target_c = np.linspace(pc.min(), pc.max(), m)
    high = np.full(m, float(max_reward))
    low = np.minimum(frontier(target_c) + min_reward, high)
    target_r = rng.uniform(low, high)
    src = nearest_sources(pc, pr, target_c, target_r, rng, max_rew_decrease, beta)
    return Augmentation(pool[src].astype(np.int64), target_c, target_r, frontier, pool)


def cost_sample_weights(initial_ctg: np.ndarray, threshold: float = 70.0) -> np.ndarray:
    """Trajectory sampling probabilities ``∝ max(0, threshold - C)`` (OSRL
    ``compute_cost_sample_prob`` with ``train_cdt.py``'s ``70 - x``)."""
    w = np.maximum(threshold - np.asarray(initial_ctg, dtype=np.float64), 0.0)
    if not w.sum() > 0:
        raise FlrpError(
            f"every trajectory has cost >= {threshold:g}, so CDT's cost-weighted sampling has nothing to draw; "
            "raise cost_sample_threshold or disable cost_sample"
        )
    return w / w.sum()


# ---------------------------------------------------------------------------- window sampling
def sequence_arrays(
    rewards: np.ndarray,
    costs: np.ndarray,
    bounds: list[tuple[int, int]],
    augmentation: Augmentation | None = None,
    cost_sample_threshold: float | None = 70.0,
) -> dict[str, np.ndarray]:
    """Per-step RTG/CTG and a table of (real + virtual) trajectories for :func:`gather_windows`.

    Keys: ``rtg``, ``ctg`` (N,) float32 raw-unit suffix sums; per trajectory ``ep_start``,
    ``ep_len`` (int64), ``ep_rtg_shift``, ``ep_ctg_shift`` (float32, 0 for real episodes) and
    ``ep_weight`` (float64 sampling probabilities; uniform over trajectories when
    ``cost_sample_threshold`` is None, as OSRL without ``cost_sample``).
    """
    starts, lengths = episode_starts_lengths(bounds)
    rtg = to_go(rewards, starts, lengths)
    ctg = to_go(costs, starts, lengths)
    ep_start, ep_len = starts, lengths
    rtg_shift = np.zeros(len(starts))
    ctg_shift = np.zeros(len(starts))
    if augmentation is not None and len(augmentation):
        s = augmentation.source
        ep_start = np.concatenate([starts, starts[s]])
        ep_len = np.concatenate([lengths, lengths[s]])
        rtg_shift = np.concatenate([rtg_shift, augmentation.target_return - rtg[starts[s]]])
        ctg_shift = np.concatenate([ctg_shift, augmentation.target_cost - ctg[starts[s]]])
    initial_ctg = ctg[ep_start] + ctg_shift
    if cost_sample_threshold is None:
        weight = np.full(len(ep_start), 1.0 / len(ep_start))
    else:
        weight = cost_sample_weights(initial_ctg, cost_sample_threshold)
    return {
        "rtg": rtg.astype(np.float32),
        "ctg": ctg.astype(np.float32),
        "ep_start": ep_start.astype(np.int64),
        "ep_len": ep_len.astype(np.int64),
        "ep_rtg_shift": rtg_shift.astype(np.float32),
        "ep_ctg_shift": ctg_shift.astype(np.float32),
        "ep_weight": weight.astype(np.float64),
    }


def sample_window_index(
    ep_weight: torch.Tensor, ep_len: torch.Tensor, n: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` (trajectory, start offset) pairs on the generator's device (CPU for exact resume).

    Trajectories with replacement by ``ep_weight``; the start uniform on ``[0, len - 1]``.
    """
    ep = torch.multinomial(ep_weight, n, replacement=True, generator=generator)
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    length = ep_len.index_select(0, ep)
    offset = torch.minimum((u * length).long(), length - 1)
    return ep, offset


def gather_windows(
    data: dict[str, torch.Tensor],
    ep: torch.Tensor,
    offset: torch.Tensor,
    seq_len: int,
    reward_scale: float = 1.0,
    cost_scale: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Windows (B, T, ...) from ``data`` (``obs``, ``act``, ``cost`` plus :func:`sequence_arrays`).

    Returns ``obs``, ``act``, ``rtg`` and ``ctg`` (scaled), ``cost`` (per-step), ``timestep``
    (long, within-episode index, continuing past the end) and ``valid`` (bool; padding is zero).
    """
    dev = data["obs"].device
    ep, offset = ep.to(dev), offset.to(dev)
    pos = offset[:, None] + torch.arange(seq_len, device=dev)  # (B, T)
    valid = pos < data["ep_len"][ep][:, None]
    flat = data["ep_start"][ep][:, None] + torch.where(valid, pos, torch.zeros_like(pos))  # (B, T)
    zero = torch.zeros((), device=dev)
    obs = torch.where(valid[..., None], data["obs"][flat], zero)
    act = torch.where(valid[..., None], data["act"][flat], zero)
    rtg = torch.where(valid, (data["rtg"][flat] + data["ep_rtg_shift"][ep][:, None]) * reward_scale, zero)
    ctg = torch.where(valid, (data["ctg"][flat] + data["ep_ctg_shift"][ep][:, None]) * cost_scale, zero)
    cost = torch.where(valid, data["cost"][flat], zero)
    return {"obs": obs, "act": act, "rtg": rtg, "ctg": ctg, "cost": cost, "timestep": pos, "valid": valid}
