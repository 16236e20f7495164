"""One version, from one place: `project(modelux VERSION x.y.z)` in CMakeLists.txt. The wheel's
file name and metadata (scikit-build-core's regex provider), `modelux.__version__`, the C++
`modelux::version()` (MODELUX_VERSION, from PROJECT_VERSION) and `modelux --version` all say it."""

from __future__ import annotations

import os
import re
import subprocess
from importlib.metadata import version as dist_version
from pathlib import Path

import modelux
from modelux import _core

from conftest import REPO, modelux_bin


def cmake_project_version() -> str:
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    m = re.search(r"^project\(modelux\s+VERSION\s+([0-9][0-9.]*)", text, re.M)
    assert m, "no project(modelux VERSION ...) in CMakeLists.txt"
    return m.group(1)


def test_every_version_is_the_cmake_project_version() -> None:
    want = cmake_project_version()
    seen = {
        "modelux.__version__": modelux.__version__,
        "wheel metadata": dist_version("modelux"),
        "modelux::version()": _core.version(),
        "modelux --version": subprocess.run([modelux_bin(), "--version"], capture_output=True, text=True,
                                            check=True).stdout.strip().removeprefix("modelux "),
    }
    wheel = os.environ.get("MODELUX_WHEEL")
    if wheel:  # scripts/test.sh: the repaired wheel that is installed
        seen["wheel file name"] = Path(wheel).name.split("-")[1]
    assert seen == {k: want for k in seen}
