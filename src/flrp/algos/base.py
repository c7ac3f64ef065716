"""The algorithm interface every method shares (d3rlpy's spirit, one file per method).

``XConfig`` (a dataclass of defaults, each naming its source) builds ``X``; ``X.fit(dataset)``
trains, ``X.predict(obs)`` acts on a batch, ``X.save(path)`` / ``Algorithm.load(path)`` round-trip
one self-contained file (config, data spec incl. observation normalisation, weights), and a
checkpoint (optimisers, RNG states, step) resumes a run bit-exactly on CPU.

This module keeps the lifecycle (config, build, fit, act, save/load); the file format is
:mod:`flrp.algos.model_file`, the registry :mod:`flrp.algos.registry`, the minibatch sampler
:mod:`flrp.algos.sampler`.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import torch
from torch import nn

from flrp.algos import model_file
from flrp.algos.model_file import CHECKPOINT_NAME, FORMAT_VERSION, MODEL_NAME
from flrp.algos.registry import ALGORITHMS, get_algorithm, register
from flrp.algos.sampler import SAMPLE_BLOCK, BlockSampler
from flrp.algos.validation import POSITIVE, Range, check_config, check_number
from flrp.data.dataset import OfflineDataset
from flrp.data.spec import DataSpec
from flrp.data.tasks import COST_LIMIT
from flrp.devices import resolve_device
from flrp.errors import FlrpError
from flrp.files import clean_temp_files, write_json
from flrp.metrics_log import MetricsLogger
from flrp.nn.frozen import call_frozen
from flrp.progress import progress as progress_bar
from flrp.rundir import CHECKPOINT_EVERY, CHECKPOINT_MINUTES, run_lock, start_fresh
from flrp.runtime import tune_allocator

# The registry, the sampler, the file format and the torch helpers live in modules named for
# them; these names stay importable from here.
__all__ = [
    "ALGORITHMS",
    "CHECKPOINT_NAME",
    "FORMAT_VERSION",
    "MODEL_NAME",
    "SAMPLE_BLOCK",
    "AlgoConfig",
    "Algorithm",
    "call_frozen",
    "check_fit_args",
    "get_algorithm",
    "register",
    "resolve_device",
]


@dataclass
class AlgoConfig:
    """Settings common to every algorithm (Table 4, "Common Settings")."""

    # Gradient steps (Table 4: 1e6 for every method).
    steps: int = 1_000_000
    # Minibatch size (Table 4: 512).
    batch_size: int = 512
    # Discount factor (Table 4: 0.99).
    gamma: float = 0.99
    # Width of every hidden layer (Table 4: 256); two hidden layers everywhere.
    hidden: int = 256
    # Seed for network init, minibatch sampling and latent noise.
    seed: int = 0
    # Standardise observations with dataset statistics (saved with the model).
    normalize_obs: bool = True
    # Episode cost limit kappa used for normalised cost (Eq. 40) and by methods that take one.
    cost_limit: float = COST_LIMIT

    # Allowed ranges beyond flrp.algos.validation.FIELD_RANGES (field name -> Range); subclasses extend.
    field_ranges: ClassVar[dict[str, Range]] = {}
    # What a field means for this method, where that differs (the flag's --help); subclasses extend.
    field_help: ClassVar[dict[str, str]] = {"hidden": "width of the two hidden layers of every network"}

    @classmethod
    def help_of(cls, name: str) -> str:
        """The most specific ``field_help`` entry of ``name`` along the class hierarchy ("" if none)."""
        for klass in cls.__mro__:
            text = vars(klass).get("field_help", {}).get(name)
            if text is not None:
                return str(text)
        return ""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """One line naming the flag, the field and its range for the first bad value."""
        check_config(self)

    @property
    def hidden_sizes(self) -> tuple[int, int]:
        return (self.hidden, self.hidden)

    def replace(self, **changes: Any) -> "AlgoConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AlgoConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise FlrpError(f"{cls.__name__}: unknown config key(s) {', '.join(unknown)}")
        return cls(**d)


class Algorithm(abc.ABC):
    """Base class: owns modules, optimisers, RNGs, the training loop and (de)serialisation."""

    name: ClassVar[str] = "base"
    Config: ClassVar[type[AlgoConfig]] = AlgoConfig
    # How the method's own paper/code evaluates: deterministic (mean) or stochastic actions.
    eval_deterministic: ClassVar[bool] = True
    # Metrics shown live on the progress bar (default: the first four the update returns).
    progress_keys: ClassVar[tuple[str, ...]] = ()
    # Named config overrides (``flrp train --preset NAME``); empty: the defaults only.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    # Default gradient steps per task suite where the source differs from ``Config.steps`` (e.g.
    # OSRL's MetaDrive configs: 200k); used when neither --steps nor the preset gives steps.
    suite_steps: ClassVar[dict[str, int]] = {}

    @classmethod
    def preset_config(cls, name: str, **overrides: Any) -> AlgoConfig:
        """The config of preset ``name`` with ``overrides`` applied on top."""
        if name not in cls.presets:
            known = ", ".join(sorted(cls.presets)) or "none"
            raise FlrpError(f"{cls.name}: unknown preset '{name}' (presets: {known})")
        return cls.Config(**{**cls.presets[name], **overrides})

    def __init__(self, config: AlgoConfig | None = None, device: str | torch.device = "auto") -> None:
        self.config = config if config is not None else self.Config()
        if not isinstance(self.config, self.Config):
            raise FlrpError(f"{self.name}: expected a {self.Config.__name__}, got {type(self.config).__name__}")
        self.config.validate()  # again: fields may have been set after construction
        self.device = resolve_device(device)
        self.spec: DataSpec | None = None
        self.step = 0
        self.modules: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self._sampler = BlockSampler(self.device)
        self._noise_gen = torch.Generator(device=self.device)
        self._data_fingerprint: str | None = None

    # ------------------------------------------------------------------ building
    def build(self, spec: DataSpec) -> None:
        """Create networks and optimisers for ``spec`` (seeded, without touching global RNG state)."""
        self.spec = spec
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            self._build(spec)
        for m in self.modules.values():
            m.to(self.device)
        self._build_optimizers()
        self._sampler.seed(self.config.seed + 1)
        self._noise_gen.manual_seed(self.config.seed + 2)

    @abc.abstractmethod
    def _build(self, spec: DataSpec) -> None:
        """Fill ``self.modules`` (target networks included)."""

    @abc.abstractmethod
    def _build_optimizers(self) -> None:
        """Fill ``self.optimizers``."""

    @property
    def built(self) -> bool:
        return self.spec is not None

    def _require_built(self) -> DataSpec:
        if self.spec is None:
            raise FlrpError(f"{self.name}: the model is not built yet (call fit() or load())")
        return self.spec

    # ------------------------------------------------------------------ data
    def prepare_data(self, ds: OfflineDataset) -> dict[str, np.ndarray]:
        """The algorithm's view of the data as flat arrays; observations normalised, actions in [-1, 1].

        Keys: obs, act, rew, cost, next_obs, terminal (only terminals stop bootstrapping).
        Subclasses extend or filter it (e.g. HJ labels, safe-episode selection).
        """
        spec = self._require_built()
        return {
            "obs": spec.normalize_obs(ds.observations),
            "next_obs": spec.normalize_obs(ds.next_observations),
            "act": np.clip(ds.actions / spec.action_bound, -1.0, 1.0).astype(np.float32),
            "rew": ds.rewards.astype(np.float32),
            "cost": ds.costs.astype(np.float32),
            "terminal": ds.terminals.astype(np.float32),
        }

    def _to_device(self, arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: torch.as_tensor(v, device=self.device) for k, v in arrays.items()}

    @property
    def _sampler_gen(self) -> torch.Generator:
        """The sampler's CPU generator (algorithms with their own index draws use it too)."""
        return self._sampler.generator

    def sample_batch(self, data: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
        """Uniform sampling with replacement (see :class:`flrp.algos.sampler.BlockSampler`)."""
        return self._sampler.sample(data, self.config.batch_size)

    def _sampler_state(self) -> dict[str, Any]:
        return self._sampler.state()

    def _set_sampler_state(self, saved: Any) -> None:
        self._sampler.set_state(saved)

    # ------------------------------------------------------------------ learning
    @abc.abstractmethod
    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One gradient step on ``batch``; returns metrics as 0-d tensors (no host sync)."""

    def after_update(self) -> None:
        """Hook run after each step (target updates, schedules)."""

    # ------------------------------------------------------------------ acting
    @abc.abstractmethod
    def act(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Normalised observations (B, obs_dim) -> actions in [-1, 1] (B, act_dim)."""

    def reset(self) -> None:
        """Called at the start of every evaluation episode (stateful policies override)."""

    @contextlib.contextmanager
    def seeded_noise(self, seed: int) -> Iterator[None]:
        """Draw acting noise from a stream fixed by ``(config.seed, seed)`` alone.

        Evaluation runs its episodes in fixed groups, each inside this context seeded by the
        group's first episode seed, so stochastic evaluation gives the same numbers whatever ran
        before and however the groups are spread over processes. The training noise stream is
        restored afterwards (exact resume is unaffected)."""
        state = self._noise_gen.get_state()
        self._noise_gen.manual_seed((self.config.seed * 1_000_003 + int(seed) * 7_919 + 3) % (2**63))
        try:
            yield
        finally:
            self._noise_gen.set_state(state)

    @torch.no_grad()
    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Raw observations (B, obs_dim) or (obs_dim,) -> raw actions, same leading shape."""
        spec = self._require_built()
        x = np.asarray(obs, dtype=np.float32)
        single = x.ndim == 1
        if single:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != spec.obs_dim:
            raise FlrpError(f"{self.name}.predict: expected observations of width {spec.obs_dim}, got shape {np.shape(obs)}")
        s = torch.as_tensor(spec.normalize_obs(x), device=self.device)
        with self.eval_mode():
            a = self.act(s, deterministic=deterministic)
        out = (a.float().cpu().numpy() * spec.action_bound).astype(np.float32)
        return out[0] if single else out

    @contextlib.contextmanager
    def eval_mode(self) -> Iterator[None]:
        was = {k: m.training for k, m in self.modules.items()}
        for m in self.modules.values():
            m.eval()
        try:
            yield
        finally:
            for k, m in self.modules.items():
                m.train(was[k])

    # ------------------------------------------------------------------ training loop
    def fit(
        self,
        dataset: OfflineDataset,
        steps: int | None = None,
        run_dir: str | Path | None = None,
        log_every: int = 500,
        checkpoint_every: int = CHECKPOINT_EVERY,
        checkpoint_minutes: float = CHECKPOINT_MINUTES,
        resume: bool = True,
        progress: bool = True,
        tensorboard: bool = False,
        callback: Callable[["Algorithm", int, dict[str, float]], None] | None = None,
        overwrite: bool = False,
        run_info: dict[str, Any] | None = None,
    ) -> list[dict[str, float]]:
        """Train for ``steps`` total gradient steps (Algorithm 1's loop).

        With ``run_dir`` (see :mod:`flrp.rundir`, the run-directory contract): the directory is
        locked for the run; metrics go to ``metrics.jsonl``/``metrics.csv``, a checkpoint is
        written atomically every ``checkpoint_every`` steps, and also at the first step
        ``checkpoint_minutes`` of wall time after the last one (so a slow algorithm, e.g. CDT at
        ~1 s a step, never loses more than that to a kill), and an existing checkpoint there is
        resumed (``resume=True``) so a killed run continues exactly where its last checkpoint left
        off, its logs cut back to that step. Otherwise the run starts fresh and moves the previous
        run's files aside; a finished ``model.pt`` only with ``overwrite=True`` (which also
        discards a checkpoint). ``run_info`` is written to ``run.json`` once the directory is ready.
        """
        total = int(self.config.steps if steps is None else steps)
        check_fit_args(total, log_every, checkpoint_every, checkpoint_minutes)
        run = Path(run_dir) if run_dir is not None else None
        with run_lock(run) if run is not None else contextlib.nullcontext():
            if self.device.type == "cpu":
                tune_allocator()
            fingerprint = model_file.data_fingerprint(dataset)
            if not self.built:
                self.build(DataSpec.from_dataset(dataset, self.config.normalize_obs))
            resuming = run is not None and resume and not overwrite and (run / CHECKPOINT_NAME).exists()
            if run is not None:
                clean_temp_files(run)
                if resuming:
                    self.load_checkpoint(run / CHECKPOINT_NAME)
                    if self._data_fingerprint not in (None, fingerprint):
                        raise FlrpError(f"{run / CHECKPOINT_NAME}: checkpoint was trained on different data than {dataset.source}")
                    if self.step > total:  # would save the longer model under a config saying `total`
                        raise FlrpError(f"{run / CHECKPOINT_NAME}: checkpoint is at step {self.step}, past --steps {total}; use another --out, or --overwrite to start over")
                else:
                    start_fresh(run, overwrite)
                if run_info is not None:
                    write_json(run / "run.json", run_info)
            logger = MetricsLogger(run, tensorboard=tensorboard)
            if resuming:
                logger.truncate_after(self.step)
            self._data_fingerprint = fingerprint
            data = self._to_device(self.prepare_data(dataset))
            history: list[dict[str, float]] = []
            bar = progress_bar(total, initial=self.step, desc=self.name, unit="step", enabled=progress)
            for m in self.modules.values():
                m.train()
            last_save = time.monotonic()
            try:
                while self.step < total:
                    batch = self.sample_batch(data, self.config.batch_size)
                    metrics = self.update(batch)
                    self.after_update()
                    self.step += 1
                    bar.update(1)
                    if self.step % log_every == 0 or self.step == total:
                        row = {k: float(v) for k, v in metrics.items()}
                        history.append({"step": self.step, **row})
                        logger.log(self.step, row)
                        shown = [k for k in self.progress_keys if k in row] or list(row)[:4]
                        bar.set_postfix({k.split("/")[-1]: f"{row[k]:.3g}" for k in shown})
                        if callback is not None:
                            callback(self, self.step, row)
                    if run is not None and (self.step % checkpoint_every == 0 or self.step == total
                                            or time.monotonic() - last_save >= 60.0 * checkpoint_minutes):
                        self.save_checkpoint(run / CHECKPOINT_NAME)
                        logger.write_csv()
                        last_save = time.monotonic()
            except BaseException:
                bar.close()
                with contextlib.suppress(FlrpError):  # e.g. a full disk: report the first failure only
                    logger.close()
                raise
            bar.close()
            logger.close()
            if run is not None:
                self.save(run / MODEL_NAME)
                write_json(run / "config.json", {"algo": self.name, "config": asdict(self.config), "spec": self.spec.to_dict() if self.spec else None})
            return history

    # ------------------------------------------------------------------ state
    def _extra_state(self) -> dict[str, Any]:
        """Algorithm-specific non-module state (e.g. Lagrange multipliers)."""
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def _payload(self, with_training_state: bool) -> dict[str, Any]:
        spec = self._require_built()
        payload: dict[str, Any] = {
            "algo": self.name,
            "config": asdict(self.config),
            "spec": spec.to_dict(),
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "step": self.step,
            "extra": self._extra_state(),
        }
        if with_training_state:
            payload["optimizers"] = {k: o.state_dict() for k, o in self.optimizers.items()}
            payload["rng"] = {"sampler": self._sampler_state(), "noise": self._noise_gen.get_state()}
            payload["data_fingerprint"] = self._data_fingerprint
        return model_file.seal(payload)

    def _write(self, path: str | Path, with_training_state: bool) -> Path:
        return model_file.write_payload(path, self._payload(with_training_state))

    def save(self, path: str | Path) -> Path:
        """One self-contained file: config, data spec (normalisation), weights. No optimiser state."""
        return self._write(path, with_training_state=False)

    def save_checkpoint(self, path: str | Path) -> Path:
        """Everything needed to resume exactly: weights, optimisers, RNG states, step."""
        return self._write(path, with_training_state=True)

    def _restore(self, payload: dict[str, Any], source: str) -> None:
        for k, m in self.modules.items():
            if k not in payload["modules"]:
                raise FlrpError(f"{source}: missing weights for module '{k}'")
            try:
                m.load_state_dict(payload["modules"][k])
            except (RuntimeError, KeyError, TypeError, AttributeError) as exc:
                first = next((ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()), str(exc).splitlines()[0] if str(exc) else "")
                raise FlrpError(f"{source}: the weights of module '{k}' do not fit the network its config describes ({first})") from None
        self.step = int(payload["step"])
        self._load_extra_state(payload.get("extra", {}))

    def load_checkpoint(self, path: str | Path) -> None:
        payload = model_file.read_payload(path)
        if payload["algo"] != self.name:
            raise FlrpError(f"{path}: checkpoint is for algorithm '{payload['algo']}', not '{self.name}'")
        config = model_file.config_from_payload(self.Config, payload, path)
        if self.spec is None:
            self.config = config
            self.build(model_file.spec_from_payload(payload))
        else:
            mine, theirs = asdict(self.config), asdict(config)
            diff = sorted(k for k in mine if k != "steps" and mine[k] != theirs[k])
            if diff:
                raise FlrpError(f"{path}: checkpoint was made with different settings ({', '.join(diff)}); use another --out, or --overwrite to start over")
        self._restore(payload, str(path))
        if "optimizers" in payload:
            model_file.require(payload, ("rng", "data_fingerprint"), path)
            for k, o in self.optimizers.items():
                if k not in payload["optimizers"]:
                    raise FlrpError(f"{path}: missing key 'optimizers.{k}'")
                o.load_state_dict(payload["optimizers"][k])
            self._set_sampler_state(payload["rng"]["sampler"])
            self._noise_gen.set_state(payload["rng"]["noise"].to(self._noise_gen.get_state().device))
            self._data_fingerprint = payload.get("data_fingerprint")

    @staticmethod
    def load(path: str | Path, device: str | torch.device = "auto") -> "Algorithm":
        """Load a model (``save``) or checkpoint file; the algorithm is read from the file."""
        payload = model_file.read_payload(path)
        cls = get_algorithm(payload["algo"])
        algo = cls(model_file.config_from_payload(cls.Config, payload, path), device=device)
        algo.build(model_file.spec_from_payload(payload))
        algo._restore(payload, str(path))
        return algo

    def parameters_vector(self) -> torch.Tensor:
        """All trainable weights flattened (for tests that compare runs)."""
        return torch.cat([p.detach().flatten().cpu() for m in self.modules.values() for p in m.parameters()])


def check_fit_args(steps: int, log_every: int, checkpoint_every: int, checkpoint_minutes: float) -> None:
    """The training-loop arguments of ``fit`` (and ``flrp train``): positive integers, and a
    positive finite number of minutes."""
    for flag, value in (("--steps", steps), ("--log-every", log_every), ("--checkpoint-every", checkpoint_every)):
        check_number(flag, value, POSITIVE)
    check_number("--checkpoint-minutes", checkpoint_minutes, POSITIVE, integer=False)  # a Range is finite: inf and nan fail
