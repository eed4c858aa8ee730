"""The built wheel carries the templates: a fresh, non-editable install can init and run a project."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO


def run(*args: str | Path, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_fresh_install_of_the_wheel_inits_and_runs_a_project(tmp_path: Path) -> None:
    run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", tmp_path / "dist", cwd=REPO)
    wheel = next((tmp_path / "dist").glob("batchframe-*.whl"))
    run(sys.executable, "-m", "venv", tmp_path / "venv", cwd=tmp_path)
    bin_dir = tmp_path / "venv" / "bin"
    run(bin_dir / "pip", "install", "-q", wheel, "pytest", cwd=tmp_path)
    listing = run(
        bin_dir / "python", "-c", "import batchframe.scaffold.create as s; print(s.templates_root())", cwd=tmp_path
    )
    assert "site-packages/batchframe/_templates" in listing.stdout
    env_cache = {"BATCHFRAME_CACHE_DIR": str(tmp_path / "cache")}
    init = subprocess.run(
        [str(bin_dir / "batchframe"), "init", "demo", "--defaults"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, **env_cache},
    )
    assert init.returncode == 0, init.stderr
    project = tmp_path / "demo"
    run(bin_dir / "batchframe", "exec", "demo", "-c", "config_dev", cwd=project)
    run(bin_dir / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=project)
