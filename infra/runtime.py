"""The Lambda runtime the stage deploys to, and the interpreter that deploys it.

chalice gives the functions the runtime of the Python that runs it (chalice 1.34,
`chalice.config.Config.lambda_python_version`: python3.10 to python3.14 as they are, older
ones raised to 3.10), and picks the wheels it bundles for that version's ABI (cp313, glibc 2.34
for the AL2023 runtimes: `chalice.deploy.packager`). So the deploy runs chalice in a virtualenv
of the target version, `.venv-deploy` (requirements.txt + chalice, pinned by constraints.txt),
beside the development `.venv`, which stays on the project's Python 3.11.

    python infra/runtime.py python     # the deploy venv's interpreter (built when missing or stale)
    python infra/runtime.py find       # the Python 3.13 found on this machine

`python3.13` runs on Amazon Linux 2023 (python3.11 runs on Amazon Linux 2, retired 2026-06-30).
"""
from __future__ import annotations

import fcntl
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TARGET_VERSION = "3.13"
RUNTIME = f"python{TARGET_VERSION}"
ARCHITECTURE = "arm64"
DEPLOY_VENV = ".venv-deploy"
# Where to look besides PATH: a pyenv install, then the usual system places.
_CANDIDATE_GLOBS = (
    "{pyenv}/versions/{version}.*/bin/python{version}",
    "/usr/local/bin/python{version}",
    "/usr/bin/python{version}",
    "/opt/homebrew/bin/python{version}",
)


def install_hint(version: str = TARGET_VERSION) -> str:
    """The one line `make deploy` (and the package test) says when no interpreter is found."""
    return (f"no Python {version} found for the python{version} Lambda runtime: install it "
            f"(`pyenv install {version}`, `apt-get install python{version}-venv` on Debian 13 / "
            f"Ubuntu 24.04+, or python.org) or set DEPLOY_PYTHON=/path/to/python{version}")


class RuntimeMissing(Exception):
    """No interpreter of the target version: the message says what to install, in one line."""


def _version_of(python: str) -> str | None:
    """`major.minor` of an interpreter, or None if it does not run (a pyenv shim of a version
    that is not selected fails here, as do broken links)."""
    try:
        result = subprocess.run([python, "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def candidates(version: str = TARGET_VERSION, env: dict[str, str] | None = None) -> list[str]:
    """Interpreters that may be `version`, best first: DEPLOY_PYTHON, pyenv's, PATH's, the system's."""
    env = dict(os.environ) if env is None else env
    found: list[str] = []
    if env.get("DEPLOY_PYTHON"):
        found.append(env["DEPLOY_PYTHON"])
    pyenv = env.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    # newest patch release first (3.13.10 after 3.13.9: numeric, not text order)
    pyenv_found = glob.glob(_CANDIDATE_GLOBS[0].format(pyenv=pyenv, version=version))
    found += sorted(pyenv_found, key=lambda p: [int(n) for n in re.findall(r"\d+", Path(p).parents[1].name)],
                    reverse=True)
    on_path = shutil.which(f"python{version}", path=env.get("PATH"))
    if on_path:
        found.append(on_path)
    for pattern in _CANDIDATE_GLOBS[1:]:
        found += glob.glob(pattern.format(version=version))
    return list(dict.fromkeys(found))


def find_python(version: str = TARGET_VERSION, env: dict[str, str] | None = None) -> str:
    """A working interpreter of `version` (with venv), or RuntimeMissing saying what to install."""
    env = dict(os.environ) if env is None else env
    for python in candidates(version, env):
        if _version_of(python) == version:
            return python
    if env.get("DEPLOY_PYTHON"):
        raise RuntimeMissing(f"DEPLOY_PYTHON={env['DEPLOY_PYTHON']} is not a Python {version} with venv")
    raise RuntimeMissing(install_hint(version))


def deploy_venv(project_dir: Path = REPO_ROOT) -> tuple[Path, Path]:
    """The deploy venv and the checkout whose requirement files it holds: WEBIM_DEPLOY_VENV
    (a checkout's `.venv-deploy` shared by throwaway clones, the rehearsal's, whose own
    requirements.txt may differ), else the project's own `.venv-deploy`."""
    shared = os.environ.get("WEBIM_DEPLOY_VENV")
    if shared:
        return Path(shared), Path(shared).resolve().parent
    return project_dir / DEPLOY_VENV, project_dir


def _chalice_pin(project_dir: Path) -> str:
    for line in (project_dir / "requirements-dev.txt").read_text().splitlines():
        if line.split("#")[0].strip().startswith("chalice=="):
            return line.split("#")[0].strip()
    raise RuntimeMissing("requirements-dev.txt pins no chalice==")


def _fingerprint(project_dir: Path, python: str) -> str:
    """What the venv was built from: a change to any of these rebuilds it."""
    digest = hashlib.sha256(f"{python}\n{_chalice_pin(project_dir)}\n".encode())
    for name in ("requirements.txt", "constraints.txt"):
        digest.update((project_dir / name).read_bytes())
    return digest.hexdigest()


def ensure_deploy_venv(project_dir: Path = REPO_ROOT, quiet: bool = True) -> Path:
    """The deploy venv's interpreter: made with the target Python when missing, its packages
    installed again when requirements.txt, constraints.txt or the chalice pin changed. One
    process at a time builds it (test workers and a deploy may ask at once)."""
    venv, project_dir = deploy_venv(project_dir)
    lock_path = venv.parent / f"{venv.name}.lock"
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure(venv, project_dir, quiet)


def _ensure(venv: Path, project_dir: Path, quiet: bool) -> Path:
    python = venv / "bin" / "python"
    ready = venv / ".ready"
    if python.exists() and _version_of(str(python)) == TARGET_VERSION and ready.exists():
        base = ready.read_text().split("\n", 1)[0]
        if ready.read_text() == f"{base}\n{_fingerprint(project_dir, base)}\n":
            return python
    base = find_python()
    if not python.exists() or _version_of(str(python)) != TARGET_VERSION:
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    print(f"[runtime] installing requirements.txt and chalice into {venv} (Python {TARGET_VERSION})",
          file=sys.stderr, flush=True)
    subprocess.run([str(python), "-m", "pip", "install", *(["--quiet"] if quiet else []),
                    "--disable-pip-version-check", "-r", str(project_dir / "requirements.txt"),
                    _chalice_pin(project_dir), "-c", str(project_dir / "constraints.txt")], check=True)
    ready.write_text(f"{base}\n{_fingerprint(project_dir, base)}\n")
    return python


def chalice_runtime(python: Path) -> str:
    """The runtime chalice, run by `python`, gives the functions (chalice's own answer)."""
    result = subprocess.run([str(python), "-c", "from chalice.config import Config; "
                             "print(Config().lambda_python_version)"], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeMissing(f"chalice does not run in {python}: {result.stderr.strip().splitlines()[-1:]}")
    return result.stdout.strip()


def check_runtime(project_dir: Path = REPO_ROOT) -> tuple[Path, str]:
    """The deploy interpreter and the runtime chalice will deploy with it (RUNTIME, or
    RuntimeMissing)."""
    python = ensure_deploy_venv(project_dir)
    runtime = chalice_runtime(python)
    if runtime != RUNTIME:
        raise RuntimeMissing(f"{python} makes chalice deploy {runtime}, not {RUNTIME}: delete {python.parent.parent}")
    return python, runtime


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        if args == ["find"]:
            print(find_python())
        elif args == ["python"]:
            print(ensure_deploy_venv(quiet=False))
        else:
            print(__doc__.split("\n\n")[1], file=sys.stderr)
            return 2
    except RuntimeMissing as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
