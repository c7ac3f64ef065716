"""Critic losses shared by the methods that learn HJ feasibility and IQL reward critics (FLRP, FISOR).

FLRP (Sec. 3.1, 3.4) and FISOR (``jaxrl5/agents/fisor/fisor.py``: ``update_v``, ``update_q``,
``update_vc``, ``update_qc``) train the same four networks with the same objectives:

* reward critics (IQL): ``V_r`` = upper expectile of ``min`` of the twin *target* ``Q_r``;
  ``Q_r`` regresses to ``r + gamma (1 - d) V_r(s')`` with the online ``V_r``;
* feasibility critics (HJ): ``V_h`` = reversed (lower) expectile of ``max`` of the twin target
  ``Q_h``; ``Q_h`` regresses to the discounted HJ backup ``(1-gamma) h + gamma max{h, V_h(s')}``.

They differ only in which ``V_h`` the backup reads (FLRP: a target copy, Eq. 9; FISOR: the
online net) and in their batch layout, so both are arguments here. Each returned loss depends
only on its own network's parameters (every target is computed without gradient), so the sum of
the four can be minimised in one backward pass with one Adam without mixing their gradients.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from flrp.nn.functional import expectile_loss, hj_target, iql_q_target, reversed_expectile_loss

__all__ = ["CriticTerms", "iql_reward_terms", "hj_feasibility_terms", "behaviour_hj_value"]


class CriticTerms(NamedTuple):
    """Losses of one (Q, V) pair plus the detached values the actor objectives use.

    ``q_sa``: (B,) twin-reduced *target* Q at the data pairs; ``v``: (B,) online V, detached.
    """

    loss_q: torch.Tensor
    loss_v: torch.Tensor
    q_sa: torch.Tensor
    v: torch.Tensor


def _twin_mse(q_all: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum over ensemble members of each member's MSE to ``y`` (members trained independently)."""
    return (q_all - y).square().mean(1).sum()


def iql_reward_terms(
    q: nn.Module,
    q_target: nn.Module,
    v: nn.Module,
    s: torch.Tensor,
    a: torch.Tensor,
    r: torch.Tensor,
    s2: torch.Tensor,
    terminal: torch.Tensor,
    gamma: float,
    expectile: float,
) -> CriticTerms:
    """IQL (Eq. 21-22; FISOR ``update_v``/``update_q``; LSPC ``_update_v``/``_update_q``)."""
    with torch.no_grad():
        q_t = q_target(s, a).min(0).values  # twin min
        y = iql_q_target(r, v(s2), terminal, gamma)
    v_s = v(s)
    return CriticTerms(_twin_mse(q(s, a), y), expectile_loss(q_t - v_s, expectile), q_t, v_s.detach())


def hj_feasibility_terms(
    q_h: nn.Module,
    q_h_target: nn.Module,
    v_h: nn.Module,
    v_h_next: nn.Module,
    s: torch.Tensor,
    a: torch.Tensor,
    signal: torch.Tensor,
    s2: torch.Tensor,
    terminal: torch.Tensor,
    gamma: float,
    expectile: float,
    backup: Literal["hj", "discounted"] = "hj",
    fixed_target: torch.Tensor | None = None,
) -> CriticTerms:
    """HJ feasibility critics (Eq. 7-9; FISOR ``update_vc``/``update_qc`` with ``critic_type="hj"``).

    ``signal`` is h(s) for ``backup="hj"``; with ``backup="discounted"`` it is a per-step cost and
    the target is the ordinary ``c + gamma (1 - d) V(s')`` (FLRP's "w/o HJ" ablation, FISOR
    ``critic_type="qc"``). ``v_h_next`` is the V_h read at s' (a target copy or ``v_h`` itself).
    ``fixed_target``, if given, replaces the backup as Q_h's regression target (FLRP's warm start).
    """
    with torch.no_grad():
        q_t = q_h_target(s, a).max(0).values  # twin max: conservative feasibility
        if fixed_target is not None:
            y = fixed_target
        else:
            nv = v_h_next(s2)
            y = hj_target(signal, nv, terminal, gamma) if backup == "hj" else iql_q_target(signal, nv, terminal, gamma)
    v_s = v_h(s)
    return CriticTerms(_twin_mse(q_h(s, a), y), reversed_expectile_loss(q_t - v_s, expectile), q_t, v_s.detach())


def behaviour_hj_value(h: np.ndarray, episode_bounds: Sequence[tuple[int, int]], gamma: float) -> np.ndarray:
    """The logged trajectory's own discounted HJ value, computed backward along each episode:
    ``V_b(t) = (1 - gamma) h_t + gamma max{h_t, V_b(t+1)}`` (Eq. 7 along the logged next state).

    At the episode's last transition ``V_b = h_t``: the fixed point of Eq. 7 for a trajectory
    that stays where it ends (a terminal, or a timeout whose future is unknown). For
    deterministic dynamics the logged actions are one admissible control, so ``V_b >= V*``:
    a safe-side start for Q_h (FLRP's ``hj_warm_start_steps``). Returns float32 (N,).
    """
    out = np.empty(len(h), dtype=np.float64)
    hh = np.asarray(h, dtype=np.float64)
    for start, end in episode_bounds:
        nxt = hh[end - 1]
        out[end - 1] = nxt
        for t in range(end - 2, start - 1, -1):
            nxt = (1.0 - gamma) * hh[t] + gamma * max(hh[t], nxt)
            out[t] = nxt
    return out.astype(np.float32)
