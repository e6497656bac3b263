"""Imports a docs_src file by path (docs_src is not a package users install)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
DOCS_SRC = ROOT / "docs_src"


def load(relative: str) -> ModuleType:
    path = DOCS_SRC / relative
    name = "docs_src_" + relative.removesuffix(".py").replace("/", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
