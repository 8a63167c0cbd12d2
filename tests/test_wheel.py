"""A wheel install works outside the checkout: shipped spaces, the default store, clear errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def copy_sources(dest: Path) -> None:
    """What a wheel is built from: the package, its metadata, and the results its store links to."""
    files = subprocess.run(["git", "ls-files", "kdsearch", "results/reproduction", "pyproject.toml", "README.md"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        src = ROOT / name
        if src.is_symlink():
            target.symlink_to(os.readlink(src))
        else:
            shutil.copy2(src, target)


@pytest.mark.slow
def test_a_wheel_installed_in_a_fresh_venv_runs_outside_the_checkout(tmp_path: Path) -> None:
    src, dist, venv, elsewhere = tmp_path / "src", tmp_path / "dist", tmp_path / "venv", tmp_path / "elsewhere"
    copy_sources(src)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (wheel,) = dist.glob("kdsearch-*.whl")
    # a fresh venv; the dependencies (torch, Ray, ...) come from this one's site-packages by a
    # path entry, which does not run its .pth files, so the editable kdsearch there stays out
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KDSEARCH_WORKDIR")}
    env["KDSEARCH_WORKDIR"] = str(tmp_path / "wd")

    def kdsearch(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([venv / "bin" / "kdsearch", *args], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)

    where = subprocess.run([venv / "bin" / "python", "-c", "import kdsearch; print(kdsearch.__file__)"], cwd=elsewhere, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(site)), where  # the wheel's copy, not the checkout's
    r = kdsearch("--help")
    assert r.returncode == 0 and "recommend" in r.stdout
    r = kdsearch("recommend", "--loo")  # the default store ships with the package
    assert r.returncode == 0, r.stderr
    assert "leave one dataset out" in r.stdout and "bbc_news" in r.stdout
    r = kdsearch("run", "quick", "--set", "distill.alpha=2")  # a shipped space, by name; a bad field
    assert r.returncode == 2 and r.stderr.strip().splitlines() == ["kdsearch: error: distill.alpha: alpha must be in [0, 1], got 2.0"]
    r = kdsearch("run", "no-such-space")
    assert r.returncode == 2 and "spec file 'no-such-space' does not exist" in r.stderr
    assert not list(elsewhere.iterdir())  # nothing written where it ran
