"""Hydra entry point: `python run.py [task=...] [overrides]` composes conf/ and runs the task."""

import os
import sys

import hydra
from omegaconf import DictConfig

from hybrid.tasks import run_task
from hybrid.validation import USER_ERRORS, user_message, validate_config


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> object:
    try:
        validate_config(cfg)
        return run_task(cfg)
    except USER_ERRORS as err:  # bad input or config: one line, no traceback (HYBRID_DEBUG=1 shows it)
        if os.environ.get("HYBRID_DEBUG"):
            raise
        print(f"error: {user_message(err)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
