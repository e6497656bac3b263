from __future__ import annotations

import importlib
import pkgutil
import types

import pytest

import mlops_async
from mlops_async import errors

# Modules whose import needs an optional extra that the dev install has anyway.
MODULES = sorted(
    m.name for m in pkgutil.walk_packages(mlops_async.__path__, "mlops_async.")
    if not m.name.rsplit(".", 1)[-1].startswith("_")
)


def test_all_is_exact_and_importable() -> None:
    for name in mlops_async.__all__:
        assert hasattr(mlops_async, name), name
    submodules = {m.split(".")[1] for m in MODULES}
    public = {n for n in dir(mlops_async) if not n.startswith("_")}
    extra = {n for n in public - submodules - {"annotations"}
             if not isinstance(getattr(mlops_async, n), types.ModuleType)}
    assert extra == set(mlops_async.__all__) - {"__version__"}


@pytest.mark.parametrize("name", MODULES)
def test_every_public_module_declares_what_it_exports(name: str) -> None:
    """As anyio's test_all_attributes: ``__all__`` exists and names only real attributes,
    each defined in (or deliberately re-exported by) the module."""
    module = importlib.import_module(name)
    assert hasattr(module, "__all__"), f"{name} has no __all__"
    for attr in module.__all__:
        assert hasattr(module, attr), f"{name}.__all__ names {attr}, which does not exist"
    assert len(set(module.__all__)) == len(module.__all__), f"{name}.__all__ repeats a name"


def test_every_error_is_a_bus_error_with_a_docstring() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.BusError)
        assert cls.__doc__
    assert errors.BusUnavailable.retriable and not errors.DecodeError.retriable
