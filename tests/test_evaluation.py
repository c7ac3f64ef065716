"""Evaluation: the numbers depend on the seeds only, not on the process count or on what ran before."""

from __future__ import annotations

import numpy as np
import pytest

from flrp.algos.base import get_algorithm
from flrp.data.spec import DataSpec
from flrp.data.tasks import get_task
from flrp.evaluation.rollout import EVAL_GROUP, evaluate, evaluate_model_file


@pytest.fixture(scope="module")
def stochastic_model(tmp_path_factory):
    """An untrained FLRP (random weights, u ~ N(0, I) acting noise) on the toy task."""
    cls = get_algorithm("flrp")
    algo = cls(cls.Config(hidden=16, prior_layers=2, posterior_layers=1, seed=3), device="cpu")
    task = get_task("ToyHazard")
    algo.build(DataSpec(2, 1, [0.0, 0.0], [1.0, 1.0], 1.0, task.max_episode_steps, 0.0, 1.0))
    path = algo.save(tmp_path_factory.mktemp("model") / "model.pt")
    return algo, path, task


def _per_episode(res):
    return [(e.seed, e.ret, e.cost, e.length) for e in res.episodes]


def test_stochastic_evaluation_is_independent_of_process_count(stochastic_model):
    algo, path, task = stochastic_model
    episodes = 3 * EVAL_GROUP - 2  # an uneven last group
    one = evaluate_model_file(path, task, episodes=episodes, seed=7, deterministic=False, workers=1)
    two = evaluate_model_file(path, task, episodes=episodes, seed=7, deterministic=False, workers=2)
    mem = evaluate(algo, task, episodes=episodes, seed=7, deterministic=False)
    assert _per_episode(one) == _per_episode(two) == _per_episode(mem)
    assert [e.seed for e in one.episodes] == list(range(7, 7 + episodes))
    # the policy really is stochastic: acting noise changes returns between groups/seeds
    assert len({round(e.ret, 6) for e in one.episodes}) > 1


def test_evaluation_does_not_touch_the_training_noise_stream(stochastic_model):
    algo, _, task = stochastic_model
    before = algo._noise_gen.get_state().clone()
    a = evaluate(algo, task, episodes=EVAL_GROUP, seed=0, deterministic=False)
    assert np.array_equal(algo._noise_gen.get_state().numpy(), before.numpy())
    algo._noise_gen.manual_seed(12345)  # whatever the stream was, evaluation is the same
    b = evaluate(algo, task, episodes=EVAL_GROUP, seed=0, deterministic=False)
    assert _per_episode(a) == _per_episode(b)
    c = evaluate(algo, task, episodes=EVAL_GROUP, seed=1, deterministic=False)
    assert _per_episode(c) != _per_episode(a)


def test_a_model_file_overwritten_in_place_is_evaluated_afresh(tmp_path):
    """The per-process model cache must not serve the old weights of a rewritten model.pt."""
    cls = get_algorithm("bc-all")
    task = get_task("ToyHazard")
    path = tmp_path / "model.pt"
    runs = []
    for seed in (0, 1):
        algo = cls(cls.Config(hidden=8, seed=seed), device="cpu")
        algo.build(DataSpec(2, 1, [0.0, 0.0], [1.0, 1.0], 1.0, task.max_episode_steps, 0.0, 1.0))
        algo.save(path)
        runs.append(_per_episode(evaluate_model_file(path, task, episodes=EVAL_GROUP, workers=1)))
        assert runs[-1] == _per_episode(evaluate(algo, task, episodes=EVAL_GROUP))
    assert runs[0] != runs[1]
