"""Learned adaptation of a trained HybridModel to another survey.

* AdaBN (Li et al. 2016, "Revisiting batch normalization for practical domain adaptation",
  arXiv:1603.04779): the BatchNorm statistics of every layer are re-estimated on unlabelled target
  data, and so are the feature scaler's statistics -- per-survey normalisation layers with shared
  weights. Encoders with BatchNorm: ``vgg`` and timm CNNs (``resnet18``); ``braai`` and the tabular
  encoders (LayerNorm) have none, so for them only the feature statistics change.
* DANN (Ganin & Lempitsky 2015, ICML; Ganin et al. 2016, JMLR 17, 59): a survey head on the fused
  embedding, trained through a gradient-reversal layer so that the encoders learn features the head
  cannot tell apart between surveys, from labelled source and unlabelled target candidates.
* Fine-tuning on N labelled target candidates (all weights, BatchNorm statistics frozen).

Test-time adapters honour one contract, ``adapter(model, target) -> adapted copy`` where ``target``
is the target's (normalised) training split; they are registered in :data:`TEST_TIME_ADAPTERS`.
"""

from __future__ import annotations

import copy
import math
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from hybrid.models import HybridModel
from hybrid.registry import Registry
from hybrid.training.data import SplitTensors
from hybrid.training.module import HybridModule


@runtime_checkable
class TestTimeAdapter(Protocol):
    """Contract: the source model adapted to a target's unlabelled training split (a copy, or the
    model itself when nothing changes)."""

    def __call__(self, model: HybridModel, target: SplitTensors) -> HybridModel: ...


TEST_TIME_ADAPTERS: Registry = Registry("test-time adapter", "hybrid.adapters", contract=TestTimeAdapter)


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


def reverse_gradient(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by ``-scale`` in the backward pass
    (the gradient-reversal layer of Ganin & Lempitsky 2015)."""
    return _ReverseGradient.apply(x, float(scale))


class GradientReversal(nn.Module):
    """:func:`reverse_gradient` as a module; ``scale`` (lambda) may change during training."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reverse_gradient(x, self.scale)


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """Ganin et al. (2016, eq. 14) schedule of the reversal scale: ``2 / (1 + exp(-gamma p)) - 1`` for
    training progress ``p`` in [0, 1], so the survey head's noisy early gradients are damped."""
    return 2.0 / (1.0 + math.exp(-gamma * min(max(progress, 0.0), 1.0))) - 1.0


def _model_inputs(
    model: HybridModel, split: SplitTensors, index: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    b = split.batch(index)
    image = None
    if model.image_encoder is not None:
        image = b["image"].to(device).contiguous(memory_format=torch.channels_last)
    features = b["features"].to(device) if model.tabular_encoder is not None else None
    return image, features


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def adapt_batchnorm(
    model: HybridModel, target: SplitTensors, *, features: bool = True, batch_size: int = 512
) -> HybridModel:
    """AdaBN: a copy of ``model`` whose normalisation statistics are the target survey's.

    Every BatchNorm layer's running mean and variance are replaced by the cumulative average
    (``momentum=None``) of their batch statistics over all the target's candidates; with
    ``features``, the feature scaler (clip range, median, robust scale) is refitted on the target's
    features. No labels are used. ``target`` holds stamps normalised by ``model.stamps``.
    """
    out = copy.deepcopy(model)
    out.eval()
    if features and out.features is not None:
        out.features.fit(target.features.numpy())
    layers = batchnorm_layers(out)
    if not layers or out.image_encoder is None:
        return out
    saved = [bn.momentum for bn in layers]
    for bn in layers:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    device = next(out.parameters()).device
    for i in range(0, len(target), batch_size):
        index = torch.arange(i, min(i + batch_size, len(target)))
        out.embed(*_model_inputs(out, target, index, device), stamps_normalized=True)
    for bn, m in zip(layers, saved, strict=True):
        bn.momentum = m
    return out.eval()


def stratified_sample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` row indices drawn without replacement in proportion to the classes, with at least one row
    of each class when ``n >= 2`` (a labelling campaign would not return a single class)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    if n >= len(labels):
        return np.arange(len(labels))
    classes = np.unique(labels)
    picks = []
    for c in classes:
        rows = np.flatnonzero(labels == c)
        k = round(n * len(rows) / len(labels))
        k = min(len(rows), max(k, 1 if n >= len(classes) else 0))
        picks.append(rng.choice(rows, k, replace=False))
    chosen = np.concatenate(picks)
    if len(chosen) > n:  # rounding: drop from the largest class
        chosen = rng.permutation(chosen)[:n]
    return np.sort(chosen)


def finetune(
    module: HybridModule,
    target: SplitTensors,
    n: int,
    *,
    model: HybridModel | None = None,
    seed: int = 0,
    epochs: int = 20,
    min_steps: int = 30,
    lr: float = 3e-4,
    batch_size: int = 64,
) -> HybridModel:
    """A copy of ``model`` (default ``module.model``) fine-tuned on ``n`` labelled target candidates.

    The candidates are a stratified sample of the target's training split (:func:`stratified_sample`
    on the real-bogus label). All weights are trained with AdamW for ``max(min_steps, epochs *
    batches)`` steps with ``module``'s own loss (class weights, augmentation), and the BatchNorm
    layers stay in evaluation mode: a few dozen examples cannot estimate their statistics.
    """
    tuned = copy.deepcopy(module.model if model is None else model)
    rows = stratified_sample(target.label_real.numpy(), n, seed)
    data = target.subset(rows)
    device = next(tuned.parameters()).device
    opt = torch.optim.AdamW(tuned.parameters(), lr=lr, weight_decay=module.weight_decay)
    g = torch.Generator().manual_seed(seed)
    bs = min(batch_size, len(data))
    steps = max(min_steps, epochs * math.ceil(len(data) / bs))
    original, was_training = module.model, module.training
    module.model = tuned  # the module's loss, on the copy
    try:
        module.train()
        for bn in batchnorm_layers(tuned):
            bn.eval()
        torch.manual_seed(seed)
        for _ in range(steps):
            index = torch.randperm(len(data), generator=g)[:bs]
            batch = {k: v.to(device) for k, v in data.batch(index).items()}
            loss, _ = module.loss(batch, train=True)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        module.model = original
        module.train(was_training)
    return tuned.eval()


class DomainAdversarialModule(HybridModule):
    """HybridModule with a domain-adversarial survey head (DANN).

    Each training step adds ``dann_weight * CE(survey head(GRL(h)), survey)`` over the source batch and
    an equal-sized batch of unlabelled target candidates, where ``h`` is the fused embedding and the
    gradient reversal's scale follows :func:`dann_lambda`. Source and target go through the encoders
    as separate batches, so BatchNorm sees each survey's own statistics (as in AdaBN). The real-bogus
    and type losses are the parent's, whatever loss that is.

    Args:
        model: the HybridModel.
        targets: one normalised training split per target survey (labels unused).
        source_domain: survey index (0 .. n_sources - 1) of each row of the source training split.
        n_sources: surveys in the source data; target ``k`` is survey ``n_sources + k``.
        dann_weight: weight of the survey loss.
        hidden: width of the survey head's hidden layer.
        gamma: steepness of the reversal-scale schedule.
        **kwargs: the HybridModule arguments.
    """

    def __init__(
        self,
        model: HybridModel,
        *,
        targets: list[SplitTensors],
        source_domain: torch.Tensor,
        n_sources: int = 1,
        dann_weight: float = 1.0,
        hidden: int = 64,
        gamma: float = 10.0,
        **kwargs,
    ) -> None:
        super().__init__(model, **kwargs)
        if not targets:
            raise ValueError("DomainAdversarialModule needs at least one target split")
        self.targets = targets
        self.register_buffer("source_domain", torch.as_tensor(source_domain, dtype=torch.long))
        self.n_sources, self.dann_weight, self.gamma = n_sources, dann_weight, gamma
        self.reversal = GradientReversal(0.0)
        d = model.fusion.out_dim
        self.survey_head = nn.Sequential(
            nn.Linear(d, hidden), nn.ReLU(), nn.Dropout(0.1), nn.Linear(hidden, n_sources + len(targets))
        )

    def _target_batch(self, size: int, batch_idx: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.current_epoch * 10_007 + batch_idx)
        k = int(torch.randint(len(self.targets), (1,), generator=g))
        split = self.targets[k]
        index = torch.randint(len(split), (size,), generator=g)
        b = split.batch(index)
        batch = {"image": b["image"].to(self.device), "features": b["features"].to(self.device)}
        return batch, torch.full((size,), self.n_sources + k, device=self.device, dtype=torch.long)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        captured: dict[str, torch.Tensor] = {}
        hook = self.model.fusion.register_forward_hook(lambda m, i, o: captured.__setitem__("h", o))
        try:
            loss, _ = self.loss(batch, train=True)
        finally:
            hook.remove()
        n = len(batch["index"])
        target, target_domain = self._target_batch(n, batch_idx)
        h_target = self.model.embed(*self._inputs(target, train=True), stamps_normalized=True)
        batches = max(int(self.trainer.num_training_batches), 1) if self._trainer is not None else 1
        epochs = max(int(self.trainer.max_epochs or 1), 1) if self._trainer is not None else 1
        self.reversal.scale = dann_lambda((self.current_epoch + batch_idx / batches) / epochs, self.gamma)
        logits = self.survey_head(self.reversal(torch.cat([captured["h"], h_target])))
        domain = torch.cat([self.source_domain[batch["index"].to(self.source_domain.device)], target_domain])
        domain_loss = nn.functional.cross_entropy(logits, domain)
        total = loss + self.dann_weight * domain_loss
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        # epoch means: the survey head's accuracy should fall towards chance as the features align
        accuracy = (logits.argmax(-1) == domain).float().mean()
        self.log("train/domain_loss", domain_loss, on_step=False, on_epoch=True, batch_size=2 * n)
        self.log("train/domain_accuracy", accuracy, on_step=False, on_epoch=True, batch_size=2 * n)
        return total


@TEST_TIME_ADAPTERS.register("none")
class NoAdaptation:
    """The source model as it is."""

    def __call__(self, model: HybridModel, target: SplitTensors) -> HybridModel:
        return model


@TEST_TIME_ADAPTERS.register("adabn")
class AdaBN:
    """:func:`adapt_batchnorm` (BatchNorm and, with ``features``, feature-scaler statistics)."""

    def __init__(self, features: bool = True) -> None:
        self.features = features

    def __call__(self, model: HybridModel, target: SplitTensors) -> HybridModel:
        return adapt_batchnorm(model, target, features=self.features)
