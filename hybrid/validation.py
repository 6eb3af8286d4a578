"""Checks of a composed config before any work starts, and the errors that reach a user as a message.

Hydra already refuses unknown group options (``subtraction=foo``) and keys (``data.nfields=3``);
what it cannot know is which values make sense. :func:`validate_config` checks the sizes and rates
that would otherwise fail deep inside a build or a training run with an unrelated message
(``data.n_fields=-3`` used to end in "No objects to concatenate"), and names the key and its value.

:data:`USER_ERRORS` are the exception types whose message is meant for the user (bad input, bad
config, a missing file): the ``hybrid`` command and ``run.py`` print them as one line, without a
traceback (set ``HYBRID_DEBUG=1`` to see it). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

#: errors whose message is for the user (the readers', datasets', catalogues' and FITS errors are
#: ValueErrors naming the file and the field; missing files are OSErrors; unknown registry names KeyErrors)
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    OSError,
    KeyError,
    HydraException,
    OmegaConfBaseException,
)


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key and the value."""


def user_message(err: BaseException) -> str:
    """One line for the user (a KeyError's message without the quotes ``str`` adds)."""
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    return f"{type(err).__name__}: {text}"


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


#: key -> (check, what the value must be)
CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "data.n_fields": (_positive_int, "a positive integer (fields to simulate)"),
    "data.fields_per_shard": (_positive_int, "a positive integer"),
    "data.workers": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0 (0 or 1: no pool)"),
    "data.stamp_size": (lambda v: _positive_int(v) and v % 2 == 1 and v >= 5, "an odd integer >= 5 (px)"),
    "data.split_fractions": (
        lambda v: (
            isinstance(v, list)
            and len(v) == 3
            and all(_number(x) and x >= 0 for x in v)
            and abs(sum(v) - 1) < 1e-6
        ),
        "three non-negative fractions (train, val, test) summing to 1",
    ),
    "sim.shape": (
        lambda v: isinstance(v, list) and len(v) == 2 and all(_positive_int(x) and x >= 64 for x in v),
        "[ny, nx], each an integer >= 64 (px)",
    ),
    "sim.epochs_per_field": (_positive_int, "a positive integer"),
    "train.batch_size": (_positive_int, "a positive integer"),
    "train.lr": (lambda v: _number(v) and v > 0, "a positive number"),
    "trainer.max_epochs": (lambda v: _positive_int(v) or v == -1, "a positive integer (or -1)"),
}


def _lookup(cfg: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def validate_config(cfg: DictConfig | Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` naming every key of :data:`CHECKS` whose value cannot work."""
    c = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    problems = []
    for key, (ok, what) in CHECKS.items():
        present, value = _lookup(c, key)
        if present and not ok(value):
            problems.append(f"{key}={value!r}: must be {what}")
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))
