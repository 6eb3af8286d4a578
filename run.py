"""Hydra entry point: `python run.py [task=...] [overrides]` composes conf/ and runs the task."""

import hydra
from omegaconf import DictConfig

from hybrid.tasks import run_task


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> object:
    return run_task(cfg)


if __name__ == "__main__":
    main()
