"""The package type-checks under mypy --strict, as installed (``ndis_replay.*``), not as folders.

mypy cannot follow setuptools' editable-install finder for a remapped package (``replay/`` → ``ndis_replay``),
so the test builds a tree of symlinks that mirrors ``[tool.setuptools.package-dir]`` and checks that tree.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO

mypy_api = pytest.importorskip("mypy.api", reason="mypy is installed by `make test`")


def link_tree(root: Path) -> Path:
    """Symlinks laid out as the installed package; returns the package folder.

    Subpackages without a mapping of their own (``engine/ndis/`` → ``ndis_replay.engine.ndis``) are mirrored
    inside their parent, as setuptools installs them.
    """
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    mapped = {(REPO / folder).resolve() for folder in mapping.values()}
    for package, folder in mapping.items():
        _mirror(REPO / folder, root.joinpath(*package.split(".")), mapped)
    return root / "ndis_replay"


def _mirror(folder: Path, target: Path, mapped: set[Path]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for source in folder.iterdir():
        if source.is_dir():
            if source.resolve() not in mapped and (source / "__init__.py").is_file():
                _mirror(source, target / source.name, mapped)
        elif source.suffix in (".py", ".typed"):
            (target / source.name).symlink_to(source)


def test_package_type_checks_strictly(tmp_path: Path) -> None:
    package = link_tree(tmp_path)
    args = ["--config-file", str(REPO / "pyproject.toml"), "--cache-dir", str(REPO / ".mypy_cache"), str(package)]
    stdout, stderr, status = mypy_api.run(args)
    assert status == 0, (stdout + stderr).replace(str(tmp_path), "")
