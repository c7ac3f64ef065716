"""Causal (GPT-style) transformer blocks for sequence policies such as CDT.

Layout follows OSRL's ``osrl/common/net.py`` ``TransformerBlock`` and the trunk of
``osrl/algorithms/cdt.py`` (itself from CORL's Decision Transformer): pre-LayerNorm blocks
``x + Dropout(Attn(LN(x)))`` then ``x + MLP(LN(x))`` with a 4x GELU MLP ending in dropout; the
trunk applies LayerNorm and dropout to the token embeddings first and a final LayerNorm last;
weights start from ``N(0, 0.02)`` (``CDT._init_weights``).

Attention is written out (``softmax(QK^T/sqrt(d)) V``) rather than delegated to
``nn.MultiheadAttention`` so that the mask can be arbitrary: a key-padding mask combined with the
causal mask normally leaves a padded query with no key at all (a row of ``-inf`` and NaNs that
leak into later layers). Here every query may always attend to itself, so padded positions stay
finite, and real positions never see padded ones. With right padding (the padded steps come after
the real ones, as in OSRL's sequence sampler) causality alone already hides the padding from the
real tokens, so a padded window gives the real positions exactly the outputs of the unpadded one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["CausalSelfAttention", "TransformerBlock", "CausalTransformer", "init_gpt_weights", "attention_mask"]


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


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with a boolean attend-mask and dropout on the attention weights."""

    def __init__(self, embed_dim: int, num_heads: int, attention_dropout: float = 0.0) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.attn_drop = nn.Dropout(attention_dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, E = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, H, L, D)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, H, L, L)
        scores = scores.masked_fill(~mask, float("-inf"))
        weights = self.attn_drop(torch.softmax(scores, dim=-1))
        out = (weights @ v).transpose(1, 2).reshape(B, L, E)
        return self.proj(out)


class TransformerBlock(nn.Module):
    """Pre-LN block: ``x + drop(attn(LN(x)))``, then ``x + MLP(LN(x))`` (4x width, GELU, dropout)."""

    def __init__(self, embed_dim: int, num_heads: int, attention_dropout: float = 0.1, residual_dropout: float = 0.1) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.attn = CausalSelfAttention(embed_dim, num_heads, attention_dropout)
        self.drop = nn.Dropout(residual_dropout)
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim, 4 * embed_dim),
            nn.GELU(),
            nn.Linear(4 * embed_dim, embed_dim),
            nn.Dropout(residual_dropout),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), mask))
        return x + self.mlp(self.norm2(x))


class CausalTransformer(nn.Module):
    """Token embeddings (B, L, E) -> contextual features (B, L, E).

    ``LN -> dropout -> blocks -> LN`` (OSRL/CORL DT: the embedding LayerNorm *and* dropout, "as in
    the original implementation"). ``valid`` (B, L) marks real tokens; None means all are real.
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
        self.emb_drop = nn.Dropout(embedding_dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(embed_dim, num_heads, attention_dropout, residual_dropout) for _ in range(num_layers)
        )
        self.out_norm = nn.LayerNorm(embed_dim)

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        mask = attention_mask(tokens.shape[1], valid, device=tokens.device)
        x = self.emb_drop(self.emb_norm(tokens))
        for block in self.blocks:
            x = block(x, mask)
        return self.out_norm(x)
