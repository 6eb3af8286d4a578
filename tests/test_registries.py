"""Every registry states its contract, and every registered entry of every registry honours it.

Registries are found in the source (every module-level ``Registry(...)`` of hybrid/), so a new registry
is checked without being listed here.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import hybrid
from hybrid.registry import Registry

PACKAGE = Path(hybrid.__file__).resolve().parent


def all_registries() -> dict[str, Registry]:
    """``module.NAME`` -> the registry, for every module-level registry of hybrid/."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        names = re.findall(r"^([A-Z_]+)\s*(?::[^=]*)?=\s*Registry\(", path.read_text(), re.M)
        if not names:
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
        out.update({f"{module.__name__}.{n}": getattr(module, n) for n in names})
    return out


REGISTRIES = all_registries()
ENTRIES = [(key, name) for key, reg in REGISTRIES.items() for name in reg.names()]


def test_the_registries_were_found() -> None:
    kinds = {r.kind for r in REGISTRIES.values()}
    assert {"subtractor", "label source", "associator", "fusion", "alert reader", "drift test"} <= kinds
    assert all(isinstance(r, Registry) for r in REGISTRIES.values())


@pytest.mark.parametrize("key", sorted(REGISTRIES))
def test_every_registry_states_its_contract(key: str) -> None:
    reg = REGISTRIES[key]
    assert isinstance(reg.contract, type), f"{key}: contract {reg.contract!r} is not a class or Protocol"
    assert (reg.contract.__doc__ or "").strip(), f"{key}: its contract {reg.contract.__name__} says nothing"
    assert reg.names(), f"{key}: no entries"


@pytest.mark.parametrize(("key", "name"), ENTRIES, ids=[f"{k.rsplit('.', 1)[1]}-{n}" for k, n in ENTRIES])
def test_every_entry_honours_its_registry_contract(key: str, name: str) -> None:
    reg = REGISTRIES[key]
    entry = reg.get(name)
    assert issubclass(entry, reg.contract), f"{reg.kind} {name!r} does not honour {reg.contract.__name__}"
    assert entry.name == name
    assert (entry.__doc__ or "").strip(), f"{reg.kind} {name!r} ({entry.__qualname__}) has no docstring"


def test_a_class_that_breaks_the_contract_is_refused() -> None:
    class Contract:
        """A contract."""

    reg: Registry[Contract] = Registry("thing", "hybrid.registry", contract=Contract, modules=())
    with pytest.raises(TypeError, match="does not honour Contract"):
        reg.register("bad")(type("Bad", (), {}))
    assert reg.register("good")(type("Good", (Contract,), {})).name == "good"


def test_drift_test_discovery_does_not_import_torch() -> None:
    code = (
        "import sys; from hybrid.monitoring import DRIFT_TESTS; DRIFT_TESTS.names(); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)


def _peer_subtractors() -> list[str]:
    from hybrid.subtraction import subtractor_names

    ours = set(subtractor_names())
    return [n for n in subtractor_names(peers=True) if n not in ours]


def test_the_peer_subtraction_codes_are_registered_subtractors() -> None:
    from hybrid.subtraction import SUBTRACTORS, subtractor_names

    assert {"ois", "properimage", "sfft"} <= set(_peer_subtractors())
    assert set(subtractor_names(peers=True)) == set(SUBTRACTORS.names())
    assert not set(_peer_subtractors()) & set(subtractor_names())  # ours are ours alone


@pytest.mark.parametrize("name", _peer_subtractors())
def test_a_peer_subtractor_names_its_package_and_our_counterpart_and_runs_when_installed(name: str) -> None:
    """Each peer needs an optional package and is measured against one of ours; it runs on a small
    pair when its package is installed, and is skipped with the reason when not."""
    import importlib.util

    from hybrid.exposure import Difference
    from hybrid.subtraction import SUBTRACTORS, subtractor_names
    from tests.test_subtraction import star_pair

    entry = SUBTRACTORS.get(name)
    assert entry.requires and entry.peer_of in subtractor_names()
    why = entry.unavailable()
    assert (why is None) == all(importlib.util.find_spec(m) for m in entry.requires)
    sci, ref = star_pair(0)
    if why:
        assert all(m in why for m in entry.requires if importlib.util.find_spec(m) is None)
        with pytest.raises(ModuleNotFoundError, match=f"subtractor '{name}': .* is not installed"):
            entry().subtract(sci, ref)  # a clear error, not a traceback from deep inside
        pytest.skip(f"{name}: {why}")
    diff = entry().subtract(sci, ref)
    assert isinstance(diff, Difference) and diff.method == name
    assert diff.meta["variance"] == "empirical" and diff.image.shape == sci.shape


def test_an_optional_entry_says_which_module_it_misses() -> None:
    from hybrid.subtraction import Subtractor

    class Missing(Subtractor):
        """Needs a module nobody has."""

        requires = ("hybrid_no_such_module",)

        def subtract(self, science, reference):
            raise AssertionError

    assert Missing.unavailable() == 'hybrid_no_such_module is not installed (`pip install -e ".[peers]"`)'
    assert Subtractor.unavailable() is None
