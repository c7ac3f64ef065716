"""The exact feasible set (viability kernel) of :class:`flrp.envs.toy.ToyHazardEnv`.

The kernel ``K`` is the set of states from which *some* admissible control sequence keeps
``x_t <= X_HAZARD`` for every ``t >= 0`` (``t = 0`` included) under exactly the discrete
dynamics of :func:`flrp.envs.toy.step_dynamics`. It is what FLRP's Hamilton-Jacobi feasibility
critic ``V_h`` should learn (``V_h <= 0`` inside ``K``), so this module computes it two
independent ways and scores a learned ``V_h`` against it:

* :func:`kernel_grid` - value iteration of the discrete HJ safety Bellman equation
  ``V(s) = max(g(s), min_a V(f(s, a)))`` with ``g(s) = x - X_HAZARD`` on a grid;
* :func:`feasible_by_braking` - the closed form: the dynamics are monotone, so braking at
  ``a = -1`` every step yields the smallest position at every future time among all control
  sequences; a state is viable iff its braking trajectory never leaves ``x <= X_HAZARD``.

:func:`feasibility_iou` and :func:`plot_feasibility` compare a learned value function against
the grid kernel.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from flrp.envs.toy import DT, V_MAX, X_HAZARD, step_dynamics
from flrp.errors import FlrpError
from flrp.files import atomic_path

__all__ = [
    "X_RANGE",
    "V_RANGE",
    "NX",
    "NV",
    "N_ACTIONS",
    "kernel_grid",
    "kernel_value",
    "feasible_by_braking",
    "feasibility_iou",
    "plot_feasibility",
]

X_RANGE: tuple[float, float] = (-2.0, 1.5)
V_RANGE: tuple[float, float] = (-V_MAX, V_MAX)
NX: int = 351
"""Default x resolution: 0.01 per cell on X_RANGE."""
NV: int = 201
"""Default v resolution: 0.02 per cell on V_RANGE."""
N_ACTIONS: int = 21
"""Actions searched by the value iteration: ``linspace(-1, 1, 21)`` (includes full braking)."""

_MAX_ITERS = 1000
_TOL = 1e-9
# The decimal grid (0.01 x 0.02) and the dt = 0.1 lattice line up, so some grid states have an
# optimal trajectory that touches x = 1.0 *exactly* (e.g. (0.9, 0.5) brakes through 0.94, 0.97,
# 0.99, 1.0). They are feasible (the hazard is x > 1, the kernel is closed), but float rounding
# puts their computed value at +-1e-15. Values within _BOUNDARY_EPS of 0 are snapped to 0 so
# the verdict follows the mathematics, not the rounding.
_BOUNDARY_EPS = 1e-9
# kernel_value is queried at float32 observations, which sit ~1e-8 off the grid points; on
# exact-boundary states bilinear interpolation then returns +-1e-7 noise. The grid value is only
# accurate to the grid resolution anyway, so values this close to 0 are reported as 0 (feasible).
_QUERY_EPS = 1e-6

ValueFn = Callable[[np.ndarray], Any]


def _axes(nx: int, nv: int) -> tuple[np.ndarray, np.ndarray]:
    if nx < 2 or nv < 2:
        raise FlrpError(f"toy kernel grid needs nx >= 2 and nv >= 2, got nx={nx}, nv={nv}")
    # Rounded so that grid points are the decimal values they look like (x = 1.0 exactly,
    # not 1.0000000000000002, which would put the x = 1 row on the wrong side of the hazard).
    xs = np.round(np.linspace(*X_RANGE, nx), 12)
    vs = np.round(np.linspace(*V_RANGE, nv), 12)
    return xs, vs


def _bilinear_setup(
    xs: np.ndarray, vs: np.ndarray, xq: np.ndarray, vq: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flat corner index and weights for bilinear interpolation on the uniform (xs, vs) grid.

    Query points outside the grid are clamped onto its edge (see :func:`kernel_grid` for why
    that is harmless here). Returns ``(i0, j0, wx, wv)`` with ``0 <= i0 <= nx-2``,
    ``0 <= j0 <= nv-2`` and weights of the upper corner in ``[0, 1]``.
    """
    nx, nv = len(xs), len(vs)
    fx = (np.clip(xq, xs[0], xs[-1]) - xs[0]) / (xs[-1] - xs[0]) * (nx - 1)
    fv = (np.clip(vq, vs[0], vs[-1]) - vs[0]) / (vs[-1] - vs[0]) * (nv - 1)
    i0 = np.clip(np.floor(fx).astype(np.int64), 0, nx - 2)
    j0 = np.clip(np.floor(fv).astype(np.int64), 0, nv - 2)
    return i0, j0, fx - i0, fv - j0


def _bilinear_eval(values: np.ndarray, i0: np.ndarray, j0: np.ndarray, wx: np.ndarray, wv: np.ndarray) -> np.ndarray:
    nv = values.shape[1]
    flat = values.ravel()
    k = i0 * nv + j0
    v00, v01 = flat[k], flat[k + 1]
    v10, v11 = flat[k + nv], flat[k + nv + 1]
    return (1 - wx) * ((1 - wv) * v00 + wv * v01) + wx * ((1 - wv) * v10 + wv * v11)


def kernel_grid(nx: int = NX, nv: int = NV) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The viability kernel on an ``nx x nv`` grid over ``X_RANGE x V_RANGE`` by value iteration.

    Returns ``(xs (nx,), vs (nv,), feasible_mask (nx, nv) bool, value (nx, nv) float64)`` with
    ``feasible_mask = value <= 0``. ``value`` is the discrete HJ safety value: the smallest
    achievable ``max_t (x_t - X_HAZARD)``. The arrays are read-only because they are cached.

    Off-grid next states are bilinearly interpolated. Next states leaving the grid are clamped
    onto it, which cannot change any state's classification:

    * left (``x' < X_RANGE[0]``): only reachable with ``v' < 0``; from there braking keeps
      ``x`` decreasing, so the true value is ``x' - 1 < -3``, and the clamped edge value is
      also ``x_min - 1 = -3`` (both deeply feasible; the clamp is a conservative overestimate
      since the value is nondecreasing in ``x``);
    * right (``x' > X_RANGE[1] = 1.5``): already inside the hazard; the update takes
      ``max(g(x'), ...)`` so the value stays ``>= x' - 1 > 0`` (infeasible, as it must be);
    * ``v`` never leaves the grid because the dynamics clip it to ``[-V_MAX, V_MAX]``.

    Cached per ``(nx, nv)`` (about 1 s to compute at the default size).
    """
    # Normalised here so kernel_grid(), kernel_grid(351, 201) and kernel_grid(nx=351) share
    # one cache entry (lru_cache keys on how the arguments were passed).
    return _kernel_grid_cached(int(nx), int(nv))


@functools.lru_cache(maxsize=8)
def _kernel_grid_cached(nx: int, nv: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    xs, vs = _axes(nx, nv)
    X, Vg = np.meshgrid(xs, vs, indexing="ij")
    g = X - X_HAZARD
    actions = np.linspace(-1.0, 1.0, N_ACTIONS)
    # The dynamics do not change between sweeps, so the interpolation stencils are built once:
    # (A, nx*nv) corner indices and weights; each sweep is then four gathers per action.
    xn, vn, _, _ = step_dynamics(X.ravel()[None, :], Vg.ravel()[None, :], actions[:, None])
    i0, j0, wx, wv = _bilinear_setup(xs, vs, xn, vn)
    g_next = xn - X_HAZARD
    value = g.copy()
    for _ in range(_MAX_ITERS):
        # The HJ operator is monotone and value starts at g <= its fixed point, so the
        # iterates increase monotonically; information travels along braking trajectories,
        # which stop within V_MAX / DT steps, so this converges in a few dozen sweeps.
        nxt = np.maximum(_bilinear_eval(value, i0, j0, wx, wv), g_next)
        new = np.maximum(g, nxt.min(axis=0).reshape(nx, nv))
        delta = float(np.max(np.abs(new - value)))
        value = new
        if delta <= _TOL:
            break
    else:  # pragma: no cover - the iteration is known to converge
        warnings.warn(f"toy kernel value iteration did not converge (last change {delta:.2e})", stacklevel=2)
    value[np.abs(value) <= _BOUNDARY_EPS] = 0.0
    mask = value <= 0.0
    for arr in (xs, vs, mask, value):
        arr.setflags(write=False)
    return xs, vs, mask, value


def kernel_value(observations: np.ndarray, nx: int = NX, nv: int = NV) -> np.ndarray:
    """The grid HJ safety value at arbitrary ``(x, v)`` rows, bilinearly interpolated.

    ``observations`` is ``(M, 2)``; returns ``(M,)`` float64, ``<= 0`` inside the kernel.
    This is the "perfect critic" a learned ``V_h`` is compared with. Points right of the grid
    get at least ``x - X_HAZARD`` (they are in the hazard). Values within 1e-6 of zero are
    returned as exactly 0 (on the boundary, hence feasible), so ``feasibility_iou(kernel_value)``
    is 1.0 despite the float32 rounding of the query grid.
    """
    obs = np.asarray(observations, dtype=np.float64).reshape(-1, 2)
    xs, vs, _, value = kernel_grid(nx, nv)
    i0, j0, wx, wv = _bilinear_setup(xs, vs, obs[:, 0], obs[:, 1])
    out = _bilinear_eval(value, i0, j0, wx, wv)
    out[np.abs(out) <= _QUERY_EPS] = 0.0
    return np.where(obs[:, 0] > xs[-1], np.maximum(out, obs[:, 0] - X_HAZARD), out)


def feasible_by_braking(x: np.ndarray | float, v: np.ndarray | float) -> np.ndarray:
    """Closed-form kernel membership: does full braking keep ``x_t <= X_HAZARD`` for all t?

    Full braking is optimal because ``step_dynamics`` is monotone in ``(x, v, a)``: by
    induction, every other control sequence gives ``x_t`` and ``v_t`` at least as large at
    every t. Once ``v <= 0`` under braking, ``x`` only decreases, so simulating until every
    velocity is nonpositive (at most ``2 V_MAX / DT + 1`` steps) decides membership.
    Vectorized; returns a bool array of the broadcast shape. Positions within 1e-9 above
    ``X_HAZARD`` count as touching it (float rounding of exact-boundary trajectories).
    """
    x = np.asarray(x, dtype=np.float64)
    v = np.clip(np.asarray(v, dtype=np.float64), -V_MAX, V_MAX)
    x, v = np.broadcast_arrays(x, v)
    limit = X_HAZARD + _BOUNDARY_EPS
    ok = x <= limit
    x, v = x.copy(), v.copy()
    for _ in range(int(np.ceil(2 * V_MAX / DT)) + 2):
        if not np.any(v > 0):
            break
        x, v, _, _ = step_dynamics(x, v, -1.0)
        ok &= x <= limit
    return ok


def _dataset_observations(dataset: Any) -> np.ndarray:
    """(M, 2) observations from an OfflineDataset, a dict of DSRL arrays, or an array."""
    if dataset is None:
        return np.zeros((0, 2))
    if hasattr(dataset, "observations"):
        obs = dataset.observations
    elif isinstance(dataset, dict):
        obs = dataset["observations"]
    else:
        obs = dataset
    obs = np.asarray(obs, dtype=np.float64)
    if obs.ndim != 2 or obs.shape[1] != 2:
        raise FlrpError(f"toy feasibility: dataset observations must be (M, 2) (x, v), got shape {obs.shape}")
    return obs


def _support_mask(obs: np.ndarray, xs: np.ndarray, vs: np.ndarray) -> np.ndarray:
    """(nx, nv) bool: grid cells (nearest grid point) holding at least one observation."""
    mask = np.zeros((len(xs), len(vs)), dtype=bool)
    if len(obs) == 0:
        return mask
    i = np.rint((obs[:, 0] - xs[0]) / (xs[1] - xs[0])).astype(np.int64)
    j = np.rint((obs[:, 1] - vs[0]) / (vs[1] - vs[0])).astype(np.int64)
    keep = (i >= 0) & (i < len(xs)) & (j >= 0) & (j < len(vs))
    mask[i[keep], j[keep]] = True
    return mask


def _evaluate_on_grid(predicted_value_fn: ValueFn, xs: np.ndarray, vs: np.ndarray) -> np.ndarray:
    X, Vg = np.meshgrid(xs, vs, indexing="ij")
    grid_obs = np.stack([X.ravel(), Vg.ravel()], axis=1).astype(np.float32)
    pred = predicted_value_fn(grid_obs)
    if hasattr(pred, "detach"):  # a torch tensor; avoid importing torch here
        pred = pred.detach().cpu().numpy()
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    if pred.shape != (len(grid_obs),):
        raise FlrpError(
            f"toy feasibility: value function returned {pred.size} numbers for {len(grid_obs)} observations"
        )
    if not np.all(np.isfinite(pred)):
        raise FlrpError("toy feasibility: value function returned NaN/inf values")
    return pred.reshape(len(xs), len(vs))


def _iou(pred: np.ndarray, true: np.ndarray) -> float:
    union = int(np.count_nonzero(pred | true))
    # Both empty: the prediction is exactly right.
    return 1.0 if union == 0 else int(np.count_nonzero(pred & true)) / union


def feasibility_iou(
    predicted_value_fn: ValueFn, dataset: Any = None, nx: int = NX, nv: int = NV
) -> dict[str, float | int | None]:
    """Score a learned feasibility value ``V_h`` against the exact kernel.

    ``predicted_value_fn`` maps an ``(M, 2)`` float32 array of ``(x, v)`` to ``(M,)`` numbers;
    ``<= 0`` means "predicted feasible" (the positive class). ``dataset`` (an
    :class:`~flrp.data.dataset.OfflineDataset`, a dict with ``"observations"``, or an
    ``(M, 2)`` array) optionally restricts a second score to the cells the data visits,
    which is where an offline critic can be expected to be right.

    Returns ``iou_box`` (whole grid), ``iou_support`` (cells with >= 1 observation; None
    without a dataset), ``support_cells``, and box-wide ``precision`` / ``recall`` (both 1.0
    when their denominator is empty).
    """
    xs, vs, true, _ = kernel_grid(nx, nv)
    pred = _evaluate_on_grid(predicted_value_fn, xs, vs) <= 0.0
    tp = int(np.count_nonzero(pred & true))
    n_pred, n_true = int(np.count_nonzero(pred)), int(np.count_nonzero(true))
    out: dict[str, float | int | None] = {
        "iou_box": _iou(pred, true),
        "iou_support": None,
        "support_cells": 0,
        "precision": tp / n_pred if n_pred else 1.0,
        "recall": tp / n_true if n_true else 1.0,
    }
    if dataset is not None:
        support = _support_mask(_dataset_observations(dataset), xs, vs)
        out["support_cells"] = int(np.count_nonzero(support))
        out["iou_support"] = _iou(pred[support], true[support]) if out["support_cells"] else None
    return out


def plot_feasibility(
    predicted_value_fn: ValueFn,
    path: str | os.PathLike[str],
    dataset: Any = None,
    title: str | None = None,
    nx: int = NX,
    nv: int = NV,
) -> Path:
    """Save a PNG: learned ``V_h`` heat map, its zero contour, and the exact kernel boundary.

    Dataset states (if given) are drawn as faint dots; the IoU scores are in the title.
    Uses matplotlib's Agg canvas directly (object API, no pyplot), so it works headless and
    never changes the process-wide backend of an interactive session.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    xs, vs, true, _ = kernel_grid(nx, nv)
    values = _evaluate_on_grid(predicted_value_fn, xs, vs)
    scores = feasibility_iou(predicted_value_fn, dataset=dataset, nx=nx, nv=nv)

    fig = Figure(figsize=(7.5, 5.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    # Symmetric colour scale around 0 so the sign (the feasibility verdict) is the colour split.
    span = float(np.max(np.abs(values))) or 1.0
    mesh = ax.pcolormesh(
        xs, vs, values.T, shading="nearest", cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -span, span), rasterized=True
    )
    fig.colorbar(mesh, ax=ax, label=r"learned $V_h$ ($\leq 0$: feasible)")
    obs = _dataset_observations(dataset)
    if len(obs):
        rng = np.random.default_rng(0)  # a fixed subsample keeps the figure reproducible
        pick = rng.choice(len(obs), size=min(len(obs), 20000), replace=False)
        ax.scatter(obs[pick, 0], obs[pick, 1], s=1, c="k", alpha=0.08, linewidths=0)
    with warnings.catch_warnings():
        # contour warns when a level is absent (e.g. V_h never crosses 0); the legend still shows.
        warnings.simplefilter("ignore")
        if true.any() and not true.all():
            ax.contour(xs, vs, true.T.astype(float), levels=[0.5], colors="k", linewidths=2.0)
        if values.min() < 0.0 < values.max():
            ax.contour(xs, vs, values.T, levels=[0.0], colors="lime", linewidths=1.5, linestyles="--")
    ax.axvline(X_HAZARD, color="tab:orange", linewidth=1.0, linestyle=":")
    ax.legend(
        handles=[
            Line2D([], [], color="k", linewidth=2.0, label="exact kernel boundary"),
            Line2D([], [], color="lime", linewidth=1.5, linestyle="--", label=r"learned $V_h = 0$"),
            Line2D([], [], color="tab:orange", linestyle=":", label=f"hazard x = {X_HAZARD:g}"),
        ],
        loc="lower left",
        fontsize=8,
    )
    ax.set_xlabel("position x")
    ax.set_ylabel("velocity v")
    ax.set_xlim(xs[0], xs[-1])
    ax.set_ylim(vs[0], vs[-1])
    head = f"{title}\n" if title else ""
    sup = "n/a" if scores["iou_support"] is None else f"{scores['iou_support']:.3f}"
    ax.set_title(f"{head}IoU (box) {scores['iou_box']:.3f}   IoU (data support) {sup}", fontsize=10)
    fig.tight_layout()
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png")
    return target
