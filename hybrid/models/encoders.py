"""Image and tabular encoders: ``forward(x) -> (B, out_dim)``, with ``out_dim`` an attribute.

Image encoders take normalised stamps (B, C, H, W); tabular encoders take preprocessed features
(B, F). Each is registered by name; a config in ``conf/image_encoder/`` or ``conf/tabular_encoder/``
builds it with ``_target_`` and ``_partial_`` (the input sizes come from the data).
"""

from __future__ import annotations

import timm
import torch
from torch import nn

from hybrid.registry import Registry

IMAGE_ENCODERS: Registry[nn.Module] = Registry("image encoder", "hybrid.models", contract=nn.Module)
TABULAR_ENCODERS: Registry[nn.Module] = Registry("tabular encoder", "hybrid.models", contract=nn.Module)


@IMAGE_ENCODERS.register("vgg")
class VGGEncoder(nn.Module):
    """A small VGG-style CNN, as in real-bogus work (braai: Duev et al. 2019; gotorb: Killestein et al.
    2021): blocks of two 3x3 convolutions and a pooling, here with batch normalisation and a global
    average pool so the encoder is fast on a CPU (channels-last) and indifferent to the stamp size.

    Args:
        in_chans: stamp channels.
        widths: channels of each block.
        stem_stride: stride of the first convolution (2 halves the work of every later layer).
        dropout: dropout before the output.
        out_dim: size of the embedding.
    """

    def __init__(
        self,
        in_chans: int,
        widths: tuple[int, ...] = (16, 32, 64),
        stem_stride: int = 1,
        dropout: float = 0.1,
        out_dim: int = 128,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_chans
        for i, w in enumerate(widths):
            stride = stem_stride if i == 0 else 1
            layers += [
                nn.Conv2d(c, w, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
                nn.Conv2d(w, w, 3, padding=1, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
            ]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(c * 2, out_dim), nn.ReLU(inplace=True)
        )
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        pooled = torch.cat([f.mean(dim=(-2, -1)), f.amax(dim=(-2, -1))], dim=1)  # average and max pool
        return self.head(pooled)


@IMAGE_ENCODERS.register("braai")
class BraaiEncoder(nn.Module):
    """The braai architecture (Duev et al. 2019, fig. 2): two VGG blocks (16 and 32 filters, max pool
    2 then 4, dropout 0.25) and a dense layer of 256 units with dropout 0.5, for 63x63 stamps."""

    def __init__(self, in_chans: int, stamp_size: int = 63, out_dim: int = 256) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 16, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Dropout(0.25),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(4),
            nn.Dropout(0.25),
        )
        side = stamp_size // 2 // 4
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * side * side, out_dim), nn.ReLU(inplace=True), nn.Dropout(0.5)
        )
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@IMAGE_ENCODERS.register("timm")
class TimmEncoder(nn.Module):
    """Any timm backbone by name, as a pooled feature extractor (``num_classes=0``).

    Weights are never downloaded (``pretrained`` must stay False here: the machine has no access to
    model hubs); small stamps work with convolutional backbones (resnet18, efficientnet_b0, ...).
    """

    def __init__(
        self, in_chans: int, model_name: str = "resnet18", pretrained: bool = False, **kwargs
    ) -> None:
        super().__init__()
        self.backbone = timm.create_model(
            model_name, pretrained=pretrained, in_chans=in_chans, num_classes=0, **kwargs
        )
        # the pre-logits width: num_features, or the width of a head conv after pooling (MobileNetV3)
        self.out_dim = int(getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


@TABULAR_ENCODERS.register("mlp")
class MLPEncoder(nn.Module):
    """An MLP with layer normalisation over preprocessed features."""

    def __init__(self, n_features: int, hidden: tuple[int, ...] = (128, 128), dropout: float = 0.1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = n_features
        for h in hidden:
            layers += [nn.Linear(d, h), nn.LayerNorm(h), nn.GELU(), nn.Dropout(dropout)]
            d = h
        self.net = nn.Sequential(*layers)
        self.out_dim = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@TABULAR_ENCODERS.register("ft_transformer")
class FTTransformerEncoder(nn.Module):
    """A transformer over feature tokens (FT-Transformer, Gorishniy et al. 2021, NeurIPS): each
    feature ``j`` becomes a token ``x_j W_j + b_j``; a [CLS] token's output is the embedding."""

    def __init__(
        self, n_features: int, d_token: int = 32, n_layers: int = 2, n_heads: int = 4, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_features, d_token) / d_token**0.5)
        self.bias = nn.Parameter(torch.zeros(n_features, d_token))
        self.cls = nn.Parameter(torch.randn(1, 1, d_token) / d_token**0.5)
        layer = nn.TransformerEncoderLayer(
            d_token, n_heads, dim_feedforward=2 * d_token, dropout=dropout, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_token)
        self.out_dim = d_token

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.unsqueeze(-1) * self.weight + self.bias
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1)
        return self.norm(self.blocks(tokens)[:, 0])
