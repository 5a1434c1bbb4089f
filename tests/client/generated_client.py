"""openapi-python-client in a virtual environment of its own, and a client generated with it.

Its own environment because as a test dependency it would pin the app's typer to an older
version. The environment is created once per version under the user's cache folder and reused
(a marker file says the install finished); the client is generated anew on every run.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

GENERATOR_VERSION = "0.29.1"
PACKAGE = "obliviate_client"  # from the title "Obliviate"


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "obliviate-tests"


def generator_venv() -> Path:
    """The environment's folder, created with the pinned generator if it is not there yet."""
    venv = cache_dir() / f"openapi-python-client-{GENERATOR_VERSION}"
    ready = venv / ".installed"
    venv.parent.mkdir(parents=True, exist_ok=True)
    # Two test runs at once (two checkouts, two passes) must not build one environment together.
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready.exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run(
                [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                 f"openapi-python-client=={GENERATOR_VERSION}"],
                check=True, timeout=600,
            )
            ready.touch()
    return venv


def generate(document: Path, target: Path) -> Path:
    """Generate the client package from `document` into `target`; returns the package folder."""
    venv = generator_venv()
    # The command of docs/api.md ("Clients"): the package name comes from the document's title.
    result = subprocess.run(
        [str(venv / "bin" / "openapi-python-client"), "generate", "--path", str(document),
         "--output-path", str(target / "project"), "--overwrite"],
        capture_output=True, text=True, timeout=300,
        # Its post-generation hooks (ruff) are found on PATH.
        env={**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Every warning is a part of the document the generator could not turn into code.
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr
    return target / "project"


def python(venv: Path) -> str:
    return str(venv / "bin" / "python")
