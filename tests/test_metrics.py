"""Eq. 39-40 normalisation (FLRP appendix C.4 / DSRL get_normalized_score)."""

from __future__ import annotations

import numpy as np
import pytest

from flrp.data.tasks import get_task
from flrp.errors import FlrpError
from flrp.evaluation.metrics import is_safe, normalized_cost, normalized_reward


def test_normalized_reward_eq39() -> None:
    t = get_task("BallRun")
    assert normalized_reward(t.min_reward, t) == 0.0
    assert normalized_reward(t.max_reward, t) == 1.0
    mid = (t.min_reward + t.max_reward) / 2
    assert normalized_reward(mid, t) == pytest.approx(0.5)
    r = normalized_reward(700.0, t)
    assert isinstance(r, float)
    assert r == pytest.approx((700.0 - 26.339754104614258) / (1327.445556640625 - 26.339754104614258))
    # Not clipped: below the dataset minimum is negative.
    assert normalized_reward(0.0, t) < 0


def test_normalized_reward_array() -> None:
    t = get_task("CarRun")
    out = normalized_reward(np.array([t.min_reward, t.max_reward]), t)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, [0.0, 1.0])


def test_normalized_cost_eq40() -> None:
    assert normalized_cost(10.0) == 1.0
    assert normalized_cost(5.0) == 0.5
    assert normalized_cost(25.0, cost_limit=20.0) == 1.25
    assert isinstance(normalized_cost(3), float)
    np.testing.assert_allclose(normalized_cost(np.array([0.0, 10.0, 30.0])), [0.0, 1.0, 3.0])


def test_normalized_cost_limit_zero_uses_eps_one() -> None:
    # DSRL: eps = 1 only when the limit is 0 -> (C + 1) / 1.
    assert normalized_cost(0.0, cost_limit=0.0) == 1.0
    assert normalized_cost(2.0, cost_limit=0.0) == 3.0
    assert is_safe(normalized_cost(0.0, cost_limit=0.0))
    assert not is_safe(normalized_cost(0.5, cost_limit=0.0))


def test_negative_limit_rejected() -> None:
    with pytest.raises(FlrpError, match="cost limit"):
        normalized_cost(1.0, cost_limit=-1.0)


def test_is_safe() -> None:
    assert is_safe(1.0) is True
    assert is_safe(1.0000001) is False
    assert is_safe(np.float32(0.2)) is True
    np.testing.assert_array_equal(is_safe(np.array([0.5, 1.0, 1.5, np.nan])), [True, True, False, False])
