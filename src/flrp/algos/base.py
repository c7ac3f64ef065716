"""The algorithm interface every method shares (d3rlpy's spirit, one file per method).

``XConfig`` (a dataclass of defaults, each naming its source) builds ``X``; ``X.fit(dataset)``
trains, ``X.predict(obs)`` acts on a batch, ``X.save(path)`` / ``Algorithm.load(path)`` round-trip
one self-contained file (config, data spec incl. observation normalisation, weights), and a
checkpoint (optimisers, RNG states, step) resumes a run bit-exactly on CPU.

Model and checkpoint files hold tensors and plain values only and are read with
``torch.load(weights_only=True)``, so opening a crafted file runs no code. Each carries a format
version and a sha256 of its contents; loading checks both. Saving is byte-reproducible.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import hashlib
import io
import pickle
import sys
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import torch
from torch import nn

import flrp
from flrp.data.dataset import OfflineDataset
from flrp.data.spec import DataSpec
from flrp.algos.validation import POSITIVE, Range, check_config, check_number
from flrp.errors import FlrpError
from flrp.io import clean_temp_files, fs_error, write_bytes, write_json
from flrp.logging import MetricsLogger
from flrp.rundir import run_lock, start_fresh
from flrp.runtime import tune_allocator

__all__ = ["AlgoConfig", "Algorithm", "register", "get_algorithm", "ALGORITHMS", "resolve_device", "call_frozen"]

CHECKPOINT_NAME = "checkpoint.pt"
SAMPLE_BLOCK = 256  # minibatch index draws per host-to-device copy (see Algorithm.sample_batch)
MODEL_NAME = "model.pt"
# Version of the model/checkpoint file layout; a file with a larger one is refused. Files without
# one (flrp 0.1 before format versions) load without a checksum check.
FORMAT_VERSION = 1


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
    cost_limit: float = 10.0

    # Allowed ranges beyond flrp.algos.validation.FIELD_RANGES (field name -> Range); subclasses extend.
    field_ranges: ClassVar[dict[str, Range]] = {}

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


ALGORITHMS: dict[str, type["Algorithm"]] = {}


def register(cls: type["Algorithm"]) -> type["Algorithm"]:
    ALGORITHMS[cls.name] = cls
    return cls


def get_algorithm(name: str) -> type["Algorithm"]:
    import flrp.algos  # noqa: F401  (registers every algorithm)

    key = name.lower().replace("_", "-")
    if key not in ALGORITHMS:
        raise FlrpError(f"unknown algorithm '{name}' (choose from {', '.join(sorted(ALGORITHMS))})")
    return ALGORITHMS[key]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> cuda if present, else cpu; a device that is unknown or absent here is one line."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise FlrpError(f"--device {device}: unknown device (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise FlrpError(f"--device {device}: no CUDA GPU is available here (use --device cpu or auto)")
        if dev.index is not None and dev.index >= n:
            raise FlrpError(f"--device {device}: this machine has {n} CUDA device(s) (cuda:0 .. cuda:{n - 1})")
    elif dev.type != "cpu":
        raise FlrpError(f"--device {device}: unsupported device type '{dev.type}' (use auto, cpu, cuda or cuda:N)")
    return dev


def call_frozen(module: nn.Module, *args: Any, method: str = "forward") -> Any:
    """Call ``module`` with its parameters detached: gradients reach the inputs, never the weights.

    Used where one loss must pass *through* a network it must not train (the refiner through the
    frozen prior flow, decoder and critics, Sec. 3.2 "Freezing the decoder").
    """
    params = {n: p.detach() for n, p in module.named_parameters()}
    buffers = dict(module.named_buffers())
    if method == "forward":
        return torch.func.functional_call(module, {**params, **buffers}, args)
    # functional_call only dispatches forward; route other methods through a tiny shim.
    return torch.func.functional_call(_MethodShim(module, method), {f"m.{k}": v for k, v in {**params, **buffers}.items()}, args)


class _MethodShim(nn.Module):
    def __init__(self, module: nn.Module, method: str) -> None:
        super().__init__()
        self.m = module
        self.method = method

    def forward(self, *args: Any) -> Any:
        return getattr(self.m, self.method)(*args)


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
        self._sampler_gen = torch.Generator()
        self._idx_block: torch.Tensor | None = None  # see sample_batch
        self._idx_block_state: torch.Tensor | None = None
        self._idx_pos = self._idx_skip = self._idx_size = 0
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
        self._set_sampler_state({"state": self._sampler_gen.manual_seed(self.config.seed + 1).get_state(), "pos": 0})
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

    def sample_batch(self, data: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
        """Uniform sampling with replacement (OSRL/FISOR practice).

        Indices come from a CPU generator, so the stream is the same on every device and
        restorable from a checkpoint. They are drawn ``SAMPLE_BLOCK`` steps at a time and moved
        to the device in one (pinned, asynchronous) copy, so a CUDA training loop has no per-step
        host-device transfer; on CPU a block draws exactly the numbers of per-step draws."""
        size = next(iter(data.values())).shape[0]
        blk = self._idx_block
        if blk is None or self._idx_pos >= blk.shape[0] or self._idx_size != size or blk.shape[1] != self.config.batch_size:
            self._idx_block_state = self._sampler_gen.get_state()
            cpu = torch.randint(size, (SAMPLE_BLOCK, self.config.batch_size), generator=self._sampler_gen)
            if self.device.type == "cuda":
                cpu = cpu.pin_memory()
            self._idx_block, self._idx_size = cpu.to(self.device, non_blocking=True), size
            self._idx_pos, self._idx_skip = self._idx_skip, 0
        idx = self._idx_block[self._idx_pos]
        self._idx_pos += 1
        return {k: v.index_select(0, idx) for k, v in data.items()}

    def _sampler_state(self) -> dict[str, Any]:
        """The sampler's position: the generator state at the current block's start + steps used."""
        if self._idx_block is None:  # none drawn since build/load: a resumed position may be pending
            return {"state": self._sampler_gen.get_state(), "pos": self._idx_skip}
        if self._idx_pos >= self._idx_block.shape[0]:
            return {"state": self._sampler_gen.get_state(), "pos": 0}
        return {"state": self._idx_block_state, "pos": self._idx_pos}

    def _set_sampler_state(self, saved: Any) -> None:
        if isinstance(saved, torch.Tensor):  # checkpoints of flrp 0.1: the generator state alone
            saved = {"state": saved, "pos": 0}
        self._sampler_gen.set_state(saved["state"])
        self._idx_block, self._idx_pos, self._idx_skip = None, 0, int(saved["pos"])

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
        checkpoint_every: int = 5000,
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
        written atomically every ``checkpoint_every`` steps, and an existing checkpoint there is
        resumed (``resume=True``) so a killed run continues exactly where its last checkpoint left
        off, its logs cut back to that step. Otherwise the run starts fresh and moves the previous
        run's files aside; a finished ``model.pt`` only with ``overwrite=True`` (which also
        discards a checkpoint). ``run_info`` is written to ``run.json`` once the directory is ready.
        """
        total = int(self.config.steps if steps is None else steps)
        check_fit_args(total, log_every, checkpoint_every)
        run = Path(run_dir) if run_dir is not None else None
        with run_lock(run) if run is not None else contextlib.nullcontext():
            if self.device.type == "cpu":
                tune_allocator()
            fingerprint = _fingerprint(dataset)
            if not self.built:
                self.build(DataSpec.from_dataset(dataset, self.config.normalize_obs))
            resuming = run is not None and resume and not overwrite and (run / CHECKPOINT_NAME).exists()
            if run is not None:
                clean_temp_files(run)
                if resuming:
                    self.load_checkpoint(run / CHECKPOINT_NAME)
                    if self._data_fingerprint not in (None, fingerprint):
                        raise FlrpError(f"{run / CHECKPOINT_NAME}: checkpoint was trained on different data than {dataset.source}")
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
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=self.step, disable=not progress, desc=f"{self.name}", dynamic_ncols=True)
            for m in self.modules.values():
                m.train()
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
                    if run is not None and (self.step % checkpoint_every == 0 or self.step == total):
                        self.save_checkpoint(run / CHECKPOINT_NAME)
                        logger.write_csv()
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
            "format": "flrp",
            "format_version": FORMAT_VERSION,
            "flrp_version": flrp.__version__,
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
        payload = _plain(payload)
        payload["checksum"] = _checksum(payload)
        return payload

    def _write(self, path: str | Path, with_training_state: bool) -> Path:
        # Serialised in memory: the zip's record names then do not depend on a temp file's name,
        # so identical runs give identical bytes; written atomically (one line on a full disk).
        buf = io.BytesIO()
        torch.save(self._payload(with_training_state), buf)
        write_bytes(path, buf.getvalue())
        return Path(path)

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
        payload = _read_payload(path)
        if payload["algo"] != self.name:
            raise FlrpError(f"{path}: checkpoint is for algorithm '{payload['algo']}', not '{self.name}'")
        config = _config_from_payload(self.Config, payload, path)
        if self.spec is None:
            self.config = config
            self.build(_spec_from_payload(payload))
        else:
            mine, theirs = asdict(self.config), asdict(config)
            diff = sorted(k for k in mine if k != "steps" and mine[k] != theirs[k])
            if diff:
                raise FlrpError(f"{path}: checkpoint was made with different settings ({', '.join(diff)}); use another --out, or --overwrite to start over")
        self._restore(payload, str(path))
        if "optimizers" in payload:
            _require(payload, ("rng", "data_fingerprint"), path)
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
        payload = _read_payload(path)
        cls = get_algorithm(payload["algo"])
        algo = cls(_config_from_payload(cls.Config, payload, path), device=device)
        algo.build(_spec_from_payload(payload))
        algo._restore(payload, str(path))
        return algo

    def parameters_vector(self) -> torch.Tensor:
        """All trainable weights flattened (for tests that compare runs)."""
        return torch.cat([p.detach().flatten().cpu() for m in self.modules.values() for p in m.parameters()])


def check_fit_args(steps: int, log_every: int, checkpoint_every: int) -> None:
    """The training-loop arguments of ``fit`` (and ``flrp train``): positive integers."""
    for flag, value in (("--steps", steps), ("--log-every", log_every), ("--checkpoint-every", checkpoint_every)):
        check_number(flag, value, POSITIVE)


def _plain(obj: Any) -> Any:
    """A copy of ``obj`` that pickles the same way whatever its history, and loads with weights_only.

    numpy arrays/scalars become tensors/Python numbers. Containers are rebuilt and strings
    interned: pickle shares objects by identity, so a resumed run (whose strings came from
    unpickling) would otherwise write other bytes than an uninterrupted one."""
    if isinstance(obj, dict):
        out = (OrderedDict if isinstance(obj, OrderedDict) else dict)((_plain(k), _plain(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # state_dict's per-module versions
            out._metadata = _plain(obj._metadata)  # type: ignore[attr-defined]
        return out
    if type(obj) in (list, tuple):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _digest(obj: Any, h: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(b"{")
        for k in sorted(obj, key=repr):
            h.update(repr(k).encode() + b":")
            _digest(obj[k], h)
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[")
        for v in obj:
            _digest(v, h)
        h.update(b"]")
    else:
        h.update(repr(obj).encode() + b",")


def _checksum(payload: dict[str, Any]) -> str:
    """sha256 of everything in the file but the checksum: tensors' bytes, keys and plain values."""
    h = hashlib.sha256()
    _digest({k: v for k, v in payload.items() if k != "checksum"}, h)
    return h.hexdigest()


def _require(d: dict[str, Any], keys: Any, path: str | Path, prefix: str = "") -> None:
    missing = [k for k in keys if k not in d]
    if missing:
        raise FlrpError(f"{path}: missing key '{prefix}{missing[0]}' (not a complete flrp model/checkpoint file)")


def _read_payload(path: str | Path) -> dict[str, Any]:
    """The payload of a model/checkpoint file, refused in one line unless it is intact and ours."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise FlrpError(f"{p}: no such model file") from None
    except OSError as exc:
        raise fs_error(p, exc, "cannot read") from None
    try:
        payload = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" in str(exc).lower():  # weights_only met a class or function: the file would run code
            raise FlrpError(f"{p}: refused: the file holds Python objects other than tensors and plain values (opening it could run code); not loaded") from None
        raise FlrpError(f"{p}: not a readable flrp model/checkpoint (corrupt or truncated)") from None
    except Exception:  # noqa: BLE001 - any unreadable file is one user-facing error
        raise FlrpError(f"{p}: not a readable flrp model/checkpoint (corrupt or truncated)") from None
    if not isinstance(payload, dict) or payload.get("format") != "flrp":
        raise FlrpError(f"{p}: not an flrp model/checkpoint file")
    version = payload.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise FlrpError(f"{p}: corrupt (format_version {version!r} is not an integer)")
    if version > FORMAT_VERSION:
        raise FlrpError(f"{p}: made by a newer flrp (file format {version}, flrp {payload.get('flrp_version')}); this flrp {flrp.__version__} reads format <= {FORMAT_VERSION}: upgrade flrp")
    _require(payload, ("algo", "config", "spec", "modules", "step") + (("checksum",) if version >= 1 else ()), p)
    for key in ("config", "spec", "modules"):
        if not isinstance(payload[key], dict):
            raise FlrpError(f"{p}: corrupt ('{key}' is not a mapping)")
    try:
        config_cls = get_algorithm(str(payload["algo"])).Config
    except FlrpError as exc:
        raise FlrpError(f"{p}: {exc}") from None
    # Every field present: a silent default would change the model.
    _require(payload["config"], [f.name for f in fields(config_cls)], p, "config.")
    _require(payload["spec"], [f.name for f in fields(DataSpec)], p, "spec.")
    if version >= 1 and payload["checksum"] != _checksum(payload):
        raise FlrpError(f"{p}: corrupt (checksum mismatch: the file changed after it was saved)")
    return payload


def _config_from_payload(config_cls: type[AlgoConfig], payload: dict[str, Any], path: str | Path) -> AlgoConfig:
    try:
        return config_cls.from_dict(payload["config"])
    except FlrpError as exc:
        raise FlrpError(f"{path}: {exc}") from None


def _spec_from_payload(payload: dict[str, Any]) -> DataSpec:
    return DataSpec(**{f.name: payload["spec"][f.name] for f in fields(DataSpec)})


def _fingerprint(ds: OfflineDataset) -> str:
    h = hashlib.sha1()
    for arr in (ds.observations, ds.actions, ds.rewards, ds.costs):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]
