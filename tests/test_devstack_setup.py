"""`make run` / `make test` install the system packages they lack (tools/ensure-system): through
apt-get as root (or with passwordless sudo), else one clear line saying what to install.

Run with a PATH of our own: the real python3 and bash, and fakes for node, apt-get and id, so
nothing is installed or removed on this machine."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "ensure-system"


def fake(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def run(tmp_path: Path, goal: str, *, node: bool, apt: bool, uid: int = 0,
        chromium: bool = True) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python3").symlink_to(Path(sys.executable).resolve())  # the interpreter, not a venv or shim
    fake(bin_dir, "env", f'exec {shutil.which("env")} "$@"')
    fake(bin_dir, "id", f"echo {uid}")
    if node:
        fake(bin_dir, "node", "exit 0")  # a Node 18+ (the version check passes)
    log = tmp_path / "apt.log"
    if apt:
        fake(bin_dir, "apt-get", f'echo "$@" >> {log}')
    browser = tmp_path / "chromium"
    if chromium:
        fake(tmp_path, "chromium", "exit 0")
    env = {"PATH": str(bin_dir), "WEBIM_CHROMIUM": str(browser), "HOME": str(tmp_path)}
    bash = shutil.which("bash")
    assert bash is not None
    result = subprocess.run([bash, str(SCRIPT), goal], env=env, capture_output=True, text=True, timeout=60)
    return result, log.read_text().splitlines() if log.exists() else []


def test_nothing_missing_is_silent_and_passes(tmp_path: Path) -> None:
    result, apt = run(tmp_path, "test", node=True, apt=True)
    assert (result.returncode, result.stderr, apt) == (0, "", [])


def test_without_a_way_to_install_it_says_in_one_line_what_to_install(tmp_path: Path) -> None:
    result, apt = run(tmp_path, "test", node=False, apt=False, chromium=False)
    assert result.returncode != 0 and apt == []
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "missing system packages" in lines[0] and "apt-get install nodejs chromium" in lines[0]


def test_not_root_and_no_sudo_only_says_what_to_install(tmp_path: Path) -> None:
    result, apt = run(tmp_path, "test", node=False, apt=True, uid=1000)
    assert result.returncode != 0 and apt == []
    assert "apt-get install nodejs" in result.stderr


def test_as_root_it_installs_what_is_missing_with_apt_get(tmp_path: Path) -> None:
    result, apt = run(tmp_path, "test", node=False, apt=True, chromium=False)
    assert result.returncode == 0, result.stderr
    assert apt == ["update -qq", "install -y -qq nodejs chromium"]


def test_make_run_needs_neither_node_nor_chromium(tmp_path: Path) -> None:
    result, apt = run(tmp_path, "run", node=False, apt=False, chromium=False)
    assert (result.returncode, result.stderr, apt) == (0, "", [])


def test_the_makefile_calls_it_before_the_virtualenv_and_the_node_tests() -> None:
    makefile = (ROOT / "Makefile").read_text()
    ready = makefile[makefile.index("$(READY):"):]
    assert ready.index("tools/ensure-system run") < ready.index("-m venv")
    test_js = makefile[makefile.index("\ntest-js:"):]
    assert test_js.index("tools/ensure-system test") < test_js.index("node --test")
    assert os.access(SCRIPT, os.X_OK)
