"""Config composition: where conf/ is, composing it with Hydra overrides, its group options.

The one owner of "which config does this run use": the CLI, ``run.py`` (through Hydra's own
``@hydra.main``), studies, benchmarks and tests all compose through :func:`load_config`. Also
registers the OmegaConf resolvers that conf/ uses (when :mod:`hybrid` is imported).

Not for: running anything with the config (see :mod:`hybrid.tasks`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["CONF_DIR", "REPO_ROOT", "conf_dir", "group_options", "load_config"]

#: The source checkout's root (``run.py``, ``conf/``, ``experiments/``, ``reports/``), when
#: :mod:`hybrid` is imported from one.
REPO_ROOT = Path(__file__).resolve().parent.parent


def conf_dir() -> Path:
    """The config directory: ``conf/`` of the source checkout, else the copy shipped inside the
    installed package (``hybrid/conf``, see ``pyproject.toml``)."""
    for candidate in (REPO_ROOT / "conf", Path(__file__).resolve().parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"{REPO_ROOT / 'conf'}: config directory not found (neither in a source checkout nor shipped "
        "with the installed package)"
    )


#: The config directory (see :func:`conf_dir`).
CONF_DIR = conf_dir()


def load_config(overrides: list[str] | tuple[str, ...] = (), *, conf: Path | None = None) -> DictConfig:
    """``conf/config.yaml`` composed with Hydra ``overrides``, as ``python run.py OVERRIDES`` does.

    Args:
        overrides: Hydra overrides, e.g. ``["survey=rubin", "data.n_fields=10"]``.
        conf: another config directory with the same layout (e.g. a snapshot of conf/ taken when a
            study started, so that edits to conf/ while it runs do not change its runs).
    """
    from hydra import compose, initialize_config_dir  # Hydra's global state: only while composing

    with initialize_config_dir(config_dir=str((conf or CONF_DIR).resolve()), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def group_options(group: str, *, conf: Path | None = None) -> list[str]:
    """The options of a config group, e.g. ``group_options("survey") == ["goto", "rubin", "ztf"]``."""
    path = (conf or CONF_DIR) / group
    if not path.is_dir():
        raise KeyError(f"{path}: no config group {group!r}")
    return sorted(p.stem for p in path.glob("*.yaml"))


def first_set(*values: Any) -> Any:
    """The first value that is not null, e.g. ``${first_set:${preprocess.stamps.crop},${data.stamp_size}}``
    (the stamp size an image encoder sees: the crop when there is one, else the full stamp)."""
    return next((v for v in values if v is not None), None)


OmegaConf.register_new_resolver("first_set", first_set, replace=True)
