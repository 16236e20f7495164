"""docs/python.md's examples type-check against the package (its .pyi stubs and annotations)
with `mypy --strict`. Each ```python block is its own module, after a preamble that declares
the names the page's fragments take as given (`router`, `messages`, ...)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

import modelux

DOC = Path(__file__).resolve().parents[3] / "docs" / "python.md"

PREAMBLE = '''\
from typing import Any, Dict, List
import modelux

router: modelux.Router = modelux.Router()
messages: List[Dict[str, Any]] = [{"role": "user", "content": "Hello"}]
secret: str = "whsec_x"
request: Any = None
pandas: Any = None
'''


def python_blocks(text: str) -> List[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_page_has_examples() -> None:
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 12
    joined = "\n".join(blocks)
    for api in ("OpenAI(", "achat", "astream", "attempts(", "TraceStore", "ControlStore", "MockProvider"):
        assert api in joined, api


def test_examples_pass_mypy_strict(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    blocks = python_blocks(DOC.read_text(encoding="utf-8"))
    files = []
    for i, block in enumerate(blocks):
        f = tmp_path / f"doc_example_{i:02d}.py"
        f.write_text(PREAMBLE + "\n" + block, encoding="utf-8")
        files.append(str(f))
    env = dict(os.environ)
    pkg_root = Path(modelux.__file__).resolve().parents[1]
    # A source checkout (PYTHONPATH) is not an installed package: tell mypy where it is.
    if "site-packages" not in pkg_root.parts and "dist-packages" not in pkg_root.parts:
        env["MYPYPATH"] = str(pkg_root)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", str(tmp_path / ".mypy"),
         "--python-executable", sys.executable, "--allow-redefinition", *files],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_package_itself_passes_mypy_strict(tmp_path: Path) -> None:
    # Installed packages' own errors are silenced when mypy checks code that uses them, so the
    # package is checked on its own too (as files: installed or from a source tree alike).
    # A copy of its sources (not the site-packages folder itself: mypy would then take every
    # installed module next to it for a source file).
    pytest.importorskip("mypy")
    import shutil

    pkg = Path(modelux.__file__).resolve().parent
    src = tmp_path / "src"
    shutil.copytree(pkg, src / "modelux", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    env = dict(os.environ, MYPYPATH=str(src))
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", str(tmp_path / ".mypy"),
         "--python-executable", sys.executable, "-p", "modelux"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
