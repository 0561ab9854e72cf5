"""The house rules that keep the package extensible, checked on the source.

* no private name crosses a module boundary: no ``from .x import _y`` and no
  ``module._name`` attribute use of another mam_xr module;
* no module is longer than ~700 lines unless its docstring says why one concept
  needs the length ("one concept" in the first paragraph);
* the import layers of ``.importlinter`` hold (``lint-imports`` in CI; run here
  too when the tool is installed).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mam_xr"
ROOT = PACKAGE.parent
MAX_LINES = 700


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(path: Path, node: ast.ImportFrom) -> str:
    """Absolute module name of a (possibly relative) ``from ... import``."""
    if node.level == 0:
        return node.module or ""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _private_imports(path: Path) -> list[str]:
    """``from <other mam_xr module> import _name`` found in one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    own = _module_name(path)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        target = _resolve(path, node)
        if not target.startswith("mam_xr") or target == own:
            continue
        for alias in node.names:
            if alias.name.startswith("_") and not alias.name.startswith("__"):
                found.append(f"{own}: from {target} import {alias.name} (line {node.lineno})")
    return found


def _private_attribute_uses(path: Path) -> list[str]:
    """``mod._name`` where ``mod`` is a name bound to another mam_xr module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    own = _module_name(path)
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(path, node)
            if not target.startswith("mam_xr"):
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}"
                if (PACKAGE.parent / (full.replace(".", "/") + ".py")).exists() or \
                        (PACKAGE.parent / full.replace(".", "/")).is_dir():
                    aliases[alias.asname or alias.name] = full
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("mam_xr"):
                    aliases[alias.asname or alias.name] = alias.name
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and node.attr.startswith("_")
                and not node.attr.startswith("__") and aliases[node.value.id] != own):
            found.append(f"{own}: {node.value.id}.{node.attr} (line {node.lineno})")
    return found


def test_module_names_resolve():
    # the helpers above must see the package the way Python does
    assert _module_name(PACKAGE / "__init__.py") == "mam_xr"
    assert _module_name(PACKAGE / "store.py") == "mam_xr.store"
    node = ast.parse("from ..flat import AREAS").body[0]
    assert _resolve(PACKAGE / "engines" / "nest.py", node) == "mam_xr.flat"


def test_private_import_detector_finds_a_planted_case(tmp_path):
    planted = PACKAGE / "_architecture_probe_tmp.py"
    planted.write_text("from .store import _secret\nfrom . import store as st\nst._hidden\n")
    try:
        assert _private_imports(planted) == [
            "mam_xr._architecture_probe_tmp: from mam_xr.store import _secret (line 1)"]
        assert _private_attribute_uses(planted) == ["mam_xr._architecture_probe_tmp: st._hidden (line 3)"]
    finally:
        planted.unlink()


def test_no_private_names_cross_modules():
    found = [hit for path in _modules() for hit in _private_imports(path) + _private_attribute_uses(path)]
    assert found == []


def test_modules_are_one_concept_long():
    too_long = []
    for path in _modules():
        n = len(path.read_text().splitlines())
        if n <= MAX_LINES:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        if "one concept" not in doc.split("\n\n")[0].lower():
            too_long.append(f"{_module_name(path)}: {n} lines")
    assert too_long == []


@pytest.mark.skipif(shutil.which("lint-imports") is None and
                    not (Path(sys.executable).parent / "lint-imports").exists(),
                    reason="import-linter is not installed (pip install -e '.[test]')")
def test_import_layers():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    result = subprocess.run([exe, "--config", str(ROOT / ".importlinter")], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def _layers_of_importlinter() -> list[str]:
    import configparser

    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter")
    lines = config["importlinter:contract:layers"]["layers"].strip().splitlines()
    return [" | ".join(m.strip() for m in line.split("|")) for line in lines if line.strip()]


def test_architecture_doc_draws_the_layers_of_importlinter():
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("<!-- layers:", 1)[1].split("<!-- /layers -->", 1)[0]
    drawn = block.split("```", 2)[1].strip().splitlines()
    assert drawn == _layers_of_importlinter()
    assert len(drawn) > 10 and drawn[0] == "cli" and drawn[-1] == "errors"
    # every module of a layer has a row in the table of concepts
    table = text.split("## One concept per module", 1)[1].split("##", 1)[0]
    rows = {line.split("|")[1].strip().strip("`").rstrip("/") for line in table.splitlines()
            if line.startswith("| `")}
    modules = {m.strip() for line in drawn for m in line.split("|")}
    assert modules == rows
