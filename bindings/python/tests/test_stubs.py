"""The hand-written stubs ship with the package and cover everything the native module exposes."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Set

import modelux
from modelux import _core


def stub_names() -> Dict[str, Set[str]]:
    """Top-level names of _core.pyi → the member names of each class ("" holds functions)."""
    tree = ast.parse((Path(modelux.__file__).parent / "_core.pyi").read_text(encoding="utf-8"))
    out: Dict[str, Set[str]] = {"": set()}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            out[""].add(node.name)
        elif isinstance(node, ast.ClassDef):
            out[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
    return out


def public(names: object) -> Set[str]:
    return {n for n in dir(names) if not n.startswith("_")}


def test_package_is_typed() -> None:
    root = Path(modelux.__file__).parent
    assert (root / "py.typed").is_file()
    assert (root / "_core.pyi").is_file()


def test_stubs_cover_the_native_module() -> None:
    stubs = stub_names()
    native_functions = {n for n in public(_core) if not isinstance(getattr(_core, n), type)}
    native_classes = {n for n in public(_core) if isinstance(getattr(_core, n), type)}
    assert native_functions == stubs[""]
    assert native_classes == set(stubs) - {""}
    for cls in native_classes:
        members = public(getattr(_core, cls)) | ({"__iter__", "__next__"} & set(dir(getattr(_core, cls))))
        stubbed = stubs[cls] - {"__init__"}
        assert members == stubbed, cls


def test_public_api_is_exported() -> None:
    for name in modelux.__all__:
        assert hasattr(modelux, name), name
