"""Fusion of the image and catalog embeddings: ``forward(image, tabular) -> (B, out_dim)``.

Either input may be ``None`` (image-only and catalog-only models); every fusion then passes the
present modality through its own projection, so one model class covers all three configurations.
"""

from __future__ import annotations

import torch
from torch import nn

from hybrid.registry import Registry


class Fusion(nn.Module):
    """Base: projections of each present modality to ``dim``; subclasses combine the two."""

    def __init__(self, image_dim: int | None, tabular_dim: int | None, dim: int = 128) -> None:
        super().__init__()
        if image_dim is None and tabular_dim is None:
            raise ValueError("a model needs at least one modality (image or tabular)")
        self.image_proj = nn.Linear(image_dim, dim) if image_dim else None
        self.tabular_proj = nn.Linear(tabular_dim, dim) if tabular_dim else None
        self.dim = dim
        self.out_dim = dim

    def single(self, image: torch.Tensor | None, tabular: torch.Tensor | None) -> torch.Tensor | None:
        """The projection of the only modality present, or None when both are."""
        if image is not None and tabular is not None:
            return None
        return self.image_proj(image) if image is not None else self.tabular_proj(tabular)


FUSIONS: Registry[nn.Module] = Registry("fusion", "hybrid.models", contract=Fusion)


@FUSIONS.register("concat")
class ConcatFusion(Fusion):
    """Late fusion: concatenate the two embeddings and mix them with a linear layer."""

    def __init__(self, image_dim: int | None, tabular_dim: int | None, dim: int = 128) -> None:
        super().__init__(image_dim, tabular_dim, dim)
        self.mix = nn.Sequential(nn.GELU(), nn.Linear(2 * dim, dim)) if image_dim and tabular_dim else None

    def forward(self, image: torch.Tensor | None, tabular: torch.Tensor | None) -> torch.Tensor:
        one = self.single(image, tabular)
        if one is not None:
            return one
        return self.mix(torch.cat([self.image_proj(image), self.tabular_proj(tabular)], dim=-1))


@FUSIONS.register("gated")
class GatedFusion(Fusion):
    """Gated fusion (Arevalo et al. 2017, gated multimodal units): a learned, per-dimension gate
    ``z = sigmoid(W [h_i, h_t])`` weighs ``tanh`` projections of the two modalities."""

    def __init__(self, image_dim: int | None, tabular_dim: int | None, dim: int = 128) -> None:
        super().__init__(image_dim, tabular_dim, dim)
        self.gate = nn.Linear(image_dim + tabular_dim, dim) if image_dim and tabular_dim else None

    def forward(self, image: torch.Tensor | None, tabular: torch.Tensor | None) -> torch.Tensor:
        one = self.single(image, tabular)
        if one is not None:
            return one
        z = torch.sigmoid(self.gate(torch.cat([image, tabular], dim=-1)))
        return z * torch.tanh(self.image_proj(image)) + (1 - z) * torch.tanh(self.tabular_proj(tabular))


@FUSIONS.register("film")
class FiLMFusion(Fusion):
    """FiLM (Perez et al. 2018): the catalog features condition the image features by a feature-wise
    affine map ``h_i * (1 + gamma(h_t)) + beta(h_t)``."""

    def __init__(self, image_dim: int | None, tabular_dim: int | None, dim: int = 128) -> None:
        super().__init__(image_dim, tabular_dim, dim)
        self.film = nn.Linear(dim, 2 * dim) if image_dim and tabular_dim else None

    def forward(self, image: torch.Tensor | None, tabular: torch.Tensor | None) -> torch.Tensor:
        one = self.single(image, tabular)
        if one is not None:
            return one
        gamma, beta = self.film(torch.relu(self.tabular_proj(tabular))).chunk(2, dim=-1)
        return torch.relu(self.image_proj(image) * (1 + gamma) + beta)


@FUSIONS.register("cross_attention")
class CrossAttentionFusion(Fusion):
    """Cross-attention: catalog tokens query image tokens (each embedding is split into ``tokens``
    tokens of size ``dim / tokens``); the attended tokens are pooled and added to the image embedding."""

    def __init__(
        self, image_dim: int | None, tabular_dim: int | None, dim: int = 128, tokens: int = 8, heads: int = 4
    ) -> None:
        super().__init__(image_dim, tabular_dim, dim)
        if dim % tokens or (dim // tokens) % heads:
            raise ValueError(f"dim={dim} must split into {tokens} tokens divisible by {heads} heads")
        self.tokens = tokens
        d = dim // tokens
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True) if image_dim and tabular_dim else None
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(2 * dim, dim)

    def forward(self, image: torch.Tensor | None, tabular: torch.Tensor | None) -> torch.Tensor:
        one = self.single(image, tabular)
        if one is not None:
            return one
        hi, ht = self.image_proj(image), self.tabular_proj(tabular)
        b = hi.shape[0]
        q = ht.view(b, self.tokens, -1)
        kv = hi.view(b, self.tokens, -1)
        att, _ = self.attn(q, kv, kv, need_weights=False)
        fused = self.norm(q + att).reshape(b, -1)
        return torch.relu(self.out(torch.cat([hi, fused], dim=-1)))
