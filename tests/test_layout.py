"""The folders are the architecture: CONTRIBUTING's module map is complete, and imports only flow down."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "batchframe"

# A command flows cli -> project -> run -> backends -> runfolder. What each package must never import:
# runfolder/ is read by `runs` and the UI without the engine; project/ and scaffold/ stand alone.
FORBIDDEN = {
    "project": {"cli", "run", "backends", "runfolder", "scaffold", "ui"},
    "scaffold": {"cli", "project", "run", "backends", "runfolder", "ui"},
    "runfolder": {"cli", "run", "backends", "scaffold", "ui"},
    "backends": {"cli", "run", "scaffold", "ui"},
    "run": {"cli", "scaffold", "ui"},
}


def _modules() -> list[str]:
    """Every module of batchframe, as CONTRIBUTING names it: ``run/driver.py``, ``_text.py``."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.endswith("/__init__.py") and relative.count("/") == 1 and relative != "backends/__init__.py":
            continue  # a package's docstring-only __init__: the package's row names it
        found.append(relative)
    return found


def _mapped() -> set[str]:
    """The modules the first column of CONTRIBUTING's layout table names (``_x.py`` after ``pkg/y.py``: ``pkg/_x.py``)."""
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    layout = text[text.index("## Layout") : text.index("\n## ", text.index("## Layout") + 1)]
    named: set[str] = set()
    for row in layout.splitlines():
        if not row.startswith("| `"):
            continue
        cell = row.split("|")[1]
        package = ""
        for name in re.findall(r"`([\w/.]+)`", cell):
            if "/" in name and not name.endswith("/"):
                package = name.rsplit("/", 1)[0] + "/"
                named.add(name)
            elif name.endswith(".py"):
                named.add(package + name)
            elif name.endswith("/"):
                named.update(m for m in _modules() if m.startswith(name))
    return named


def test_contributing_s_module_map_names_every_module() -> None:
    missing = [module for module in _modules() if module not in _mapped()]
    assert not missing, f"CONTRIBUTING.md's layout table does not name: {missing}"


def test_contributing_s_module_map_names_no_module_that_is_gone() -> None:
    gone = [name for name in _mapped() if not (PACKAGE / name).is_file()]
    assert not gone, f"CONTRIBUTING.md's layout table names modules that do not exist: {gone}"


def _imported(path: Path) -> set[str]:
    """Every batchframe module ``path`` imports, at its top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name.startswith("batchframe.")}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_flow_down(package: str) -> None:
    upward = {
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in (PACKAGE / package).rglob("*.py")
        for name in _imported(path)
        if name.split(".")[1] in FORBIDDEN[package]
    }
    assert not upward, sorted(upward)
