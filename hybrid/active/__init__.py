"""Active learning: acquisition functions (entropy, BALD, margin, random), labellers (an oracle, or
citizen-science vetting by majority vote of noisy volunteers) and the pool-based simulation loop."""

from hybrid.active.acquisition import ACQUISITIONS, Acquisition, select
from hybrid.active.labeller import LABELLERS, CitizenScienceLabeller, Labeller, Oracle
from hybrid.active.loop import PoolSettings, run_pool

__all__ = [
    "ACQUISITIONS",
    "LABELLERS",
    "Acquisition",
    "CitizenScienceLabeller",
    "Labeller",
    "Oracle",
    "PoolSettings",
    "run_pool",
    "select",
]
