"""The wheel carries every subpackage, module and data file, under the installed names.

Builds the wheel, installs it (without dependencies) into a fresh virtual environment that borrows this
environment's third-party packages, and imports every module found in the source folders from there — from a
folder outside the checkout, so nothing resolves through the source tree. A module or template missing from the
package list fails here instead of on a user's machine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

CHECK = r"""
import importlib, importlib.resources, json, sys
modules, resources = json.loads(sys.argv[1])
for name in modules:
    mod = importlib.import_module(name)
    assert "site-packages" in (mod.__file__ or ""), (name, mod.__file__)
for package, resource in resources:
    assert importlib.resources.files(package).joinpath(resource).is_file(), (package, resource)
print("ok", len(modules), len(resources))
"""


def _expected() -> tuple[list[str], list[tuple[str, str]]]:
    """Every module and data file under the mapped folders, by installed name.

    A folder with an ``__init__.py`` is a subpackage (``engine/ndis/`` → ``ndis_replay.engine.ndis``): it must be
    listed in ``packages`` too, or its modules are missing from the wheel and their import fails here. Other files
    in plain folders are data of the nearest package. Folders with a mapping of their own are left to it.
    """
    mapping: dict[str, str] = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    mapped = {(REPO / folder).resolve() for folder in mapping.values()}
    modules: list[str] = []
    resources: list[tuple[str, str]] = []
    for package, folder in mapping.items():
        base = REPO / folder
        for path in sorted(base.rglob("*")):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            parts = path.relative_to(base).parts
            folders = [base.joinpath(*parts[: i + 1]) for i in range(len(parts) - 1)]
            if any(f.resolve() in mapped for f in folders):
                continue  # belongs to a nested package with its own mapping
            depth = 0
            while depth < len(folders) and (folders[depth] / "__init__.py").is_file():
                depth += 1
            owner = ".".join([package, *parts[:depth]])
            if path.suffix == ".py" and depth == len(folders):
                modules.append(owner if path.stem == "__init__" else f"{owner}.{path.stem}")
            else:
                resources.append((owner, "/".join(parts[depth:])))
    modules = [m for m in modules if not m.endswith(".__main__")]
    return modules, resources


def test_every_subpackage_is_listed() -> None:
    """Each folder with an ``__init__.py`` under a mapped folder is in ``[tool.setuptools] packages``."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    modules, _ = _expected()
    packages = {m for m in modules if any(other.startswith(m + ".") for other in modules)}
    packages |= {m.rsplit(".", 1)[0] for m in modules if "." in m}
    assert packages - set(setuptools["packages"]) == set(), "add these to [tool.setuptools] packages"


def test_wheel_installs_every_module_and_resource(tmp_path: Path) -> None:
    # Build from a clean copy: setuptools reuses an in-tree build/ folder, whose stale files would hide a
    # package missing from the list.
    source = tmp_path / "src"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "data"
        ),
    )
    dist = tmp_path / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(dist), str(source)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # setuptools ships a data folder left out of `packages` today, with a warning that it will stop doing so
    assert "is absent from the `packages` configuration" not in built.stdout + built.stderr
    (wheel,) = dist.glob("ndis_replay-*.whl")
    env_dir = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # The dependencies come from this environment; .pth lines only extend sys.path, so the editable
    # install's finder in that folder is not activated and cannot shadow the wheel.
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    modules, resources = _expected()
    assert "ndis_replay.importers.pcapng" in modules and "ndis_replay.engine" in modules
    assert "ndis_replay.engine.ndis.structs" in modules
    done = subprocess.run(
        [str(python), "-c", CHECK, json.dumps([modules, resources])],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok")
    help_run = subprocess.run(
        [str(python), "-m", "ndis_replay", "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert help_run.returncode == 0 and "inspect" in help_run.stdout
