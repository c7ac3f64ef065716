"""``flrp export``: a trained policy as one self-contained file, to act outside Python training code.

:func:`export_policy` writes the deterministic policy of a model file as TorchScript (load with
``torch.jit.load``) or ONNX (any ONNX runtime). The file maps *raw* observations ``(B, obs_dim)``
float32 to *raw* actions ``(B, act_dim)``: the observation normalisation and the action scale are
inside, and its actions equal ``Algorithm.predict(obs, deterministic=True)`` (tested to 1e-5).

Deterministic mode is what exports: FLRP starts the refiner from the base mode u_0 = 0 (the
paper's evaluation samples u_0 ~ N(0, I) instead); BCQ-L decodes the VAE prior's mode z = 0;
CPQ takes the mean action; LSPC-O the encoder mean (LSPC-S z = 0). Not exportable: CDT (its
actions condition on the episode so far, returns- and costs-to-go, which a stateless file cannot
carry) and FISOR (it samples its diffusion chain in either mode; the deterministic one re-seeds
the sampler at every call, so a state's noise depends on its place in the batch).

For FLRP, ``safety=True`` adds two outputs per state, so a deployment can refuse an action the
critics flag: ``q_h``, the feasibility critic's value Q_h(s, a) of the chosen action (> 0:
predicted to lead to a violation; the max over the twin critics, as in training), and
``base_kl``, the Monte-Carlo estimate of KL(q_u || N(0, I)) of the refined base samples (Lemma 3
bounds the action-space shift of the refiner by it; :meth:`FLRP.base_kl`), from ``kl_samples``
base samples fixed in the file (drawn from ``seed``).

PyTorch 2.13 marks TorchScript deprecated (in favour of ``torch.export``); it still loads with
``torch.jit.load`` and nothing else installed. ONNX is the portable choice.

The file also carries what produced it (``flrp.json`` in TorchScript's extra files, the ONNX
model's metadata): algorithm, widths, outputs, flrp version, the model's config.
"""

from __future__ import annotations

import dataclasses
import io
import json
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

import flrp
from flrp.errors import FlrpError
from flrp.files import write_bytes

if TYPE_CHECKING:
    from flrp.algos.base import Algorithm

__all__ = ["FORMATS", "NOT_EXPORTABLE", "ExportedPolicy", "PolicyModule", "export_policy", "load_exported"]

FORMATS = ("torchscript", "onnx")
SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}
NOT_EXPORTABLE = {
    "cdt": "CDT acts on the episode so far (returns- and costs-to-go and past steps); a stateless policy file cannot carry that context",
    "fisor": "FISOR samples its diffusion chain even in deterministic mode (from a re-seeded generator, so a state's noise depends on its place in the batch), which a policy file does not reproduce",
}


class PolicyModule(nn.Module):
    """Raw observations -> raw actions of ``algo`` in deterministic mode [, Q_h, base KL]."""

    obs_mean: torch.Tensor
    obs_std: torch.Tensor
    action_bound: torch.Tensor
    kl_noise: torch.Tensor

    def __init__(self, algo: Algorithm, safety: bool = False, kl_samples: int = 256, seed: int = 0) -> None:
        super().__init__()
        spec = algo._require_built()
        self.algo = algo
        self.nets = nn.ModuleDict(algo.modules)  # the weights, registered so tracing keeps them as parameters
        self.register_buffer("obs_mean", torch.tensor(spec.obs_mean, dtype=torch.float32))
        self.register_buffer("obs_std", torch.tensor(spec.obs_std, dtype=torch.float32))
        self.register_buffer("action_bound", torch.tensor(float(spec.action_bound)))
        self.safety = safety
        self.refine_steps = int(getattr(algo.config, "refine_steps", 0))
        if safety:
            if "q_h" not in algo.modules or not hasattr(algo, "base_kl"):
                raise FlrpError(f"--safety: {algo.name} has no feasibility critic and refiner (only flrp exports Q_h and the base-space KL)")
            gen = torch.Generator().manual_seed(seed)
            latent = int(algo.latent_dim)  # type: ignore[attr-defined]
            self.register_buffer("kl_noise", torch.randn(kl_samples, 1, latent, generator=gen))

    def forward(self, obs: torch.Tensor) -> Any:
        s = (obs - self.obs_mean) / self.obs_std
        a = self.algo.act(s, deterministic=True)
        if not self.safety:
            return a * self.action_bound
        q_h = self.nets["q_h"](s, a).max(0).values
        return a * self.action_bound, q_h, self._base_kl(s)

    def _base_kl(self, s: torch.Tensor) -> torch.Tensor:
        """FLRP.base_kl with the file's fixed base samples (the same ones for every state)."""
        noise = self.kl_noise
        k, b = noise.shape[0], s.shape[0]
        s_rep = s.unsqueeze(0).expand(k, b, s.shape[1]).reshape(k * b, s.shape[1])
        u0 = noise.expand(k, b, noise.shape[2]).reshape(k * b, noise.shape[2])
        u = self.nets["refiner"](s_rep, u0, self.refine_steps).reshape(k, b, noise.shape[2])
        mu, var = u.mean(0), u.var(0) + 1e-8
        return 0.5 * (var + mu.square() - 1.0 - var.log()).sum(-1)


def _load(model: str | Path | Algorithm) -> Algorithm:
    from flrp.algos.base import Algorithm

    if isinstance(model, Algorithm):
        return model
    path = Path(model)
    return Algorithm.load(path / "model.pt" if path.is_dir() else path, device="cpu")


def export_policy(
    model: str | Path | Algorithm,
    fmt: Literal["torchscript", "onnx"] = "torchscript",
    out: str | Path | None = None,
    safety: bool = False,
    kl_samples: int = 256,
    seed: int = 0,
) -> Path:
    """Write ``model``'s deterministic policy (a run directory, a ``model.pt`` or an algorithm in
    memory) as ``fmt``; returns the file (default ``<run>/policy.pt`` or ``<run>/policy.onnx``).

    Raises:
        FlrpError: an unknown format, an algorithm that cannot be exported (:data:`NOT_EXPORTABLE`),
            ``safety`` for an algorithm without a feasibility critic, ONNX without the ``onnx``
            package, a file that cannot be written.
    """
    if fmt not in FORMATS:
        raise FlrpError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if kl_samples < 2:
        raise FlrpError(f"--kl-samples must be >= 2, got {kl_samples}")
    algo = _load(model)
    if algo.name in NOT_EXPORTABLE:
        raise FlrpError(f"{algo.name} cannot be exported: {NOT_EXPORTABLE[algo.name]}")
    if out is None:
        if not isinstance(model, (str, Path)):
            raise FlrpError("export_policy: pass out= for an algorithm in memory")
        base = Path(model) if Path(model).is_dir() else Path(model).parent
        out = base / f"policy{SUFFIX[fmt]}"
    spec = algo._require_built()
    if algo.device.type != "cpu":
        raise FlrpError(f"{algo.name}: export a model on the CPU (Algorithm.load(path, device='cpu')); this one is on {algo.device}")
    policy = PolicyModule(algo, safety, kl_samples, seed).eval()
    example = torch.as_tensor(np.asarray(spec.obs_mean, np.float32)[None].repeat(2, 0))
    meta = {
        "flrp_version": flrp.__version__,
        "algo": algo.name,
        "obs_dim": spec.obs_dim,
        "act_dim": spec.act_dim,
        "inputs": ["observation"],
        "outputs": ["action", "q_h", "base_kl"] if safety else ["action"],
        "deterministic": True,
        "kl_samples": kl_samples if safety else None,
        "config": dataclasses.asdict(algo.config),
    }
    buf = io.BytesIO()
    with algo.eval_mode(), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and exporter deprecation chatter
        if fmt == "torchscript":
            traced = torch.jit.trace(policy, (example,), check_trace=False)
            torch.jit.save(traced, buf, _extra_files={"flrp.json": json.dumps(meta)})
        else:
            _onnx_export(policy, example, buf, meta)
    write_bytes(out, buf.getvalue())
    return Path(out)


def _onnx_export(policy: PolicyModule, example: torch.Tensor, buf: io.BytesIO, meta: dict[str, Any]) -> None:
    try:
        import onnx
    except ImportError:
        raise FlrpError('--format onnx needs the onnx package: pip install "flrp[export]"') from None
    names = meta["outputs"]
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "policy.onnx"
        torch.onnx.export(policy, (example,), raw, dynamo=False, input_names=["observation"], output_names=names,
                          dynamic_axes={n: {0: "batch"} for n in ["observation", *names]})
        proto = onnx.load(str(raw))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    buf.write(proto.SerializeToString())


@dataclasses.dataclass
class ExportedPolicy:
    """An exported file, loaded: ``policy(obs)`` -> actions, or ``(actions, q_h, base_kl)``."""

    path: Path
    meta: dict[str, Any]
    _run: Any

    def __call__(self, obs: np.ndarray) -> Any:
        x = np.asarray(obs, dtype=np.float32)
        single = x.ndim == 1
        out = self._run(x[None] if single else x)
        return tuple(o[0] for o in out) if single and isinstance(out, tuple) else (out[0] if single else out)


def load_exported(path: str | Path) -> ExportedPolicy:
    """Load a file :func:`export_policy` wrote (TorchScript with torch, ONNX with onnxruntime)."""
    p = Path(path)
    if p.suffix == ".onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise FlrpError(f'{p}: running an ONNX policy here needs onnxruntime: pip install "flrp[export]"') from None
        session = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}

        def run_onnx(x: np.ndarray) -> Any:
            outs = session.run(None, {"observation": x})
            return tuple(outs) if len(outs) > 1 else outs[0]

        return ExportedPolicy(p, meta, run_onnx)
    files = {"flrp.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates TorchScript in favour of torch.export
        module = torch.jit.load(str(p), map_location="cpu", _extra_files=files)
    meta = json.loads(files["flrp.json"] or "{}")

    def run_script(x: np.ndarray) -> Any:
        with torch.no_grad():
            out = module(torch.from_numpy(x))
        return tuple(o.numpy() for o in out) if isinstance(out, tuple) else out.numpy()

    return ExportedPolicy(p, meta, run_script)
