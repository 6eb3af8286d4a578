"""How a Hydra job names itself in W&B: group = its sweep, tags and name = what was overridden."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig


def _relative(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def wandb_labels(wandb_cfg: DictConfig) -> tuple[str | None, list[str], str | None]:
    """``(group, tags, name)`` of this job's W&B run.

    Values set in the ``logger.wandb`` config win. Otherwise, in a multirun, the group is the sweep
    directory (``multirun/studies/ablation_modalities``: one group per sweep, the same name as the
    local directory that ``hybrid compare`` reads), the tags are the experiment and the job's
    overrides (``modality=fused``, ``seed=1``), and the name is the overrides joined.
    """
    group, tags, name = wandb_cfg.group, list(wandb_cfg.tags), wandb_cfg.name
    if not HydraConfig.initialized():
        return group, tags, name
    hc = HydraConfig.get()
    overrides = [o for o in hc.overrides.task if not o.startswith("hydra")]
    experiment = hc.runtime.choices.get("experiment")
    tags = [*tags, *([f"experiment={experiment}"] if experiment else []), *overrides]
    if hc.mode == RunMode.MULTIRUN:
        group = group or _relative(hc.sweep.dir)
        name = name or (",".join(overrides) or None)
    return group, list(dict.fromkeys(t[:64] for t in tags)), name
