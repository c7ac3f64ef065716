"""Causal (GPT-style) transformer blocks for sequence policies such as CDT.

Layout follows OSRL's ``osrl/common/net.py`` ``TransformerBlock`` and the trunk of
``osrl/algorithms/cdt.py`` (itself from CORL's Decision Transformer): pre-LayerNorm blocks
``x + Dropout(Attn(LN(x)))`` then ``x + MLP(LN(x))`` with a 4x GELU MLP ending in dropout; the
trunk applies LayerNorm and dropout to the token embeddings first and a final LayerNorm last;
weights start from ``N(0, 0.02)`` (``CDT._init_weights``).

Masking. Attention is causal. Sequences padded on the *right* (the padded steps after the real
ones, as OSRL's sequence sampler and the CDT evaluation context do) need no other mask: causality
already hides the padding from every real token, so the real positions get exactly the outputs of
the unpadded sequence, and padded positions stay finite (each attends at least to itself). For
other layouts :func:`attention_mask` builds a key-padding mask that keeps each position's own key,
so that no row is empty.

Speed (CPU, where the OSRL defaults make a step cost ~300 GFLOP at batch 2048):

* Without active dropout (evaluation, or ``attention_dropout=0``) attention is
  :func:`torch.nn.functional.scaled_dot_product_attention` (a fused kernel). PyTorch has no fused
  CPU kernel *with* dropout, so the training path is written out: one ``baddbmm`` computes the
  scaled scores plus the additive causal mask, then softmax, dropout and one ``bmm``.
* :class:`Dropout` draws its keep mask from 16 random bits per element (four per 64-bit draw of
  the default generator) instead of ``bernoulli_``, which costs a full random number (and several
  times the time) per element. The drop probability is therefore ``round(p * 2^16) / 2^16``
  (0.1 -> 0.100006) and kept values are scaled by the exact inverse keep probability, so the layer
  stays unbiased. It uses the default generator of the tensor's device, like ``nn.Dropout``.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Dropout", "dropout_multiplier", "CausalSelfAttention", "TransformerBlock", "CausalTransformer", "init_gpt_weights", "attention_mask"]

_DROP_BITS = 16


def init_gpt_weights(module: nn.Module, std: float = 0.02) -> None:
    """GPT/OSRL initialisation for ``module.apply``: Linear/Embedding ``N(0, std)``, zero biases,
    LayerNorm ``(1, 0)`` (OSRL ``CDT._init_weights``)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def attention_mask(length: int, valid: torch.Tensor | None = None, device: torch.device | None = None) -> torch.Tensor:
    """Boolean mask, True where query ``i`` may attend to key ``j``.

    Causal (``j <= i``); with ``valid`` (B, L) bool, keys that are padding are hidden too, except
    that every position keeps itself (so no row is empty). Shape (L, L) or (B, 1, L, L).
    """
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril_()
    if valid is None:
        return causal
    eye = torch.eye(length, dtype=torch.bool, device=valid.device)
    keys = valid[:, None, None, :]  # (B, 1, 1, L)
    return causal.to(valid.device) & (keys | eye)


@functools.lru_cache(maxsize=32)
def _causal_bias(length: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(L, L) additive mask: 0 on and below the diagonal, -inf above (cached; never written to)."""
    with torch.inference_mode(False):  # a normal tensor even if first built under inference mode
        return torch.full((length, length), float("-inf"), device=device, dtype=dtype).triu_(1)


def dropout_multiplier(shape: torch.Size | tuple[int, ...], p: float, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Dropout multipliers of ``shape``: ``1 / q`` with probability ``q``, else 0.

    ``q = 1 - round(p * 2^16) / 2^16``; 16 random bits per element from the device's default
    generator (see the module docstring).
    """
    n = math.prod(shape)
    drop = round(p * (1 << _DROP_BITS))
    if drop >= 1 << _DROP_BITS:
        return torch.zeros(shape, device=device, dtype=dtype)
    words = torch.empty(-(-n // 4), dtype=torch.int64, device=device).random_(-(2**63), None)
    bits = words.view(torch.int16)[:n].view(shape)  # uniform on [-2^15, 2^15)
    threshold = drop - (1 << (_DROP_BITS - 1))  # P(bits < threshold) = drop / 2^16
    # keep = (bits >= threshold) as 0/1, computed in float (exact for integers; a bool compare
    # and conversion take several times longer on CPU)
    keep = bits.to(torch.float32).sub_(threshold - 1).clamp_(0.0, 1.0)
    return keep.mul_((1 << _DROP_BITS) / ((1 << _DROP_BITS) - drop)).to(dtype)


class Dropout(nn.Module):
    """``nn.Dropout`` with a cheaper mask (:func:`dropout_multiplier`); identity in eval mode."""

    def __init__(self, p: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability must be in [0, 1], got {p}")
        self.p = float(p)

    @property
    def active(self) -> bool:
        return self.training and self.p > 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        return x * dropout_multiplier(x.shape, self.p, x.device, x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with dropout on the attention weights.

    ``mask`` (optional, boolean, True = may attend, (L, L) or (B, 1, L, L)) replaces the causal
    mask, e.g. :func:`attention_mask` with a key-padding mask. ``queries`` (optional, (Lq,) long,
    ascending positions) computes the outputs of those positions only (keys and values still come
    from every position); the result is then (B, Lq, E).
    """

    def __init__(self, embed_dim: int, num_heads: int, attention_dropout: float = 0.0) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.attn_drop = Dropout(attention_dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, queries: torch.Tensor | None = None) -> torch.Tensor:
        B, L, E = x.shape
        H, D = self.num_heads, self.head_dim
        if queries is None:
            Lq = L
            q, k, v = self.qkv(x).view(B, L, 3, H, D).permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, L, D) views
        else:
            Lq = queries.shape[0]
            w, b = self.qkv.weight, self.qkv.bias
            q = F.linear(x.index_select(1, queries), w[:E], b[:E]).view(B, Lq, H, D).transpose(1, 2)
            k, v = F.linear(x, w[E:], b[E:]).view(B, L, 2, H, D).permute(2, 0, 3, 1, 4).unbind(0)
            keys = torch.arange(L, device=x.device)
            mask = keys <= queries[:, None] if mask is None else mask[..., queries, :]  # (Lq, L) or (B, 1, Lq, L)
        if not self.attn_drop.active:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        else:
            # (B*H, len, D) operands for baddbmm/bmm: one copy each
            q, k, v = q.reshape(B * H, Lq, D), k.reshape(B * H, L, D), v.reshape(B * H, L, D)
            if mask is None:
                bias = _causal_bias(L, x.device, x.dtype)
            else:
                bias = torch.zeros(mask.shape, device=x.device, dtype=x.dtype).masked_fill_(~mask, float("-inf"))
                if bias.dim() > 2:
                    bias = bias.expand(B, H, Lq, L).reshape(B * H, Lq, L)
            scores = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=1.0 / math.sqrt(D))  # (B*H, Lq, L)
            weights = self.attn_drop(torch.softmax(scores, dim=-1))
            out = torch.bmm(weights, v).view(B, H, Lq, D)
        return self.proj(out.transpose(1, 2).reshape(B, Lq, E))


class TransformerBlock(nn.Module):
    """Pre-LN block: ``x + drop(attn(LN(x)))``, then ``x + MLP(LN(x))`` (4x width, GELU, dropout).

    With ``queries`` only those positions are computed after the attention (module docstring of
    :class:`CausalSelfAttention`)."""

    def __init__(self, embed_dim: int, num_heads: int, attention_dropout: float = 0.1, residual_dropout: float = 0.1) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.attn = CausalSelfAttention(embed_dim, num_heads, attention_dropout)
        self.drop = Dropout(residual_dropout)
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, 4 * embed_dim),
            nn.GELU(),
            nn.Linear(4 * embed_dim, embed_dim),
            Dropout(residual_dropout),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, queries: torch.Tensor | None = None) -> torch.Tensor:
        h = self.attn(self.norm1(x), mask, queries)
        if queries is not None:
            x = x.index_select(1, queries)
        x = x + self.drop(h)
        return x + self.mlp(self.norm2(x))


class CausalTransformer(nn.Module):
    """Token embeddings (B, L, E) -> contextual features (B, L, E).

    ``LN -> dropout -> blocks -> LN`` (OSRL/CORL DT: the embedding LayerNorm *and* dropout, "as in
    the original implementation"). ``valid`` (B, L) marks real tokens for sequences that are not
    right-padded; right padding needs none (module docstring), and None means causal only.
    ``outputs`` (optional, (Lo,) long, ascending) returns only those positions' features, (B, Lo, E):
    the last block then skips everything that only the other positions' outputs need (their
    queries, attention rows, projections and MLP), which gives the same features.
    """

    def __init__(
        self,
        embed_dim: int = 128,
        num_layers: int = 3,
        num_heads: int = 8,
        attention_dropout: float = 0.1,
        residual_dropout: float = 0.1,
        embedding_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.emb_norm = nn.LayerNorm(embed_dim)
        self.emb_drop = Dropout(embedding_dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(embed_dim, num_heads, attention_dropout, residual_dropout) for _ in range(num_layers)
        )
        self.out_norm = nn.LayerNorm(embed_dim)

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor | None = None, outputs: torch.Tensor | None = None) -> torch.Tensor:
        mask = None if valid is None else attention_mask(tokens.shape[1], valid)
        x = self.emb_drop(self.emb_norm(tokens))
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x, mask, outputs if i == last else None)
        if outputs is not None and last < 0:  # no blocks
            x = x.index_select(1, outputs)
        return self.out_norm(x)
