"""`hybrid bench train`: training and inference speed of the default model against a braai baseline.

Both models are trained in the same run on the same candidates (a sub-sample of the default
dataset's training split) for the same number of epochs, and scored on the same validation split:

* the default model: the configured HybridModel, stamps normalised once, channels-last memory;
* the baseline: the braai architecture (Duev et al. 2019) on the full 63x63 stamps, per-stamp L2
  normalisation on every batch, plain eager PyTorch in NCHW layout, image only.

Throughput is samples per second of optimisation steps (forward, backward, AdamW step) and of
inference, measured after a warm-up on batches of the configured size, in interleaved rounds (the
median is reported) so that both models see the same load on the machine.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from omegaconf import DictConfig
from sklearn.metrics import roc_auc_score
from torch import nn

from hybrid.data.build import build_dataset
from hybrid.evaluation.metrics import rate_at
from hybrid.models import HybridModel, StampNormalizer
from hybrid.models.encoders import BraaiEncoder
from hybrid.models.fusion import ConcatFusion
from hybrid.models.preprocessing import random_dihedral
from hybrid.taxonomy import TRANSIENT_TYPES
from hybrid.training.train import build_model, make_datamodule

EPOCHS = 3
ROUNDS = 5


@dataclass
class Contender:
    """A model, how its stamps are fed, and the data it sees."""

    model: HybridModel
    normalized: bool  # stamps are pre-normalised
    channels_last: bool
    train_image: torch.Tensor
    val_image: torch.Tensor

    def _layout(self, image: torch.Tensor) -> torch.Tensor:
        return image.contiguous(memory_format=torch.channels_last) if self.channels_last else image

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(self._layout(image), features, stamps_normalized=self.normalized)


def braai_baseline(in_chans: int, stamp_size: int) -> HybridModel:
    return HybridModel(
        in_chans=in_chans,
        n_features=0,
        n_types=len(TRANSIENT_TYPES),
        image_encoder=partial(BraaiEncoder, stamp_size=stamp_size),
        tabular_encoder=None,
        fusion=partial(ConcatFusion, dim=256),
        stamps=StampNormalizer("l2"),
    )


def throughput(c: Contender, features: torch.Tensor, batch: int, steps: int) -> tuple[float, float]:
    """Training and inference samples per second on one repeated batch."""
    image = c.train_image[:batch]
    features = features[:batch]
    opt = torch.optim.AdamW(c.model.parameters(), 1e-3)
    c.model.train()
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        rb, ty = c.forward(image, features)
        opt.zero_grad()
        (rb.mean() + ty.mean()).backward()
        opt.step()
    train = batch * steps / (time.perf_counter() - t0)
    c.model.eval()
    with torch.no_grad():
        c.forward(image, features)
        t0 = time.perf_counter()
        for _ in range(steps):
            c.forward(image, features)
    return train, batch * steps / (time.perf_counter() - t0)


def fit_and_score(c: Contender, train: dict, val: dict, batch: int) -> dict:
    """Train ``EPOCHS`` epochs (BCE + type CE, flips and rotations), score the validation split."""
    torch.manual_seed(0)
    opt = torch.optim.AdamW(c.model.parameters(), 2e-3, weight_decay=1e-4)
    y = train["label_real"]
    pos_weight = (len(y) - y.sum()) / y.sum().clamp_min(1)
    t0 = time.perf_counter()
    for _ in range(EPOCHS):
        c.model.train()
        for idx in torch.randperm(len(y)).split(batch):
            rb, ty = c.forward(random_dihedral(c.train_image[idx]), train["features"][idx])
            loss = nn.functional.binary_cross_entropy_with_logits(rb, y[idx], pos_weight=pos_weight)
            loss = loss + 0.5 * nn.functional.cross_entropy(ty, train["label_type"][idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - t0
    c.model.eval()
    with torch.no_grad():
        chunks = zip(c.val_image.split(1024), val["features"].split(1024), strict=True)
        score = torch.cat([torch.sigmoid(c.forward(i, f)[0]) for i, f in chunks]).numpy()
    truth = val["label_real"].numpy()
    return {
        "train_seconds": seconds,
        "val_auc": float(roc_auc_score(truth, score)),
        "val_fnr_at_1pct_fpr": rate_at(truth, score, fpr=0.01),
    }


def run(cfg: DictConfig, *, out_dir: str | Path = "reports", fields: int | None = None) -> Path:
    """Write ``bench_train.md`` and ``bench_train.json`` to ``out_dir``.

    ``fields`` sets the training candidates of the accuracy comparison to ``1000 * fields``
    (default 8000).
    """
    dm = make_datamodule(cfg, build_dataset(cfg))
    tr, va = dm.splits["train"], dm.splits["val"]
    sub = torch.randperm(len(tr), generator=torch.Generator().manual_seed(0))[: 1000 * (fields or 8)]
    train = {"features": tr.features[sub], "label_real": tr.label_real[sub], "label_type": tr.label_type[sub]}
    val = {"features": va.features, "label_real": va.label_real}
    batch = int(cfg.train.batch_size)
    size = tr.image.shape[-1]

    with torch.no_grad():
        default = build_model(cfg, dm)
        norm = default.stamps
        contenders = {
            "default": Contender(
                default.to(memory_format=torch.channels_last), True, True, norm(tr.image[sub]), norm(va.image)
            ),
            "braai_baseline": Contender(
                braai_baseline(dm.in_chans, size), False, False, tr.image[sub], va.image
            ),
        }
    # speed: interleaved rounds, so both contenders meet the same machine load; median of the rounds
    speeds: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    for _ in range(ROUNDS):
        for name, c in contenders.items():
            speeds[name].append(throughput(c, train["features"], batch, steps=12 if name == "default" else 4))
    results = {}
    for name, c in contenders.items():
        fresh = build_model(cfg, dm) if name == "default" else braai_baseline(dm.in_chans, size)
        c.model = fresh.to(memory_format=torch.channels_last) if c.channels_last else fresh
        results[name] = {
            "modalities": "+".join(fresh.modalities),
            "parameters": sum(p.numel() for p in fresh.parameters()),
            "train_samples_per_s": statistics.median(s[0] for s in speeds[name]),
            "infer_samples_per_s": statistics.median(s[1] for s in speeds[name]),
            **fit_and_score(c, train, val, batch),
        }
    d, b = results["default"], results["braai_baseline"]
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "batch_size": batch,
        "accuracy_protocol": {"train_samples": len(sub), "epochs": EPOCHS, "val_samples": len(va)},
        **results,
        "train_speedup": d["train_samples_per_s"] / b["train_samples_per_s"],
        "infer_speedup": d["infer_samples_per_s"] / b["infer_samples_per_s"],
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_train.json").write_text(json.dumps(result, indent=2))
    m = result["machine"]
    lines = [
        "# Training benchmark",
        "",
        f"Written by `hybrid bench train`: {m['cpus']} CPUs ({m['threads']} torch threads), "
        f"torch {m['torch']}, batch {batch}. Accuracy: both models trained {EPOCHS} epochs on the same "
        f"{len(sub)} training candidates and scored on the {len(va)} validation candidates (by object).",
        "",
        "| model | inputs | parameters | train samples/s | inference samples/s | val AUC "
        "| val FNR at 1% FPR |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r in (
        ("default: hybrid, channels-last, stamps normalised once", d),
        ("baseline: braai, eager NCHW", b),
    ):
        lines.append(
            f"| {label} | {r['modalities']} | {r['parameters']:,} | {r['train_samples_per_s']:.0f} | "
            f"{r['infer_samples_per_s']:.0f} | {r['val_auc']:.4f} | {r['val_fnr_at_1pct_fpr']:.3f} |"
        )
    lines += [
        "",
        f"Speed-up of the default model over the baseline: {result['train_speedup']:.1f}x in training, "
        f"{result['infer_speedup']:.1f}x in inference.",
    ]
    md = out / "bench_train.md"
    md.write_text("\n".join(lines) + "\n")
    return md
