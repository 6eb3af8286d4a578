"""A sampler (MC dropout or deep ensemble) and its temperature as one ``nn.Module`` with named outputs,
for export bundles and serving: raw inputs in, the predictive mean and its uncertainties out.

The outputs, in order (:data:`OUTPUTS`), per candidate:

``score``        predictive probability of real (mean over samples and views), temperature-scaled;
``p_types``      (K,) predictive type probabilities, in :data:`hybrid.taxonomy.TRANSIENT_TYPES` order;
``score_std``    standard deviation over samples of the probability of real;
``entropy``      entropy of the real-bogus predictive (nats; total uncertainty);
``mutual_info``  mutual information between the real-bogus prediction and the model (nats; BALD,
                 the epistemic part).
"""

from __future__ import annotations

import torch
from torch import nn

from hybrid.uncertainty.predictive import decompose
from hybrid.uncertainty.sampling import Sampler, sample_logits

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
