"""A sampler (MC dropout or deep ensemble) and its temperature as one ``nn.Module`` with named outputs,
for export bundles and serving: raw inputs in, the predictive mean and its uncertainties out.

The outputs, in order (:data:`OUTPUTS`), per candidate:

``score``        predictive probability of real (mean over samples and views), temperature-scaled;
``p_types``      (K,) predictive type probabilities, in :data:`hybrid.taxonomy.TRANSIENT_TYPES` order;
``score_std``    standard deviation over samples of the probability of real;
``entropy``      entropy of the real-bogus predictive (nats; total uncertainty);
``mutual_info``  mutual information between the real-bogus prediction and the model (nats; BALD,
                 the epistemic part).

``hybrid export RUN_DIR --mc-dropout S`` or ``--ensemble RUN_DIR...`` writes a bundle of
:func:`uncertainty_model`; ``hybrid predict`` then reports these outputs as columns. The MC-dropout
masks are frozen, so the exported graph is deterministic and passes the bundle's golden check.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hybrid.models import HybridModel
from hybrid.uncertainty.predictive import decompose
from hybrid.uncertainty.sampling import Ensemble, MCDropout, Sampler, sample_logits

OUTPUTS = ("score", "p_types", "score_std", "entropy", "mutual_info")


class UncertaintyModel(nn.Module):
    """Raw stamps (ADU, NaN allowed) and features -> the :data:`OUTPUTS` tensors.

    Args:
        sampler: an :class:`~hybrid.uncertainty.sampling.MCDropout` or
            :class:`~hybrid.uncertainty.sampling.Ensemble`.
        temperature: divides every logit (:func:`hybrid.uncertainty.calibration.fit_temperature`).
        type_temperature: the same for the type logits.
        rotation_average: average each sample over the 8 flips and rotations of the stamps.
    """

    output_names = OUTPUTS

    def __init__(
        self,
        sampler: Sampler,
        *,
        temperature: float = 1.0,
        type_temperature: float = 1.0,
        rotation_average: bool = False,
    ) -> None:
        super().__init__()
        self.sampler = sampler.eval()
        self.temperature, self.type_temperature = float(temperature), float(type_temperature)
        self.rotation_average = rotation_average

    @property
    def n_samples(self) -> int:
        return self.sampler.n_samples

    def forward(
        self, image: torch.Tensor | None, features: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        rb, ty = sample_logits(self.sampler, image, features, rotation_average=self.rotation_average)
        p_real = torch.sigmoid(rb / self.temperature).mean(dim=1)  # (S, B)
        d = decompose(torch.stack([1.0 - p_real, p_real], dim=-1))
        p_types = torch.softmax(ty / self.type_temperature, dim=-1).mean(dim=1).mean(dim=0)
        return d["mean"][:, 1], p_types, d["std"][:, 1], d["entropy"], d["mutual_info"]


def uncertainty_model(
    model: HybridModel,
    *,
    members: Sequence[HybridModel] = (),
    mc_samples: int = 0,
    seed: int = 0,
    temperature: float = 1.0,
    rotation_average: bool = False,
) -> UncertaintyModel:
    """The serving module of a deep ensemble (``model`` and ``members``) or of MC dropout of ``model``
    (``mc_samples`` frozen masks, seeded by ``seed``).

    Raises:
        ValueError: for both or neither, or for members whose inputs differ from ``model``'s.
    """
    if bool(members) == bool(mc_samples):
        raise ValueError("give either ensemble members or a number of MC-dropout samples (not both)")
    for m in members:
        own = model.features.names if model.features is not None else []
        theirs = m.features.names if m.features is not None else []
        if own != theirs or m.modalities != model.modalities:
            raise ValueError(
                f"ensemble members must share inputs: {model.modalities} {own} vs {m.modalities} {theirs}"
            )
    sampler = Ensemble([model, *members]) if members else MCDropout(model, mc_samples, seed=seed)
    return UncertaintyModel(sampler, temperature=temperature, rotation_average=rotation_average)
