"""Sherlock-style context classes from configurable rules (Smith et al. 2020, PASP 132, 085002).

Sherlock names a transient's context from what it is matched to: a variable star (VS), a
cataclysmic variable (CV), an AGN, a nuclear transient (NT), a supernova-like transient offset from a
galaxy (SN), an orphan with nothing catalogued nearby (ORPHAN), or a detection caused by a bright star
(BS). Here the rules are data (``conf/context/*.yaml``): the first rule whose conditions all hold
names the class; a rule with no conditions is the default. A condition is ``"<column> <op> <value>"``
on the context features, with op one of ``< <= > >= == !=`` and value a number, true/false or a
word, or op ``~`` and a regular expression matched at the start of a text column (e.g. the VSX types
of cataclysmic variables: ``"ctx_nearest_star_class ~ (UG|NL|CV|AM|N)"``); comparisons with NaN are
false, so "ctx_nearest_star_dist < 1.5" fails without a star.

Example::

    rules:
      - {name: variable_star, when: ["ctx_nearest_star_dist < 1.5"]}
      - {name: orphan}
"""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

_OPS = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
    "~": None,  # regular expression, matched at the start of the text
}


@dataclass(frozen=True)
class Condition:
    column: str
    op: str
    value: Any

    @classmethod
    def parse(cls, text: str) -> Condition:
        parts = str(text).split()
        if len(parts) != 3 or parts[1] not in _OPS:
            raise ValueError(
                f"context rule condition {text!r}: expected '<column> <op> <value>' with op in {list(_OPS)}"
            )
        column, op, raw = parts
        value: Any
        if op == "~":
            try:
                re.compile(raw)
            except re.error as err:
                raise ValueError(f"context rule condition {text!r}: bad regular expression ({err})") from err
            return cls(column, op, raw)
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            try:
                value = float(raw)
            except ValueError:
                value = raw.strip("'\"")
        return cls(column, op, value)

    def evaluate(self, table: pd.DataFrame) -> np.ndarray:
        if self.column not in table.columns:
            raise KeyError(f"context rule condition on unknown column {self.column!r}")
        col = table[self.column]
        if self.op == "~":
            return col.astype("string").str.match(self.value).fillna(False).to_numpy(bool)
        if isinstance(self.value, str):
            values = col.astype(str).to_numpy()
        else:
            values = col.to_numpy(dtype=float, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            return np.asarray(_OPS[self.op](values, self.value), bool)


@dataclass(frozen=True)
class Rule:
    name: str
    when: tuple[Condition, ...] = ()

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | Rule) -> Rule:
        if isinstance(cfg, Rule):
            return cfg
        unknown = sorted(set(cfg) - {"name", "when"})
        if unknown or "name" not in cfg:
            raise ValueError(f"context rule {dict(cfg)!r}: needs 'name' and optional 'when' (a list)")
        return cls(str(cfg["name"]), tuple(Condition.parse(c) for c in cfg.get("when") or ()))


def classify(table: pd.DataFrame, rules: Sequence[Rule], default: str = "unclassified") -> np.ndarray:
    """The name of the first rule whose conditions all hold, per row (``default`` when none does)."""
    out = np.full(len(table), default, dtype=object)
    undecided = np.ones(len(table), bool)
    for rule in rules:
        hit = undecided.copy()
        for cond in rule.when:
            hit &= cond.evaluate(table)
        out[hit] = rule.name
        undecided &= ~hit
    return out
