"""The LightningModule: joint real-bogus + type training of a HybridModel."""

from __future__ import annotations

import lightning as L
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from hybrid.evaluation.metrics import rate_at
from hybrid.models import HybridModel
from hybrid.models.preprocessing import random_dihedral
from hybrid.noise.losses import BCELoss


class HybridModule(L.LightningModule):
    """Trains ``model`` with ``rb_weight * L_rb(real-bogus) + type_weight * CE(type)``.

    ``L_rb`` is BCE with ``pos_weight`` unless ``rb_loss`` names another (the ``loss`` config group,
    :mod:`hybrid.noise.losses`: noise-robust losses).

    Batches carry stamps already normalised by ``model.stamps`` (see
    :meth:`~hybrid.training.data.SplitTensors.normalize_stamps`).

    Args:
        model: the HybridModel.
        pos_weight: weight of real samples in the BCE (class weighting; 1 for none).
        rb_loss: per-sample real-bogus loss ``(logits, target, pos_weight) -> (N,)``; None for BCE.
        type_weights: per-type weights of the cross-entropy (None for none).
        rb_weight, type_weight: weights of the two heads' losses.
        lr, weight_decay: AdamW; the learning rate follows a cosine schedule over ``max_epochs``.
        augment: random flips and 90-degree rotations of the stamps.
        channels_last: channels-last memory format (faster convolutions on CPUs).
        seed: reseeds torch at every epoch start, so a run resumed at an epoch boundary draws the
            same dropout masks and augmentations as an uninterrupted one.
    """

    def __init__(
        self,
        model: HybridModel,
        *,
        pos_weight: float = 1.0,
        type_weights: torch.Tensor | None = None,
        rb_weight: float = 1.0,
        type_weight: float = 0.5,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        augment: bool = True,
        channels_last: bool = True,
        seed: int = 0,
        rb_loss: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.rb_loss = rb_loss if rb_loss is not None else BCELoss()
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)))
        self.register_buffer(
            "type_weights",
            type_weights if type_weights is not None else torch.ones(model.type_head.out_features),
        )
        self.rb_weight, self.type_weight = rb_weight, type_weight
        self.lr, self.weight_decay = lr, weight_decay
        self.augment, self.channels_last, self.seed = augment, channels_last, seed
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _inputs(
        self, batch: dict[str, torch.Tensor], train: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        image = batch["image"] if self.model.image_encoder is not None else None
        if image is not None:
            if train and self.augment:
                image = random_dihedral(image)
            if self.channels_last:
                image = image.contiguous(memory_format=torch.channels_last)
        features = batch["features"] if self.model.tabular_encoder is not None else None
        return image, features

    def loss(self, batch: dict[str, torch.Tensor], train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        rb, ty = self.model(*self._inputs(batch, train), stamps_normalized=True)
        l_rb = self.rb_loss(rb, batch["label_real"], self.pos_weight).mean()
        l_ty = nn.functional.cross_entropy(ty, batch["label_type"], weight=self.type_weights)
        return self.rb_weight * l_rb + self.type_weight * l_ty, rb

    def on_train_epoch_start(self) -> None:
        torch.manual_seed(self.seed * 100_003 + self.current_epoch)
        dm = self.trainer.datamodule
        if dm is not None:
            dm.train_batches.set_epoch(self.current_epoch)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = self.loss(batch, train=True)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["index"]))
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, rb = self.loss(batch, train=False)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch["index"]))
        self._val.append((torch.sigmoid(rb).detach(), batch["label_real"]))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        p = torch.cat([v[0] for v in self._val]).float().cpu().numpy()
        y = torch.cat([v[1] for v in self._val]).cpu().numpy()
        self._val.clear()
        if 0 < y.sum() < len(y):
            self.log("val/auc", float(roc_auc_score(y, p)), prog_bar=True)
            self.log("val/fnr_at_1pct_fpr", rate_at(y, p, fpr=0.01))

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        epochs = max(int(self.trainer.max_epochs or 1), 1)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
