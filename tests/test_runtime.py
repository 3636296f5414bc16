"""infra/runtime.py: which Python deploys (chalice's runtime is its interpreter's), and the one
line said when there is none."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from infra import runtime


def test_the_target_is_a_runtime_on_amazon_linux_2023() -> None:
    assert runtime.RUNTIME in ("python3.12", "python3.13")
    assert runtime.ARCHITECTURE == "arm64"


def test_the_interpreter_found_is_of_the_target_version() -> None:
    python = runtime.find_python()
    out = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True)
    assert out.stdout.strip() == str(tuple(int(n) for n in runtime.TARGET_VERSION.split(".")))


def test_no_interpreter_says_in_one_line_what_to_install(tmp_path: Path) -> None:
    # a version nobody has, on an empty PATH and pyenv root: where a fresh Debian 12 stands for 3.13
    with pytest.raises(runtime.RuntimeMissing) as missing:
        runtime.find_python("3.99", env={"PATH": str(tmp_path), "PYENV_ROOT": str(tmp_path)})
    message = str(missing.value)
    assert "\n" not in message
    assert "no Python 3.99 found" in message and "pyenv install 3.99" in message and "DEPLOY_PYTHON=" in message


def test_deploy_python_must_be_of_the_target_version(tmp_path: Path) -> None:
    with pytest.raises(runtime.RuntimeMissing, match="DEPLOY_PYTHON=/nowhere/python is not a Python 3.99"):
        runtime.find_python("3.99", env={"PATH": str(tmp_path), "PYENV_ROOT": str(tmp_path),
                                          "DEPLOY_PYTHON": "/nowhere/python"})


def test_pyenv_versions_are_tried_newest_first(tmp_path: Path) -> None:
    for version in ("3.13.2", "3.13.10", "3.13.9"):
        binary = tmp_path / "versions" / version / "bin" / "python3.13"
        binary.parent.mkdir(parents=True)
        binary.touch()
    found = runtime.candidates("3.13", env={"PATH": "", "PYENV_ROOT": str(tmp_path)})
    assert [Path(p).parents[1].name for p in found if str(tmp_path) in p] == ["3.13.10", "3.13.9", "3.13.2"]


def test_the_deploy_venvs_chalice_deploys_the_target_runtime() -> None:
    python, chosen = runtime.check_runtime()
    assert chosen == runtime.RUNTIME
    assert python == runtime.deploy_venv()[0] / "bin" / "python"
