"""Who labels the queried candidates: an oracle, or volunteers as in citizen-science vetting.

:class:`CitizenScienceLabeller` mimics a Zooniverse-style project (Supernova Hunters: Wright et al.
2017, MNRAS 472, 1315; Kilonova Seekers for GOTO: Killestein et al. 2024): each candidate is shown to
``votes`` volunteers drawn from a crowd, each volunteer has a skill (probability of the right answer on
an easy, high-S/N candidate) drawn from a Beta distribution, skill fades towards a coin flip for faint
candidates, and the label is the majority vote. Labels are drawn from a seeded generator, so a study
is reproducible.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd

from hybrid.registry import Registry


class Labeller:
    """Contract: ``label(table, rng) -> (N,) float`` real-bogus labels of the candidate rows."""

    name: ClassVar[str]

    def label(self, table: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


LABELLERS: Registry[Labeller] = Registry("labeller", "hybrid.active", contract=Labeller)


@LABELLERS.register("oracle")
class Oracle(Labeller):
    """The true label (``truth_real``)."""

    def label(self, table: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
        return table["truth_real"].to_numpy(float)


@LABELLERS.register("citizen_science")
class CitizenScienceLabeller(Labeller):
    """Majority vote of ``votes`` volunteers.

    Args:
        votes: volunteers per candidate (odd, so there are no ties).
        crowd: size of the volunteer pool (skills are drawn once per labeller).
        skill_mean, skill_concentration: Beta distribution of the volunteers' skill on easy
            candidates (mean and a + b).
        snr_half: S/N (``snr_psf``) at which the skill is halfway between a coin flip and its
            easy-candidate value.
        seed: seeds the crowd.
    """

    def __init__(
        self,
        *,
        votes: int = 5,
        crowd: int = 200,
        skill_mean: float = 0.8,
        skill_concentration: float = 10.0,
        snr_half: float = 5.0,
        seed: int = 0,
    ) -> None:
        if votes < 1 or votes % 2 == 0:
            raise ValueError(f"votes must be odd and positive, got {votes}")
        if not 0.5 <= skill_mean < 1:
            raise ValueError(f"skill_mean must be in [0.5, 1), got {skill_mean}")
        a = skill_mean * skill_concentration
        self.skill = np.random.default_rng(seed).beta(a, skill_concentration - a, crowd)
        self.votes, self.snr_half = votes, snr_half

    def accuracy(self, snr: np.ndarray, volunteers: np.ndarray) -> np.ndarray:
        """Probability that each volunteer labels a candidate of S/N ``snr`` right (broadcasts)."""
        snr = np.nan_to_num(np.abs(np.asarray(snr, float)), nan=0.0)
        ease = snr / (snr + self.snr_half)
        return 0.5 + (self.skill[volunteers] - 0.5) * ease

    def label(self, table: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
        truth = table["truth_real"].to_numpy(bool)
        snr = table["snr_psf"].to_numpy(float) if "snr_psf" in table else np.full(len(table), np.inf)
        volunteers = rng.integers(0, len(self.skill), (len(table), self.votes))
        right = rng.random((len(table), self.votes)) < self.accuracy(snr[:, None], volunteers)
        says_real = np.where(right, truth[:, None], ~truth[:, None])
        return (says_real.sum(axis=1) * 2 > self.votes).astype(float)
