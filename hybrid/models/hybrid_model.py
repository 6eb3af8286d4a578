"""HybridModel: preprocessing -> image encoder + tabular encoder -> fusion -> heads.

Takes raw inputs (stamps in ADU with NaNs, features with gaps) and returns a real-bogus logit and
transient-type logits. Either encoder may be absent; image-only and catalog-only models are
configurations of this class, not forks of it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from hybrid.models.preprocessing import DIHEDRAL, FeaturePreprocessor, StampNormalizer, dihedral

EncoderFactory = Callable[..., nn.Module]


class HybridModel(nn.Module):
    """The fused classifier.

    Args:
        in_chans: stamp channels (0 for a catalog-only model).
        n_features: catalog features (0 for an image-only model).
        n_types: transient types (softmax head).
        image_encoder: factory ``f(in_chans=...) -> encoder``, or None.
        tabular_encoder: factory ``f(n_features=...) -> encoder``, or None.
        fusion: factory ``f(image_dim=..., tabular_dim=...) -> fusion``.
        stamps: the stamp normaliser (normalisation mode, crop).
        feature_names: names of the catalog features, in input order.
        head_dropout: dropout before the heads.
    """

    def __init__(
        self,
        *,
        in_chans: int,
        n_features: int,
        n_types: int,
        image_encoder: EncoderFactory | None,
        tabular_encoder: EncoderFactory | None,
        fusion: EncoderFactory,
        stamps: StampNormalizer | None = None,
        feature_names: list[str] | None = None,
        head_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        use_image = image_encoder is not None and in_chans > 0
        use_tab = tabular_encoder is not None and n_features > 0
        self.stamps = stamps if stamps is not None else StampNormalizer()
        self.features = FeaturePreprocessor(n_features, feature_names) if use_tab else None
        self.image_encoder = image_encoder(in_chans=in_chans) if use_image else None
        self.tabular_encoder = tabular_encoder(n_features=self.features.out_dim) if use_tab else None
        self.fusion = fusion(
            image_dim=self.image_encoder.out_dim if use_image else None,
            tabular_dim=self.tabular_encoder.out_dim if use_tab else None,
        )
        d = self.fusion.out_dim
        self.dropout = nn.Dropout(head_dropout)
        self.real_bogus_head = nn.Linear(d, 1)
        self.type_head = nn.Linear(d, n_types)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m, e in (("image", self.image_encoder), ("tabular", self.tabular_encoder)) if e)

    def embed(
        self, image: torch.Tensor | None, features: torch.Tensor | None, *, stamps_normalized: bool = False
    ) -> torch.Tensor:
        hi = None
        if self.image_encoder is not None:
            hi = self.image_encoder(image if stamps_normalized else self.stamps(image))
        ht = self.tabular_encoder(self.features(features)) if self.tabular_encoder is not None else None
        return self.fusion(hi, ht)

    def forward(
        self, image: torch.Tensor | None, features: torch.Tensor | None, *, stamps_normalized: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Real-bogus logits (B,) and type logits (B, n_types).

        ``stamps_normalized`` says that ``image`` already went through ``self.stamps`` (training
        normalises each stamp once, since flips and rotations commute with the normalisation).
        """
        h = self.dropout(self.embed(image, features, stamps_normalized=stamps_normalized))
        return self.real_bogus_head(h).squeeze(-1), self.type_head(h)

    @torch.no_grad()
    def predict(
        self,
        image: torch.Tensor | None,
        features: torch.Tensor | None,
        *,
        rotation_average: bool = False,
        stamps_normalized: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Real-bogus probability (B,) and type probabilities (B, n_types).

        With ``rotation_average`` the probabilities are averaged over the 8 flips and rotations of
        the stamps (test-time augmentation; the physics has no preferred orientation).
        """
        views = DIHEDRAL if rotation_average and image is not None else [(0, False)]
        rb, ty = 0.0, 0.0
        for k, flip in views:
            img = dihedral(image, k, flip) if image is not None else None
            r, t = self(img, features, stamps_normalized=stamps_normalized)
            rb = rb + torch.sigmoid(r)
            ty = ty + torch.softmax(t, dim=-1)
        return rb / len(views), ty / len(views)
