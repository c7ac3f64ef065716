"""The allowed range of every config field and numeric CLI flag, checked in one place.

``AlgoConfig`` checks its fields when it is built (and ``Algorithm.__init__`` again), so the
library and ``flrp train`` reject the same values with the same line, e.g.
``--gamma must be in (0, 1), got 2.0 (FLRPConfig.gamma)``. Ranges are keyed by field name
(``fnmatch`` patterns, first match wins; ``Class.field`` keys and a config class's own
``field_ranges`` take precedence); types come from the dataclass annotations. A number field
without a range must still be finite.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import types
import typing
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from flrp.errors import FlrpError

__all__ = ["Range", "FIELD_RANGES", "POSITIVE", "NON_NEGATIVE", "flag_of", "check_number", "check_config", "range_of"]


@dataclass(frozen=True)
class Range:
    """A closed or open interval of allowed values (always finite)."""

    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, v: float) -> bool:
        return math.isfinite(v) and (v > self.lo if self.lo_open else v >= self.lo) and (v < self.hi if self.hi_open else v <= self.hi)

    def __str__(self) -> str:
        if self.hi == math.inf:
            if self.lo == -math.inf:
                return "finite"
            if self.lo == 0 and self.lo_open:
                return "positive"
            return f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        return f"in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


POSITIVE = Range(0, lo_open=True)
NON_NEGATIVE = Range(0)
UNIT_OPEN = Range(0, 1, lo_open=True, hi_open=True)
UNIT_HALF_OPEN = Range(0, 1, hi_open=True)
FINITE = Range()

FIELD_RANGES: dict[str, Range] = {
    "FLRPConfig.latent_dim": Range(2),  # the flows' couplings split the latent in two
    "steps": POSITIVE,
    "seed": Range(0, 2**32 - 1),
    "gamma": UNIT_OPEN,
    "*_gamma": UNIT_OPEN,
    "expectile*": UNIT_OPEN,
    "tau": Range(0, 1, lo_open=True),
    "actor_tau": Range(0, 1, lo_open=True),
    "lmbda": Range(0, 1),
    "ood_quantile": Range(0, 1),
    "augment_percent": Range(0, 1),
    "beta1": UNIT_HALF_OPEN,
    "beta2": UNIT_HALF_OPEN,
    "*_dropout": UNIT_HALF_OPEN,
    "lr": POSITIVE,
    "*_lr": POSITIVE,
    "*weight_decay": NON_NEGATIVE,
    # sizes and counts
    "batch_size": POSITIVE,
    "critic_batch_size": POSITIVE,
    "hidden": POSITIVE,
    "*_hidden": POSITIVE,
    "latent_dim": POSITIVE,
    "embed_dim": POSITIVE,
    "time_dim": POSITIVE,
    "num_*": POSITIVE,
    "seq_len": POSITIVE,
    "sample_action_num": POSITIVE,
    "samples": POSITIVE,
    "select_samples": POSITIVE,
    "actor_blocks": POSITIVE,
    "actor_updates": POSITIVE,
    "micro_batch": POSITIVE,
    "episode_len": POSITIVE,
    "diffusion_steps": POSITIVE,
    "lr_decay_steps": POSITIVE,
    "*_layers": NON_NEGATIVE,
    "*_steps": NON_NEGATIVE,
    "aug_deg": NON_NEGATIVE,
    # weights, scales, temperatures
    "*temperature*": POSITIVE,
    "*_weight_clip": POSITIVE,
    "exp_adv_max_*": POSITIVE,
    "reward_scale": POSITIVE,
    "flow_episode_cost_max": NON_NEGATIVE,
    "select_margin": NON_NEGATIVE,
    "cost_scale": POSITIVE,
    "beta_min": POSITIVE,
    "beta_max": POSITIVE,
    "clip_grad": POSITIVE,
    "qc_scalar": POSITIVE,
    "latent_clamp": POSITIVE,
    "lambda_*": NON_NEGATIVE,
    "beta": NON_NEGATIVE,
    "beta_reward": NON_NEGATIVE,  # LSPC's advantage weights exp(beta * A); 0 = unweighted
    "beta_cost": NON_NEGATIVE,
    "vae_beta": NON_NEGATIVE,
    "kp": NON_NEGATIVE,
    "ki": NON_NEGATIVE,
    "kd": NON_NEGATIVE,
    "phi": NON_NEGATIVE,
    "cost_limit": NON_NEGATIVE,
    "loss_cost_weight": NON_NEGATIVE,
    "cost_sample_threshold": NON_NEGATIVE,
}


def flag_of(field: str) -> str:
    return "--" + field.replace("_", "-")


def range_of(config_cls: type, field: str) -> Range:
    own: dict[str, Range] = {}
    for klass in reversed(config_cls.__mro__):
        own.update(getattr(klass, "field_ranges", {}) or {})
    if field in own:
        return own[field]
    lineage = {k.__name__ for k in config_cls.__mro__}
    for pattern, rng in FIELD_RANGES.items():
        cls_name, _, name = pattern.rpartition(".")
        if (not cls_name or cls_name in lineage) and fnmatchcase(field, name):
            return rng
    return FINITE


def check_number(flag: str, value: Any, rng: Range, integer: bool = True, where: str = "") -> None:
    """Raise one line unless ``value`` is a number (an integer if ``integer``) in ``rng``."""
    suffix = f" ({where})" if where else ""
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise FlrpError(f"{flag} must be {'an integer' if integer else 'a number'}, got {value!r}{suffix}")
    if value not in rng:
        raise FlrpError(f"{flag} must be {rng}, got {value!r}{suffix}")


_FIELD_TYPES: dict[type, tuple[tuple[str, Any], ...]] = {}


def _field_types(config_cls: type) -> tuple[tuple[str, Any], ...]:
    if config_cls not in _FIELD_TYPES:
        hints = typing.get_type_hints(config_cls)
        _FIELD_TYPES[config_cls] = tuple((f.name, hints[f.name]) for f in dataclasses.fields(config_cls))
    return _FIELD_TYPES[config_cls]


def check_config(config: Any) -> None:
    """Check every field of a config dataclass against its type and range (first failure raises)."""
    cls = type(config)
    for name, tp in _field_types(cls):
        value = getattr(config, name)
        flag, where = flag_of(name), f"{cls.__name__}.{name}"
        args = typing.get_args(tp)
        if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
            if value is None:
                continue
            tp = next(a for a in args if a is not type(None))
            args = typing.get_args(tp)
        if typing.get_origin(tp) is typing.Literal:
            if value not in args:
                raise FlrpError(f"{flag} must be one of {', '.join(map(repr, args))}, got {value!r} ({where})")
        elif tp is bool or tp is str:
            if not isinstance(value, tp):
                raise FlrpError(f"{flag} must be a {tp.__name__}, got {value!r} ({where})")
        elif tp in (int, float):
            check_number(flag, value, range_of(cls, name), integer=tp is int, where=where)
