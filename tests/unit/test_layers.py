"""Layers point one way: what each package of `tenantry` may import from the others.

`model` and `crypto` know nothing of the components; the webhook and the API pod know nothing
of the operator (what they share with it, the Kubernetes client `tenantry.kubeapi` and key
custody `tenantry.crypto.custody`, lives beside them); the operator may read the formats the
webhook and the API publish (`controller.rotation` does, to rotate their keys). A new import
against these arrows fails here, naming the file and the line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tenantry

PACKAGE = Path(tenantry.__file__).parent

FORBIDDEN = {
    "model": ("controller", "webhook", "api", "crypto", "ledger", "devcluster", "cli"),
    "crypto": ("controller", "webhook", "api", "ledger", "devcluster", "cli"),
    "admission": ("controller", "webhook", "api", "devcluster", "cli"),
    "ledger": ("controller", "webhook", "api", "devcluster", "cli"),
    "webhook": ("controller", "api", "devcluster", "cli"),
    "api": ("controller", "webhook", "devcluster", "cli"),
    "controller": ("devcluster", "cli"),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every `tenantry.*` import in `path`, `from tenantry import x` as
    `tenantry.x`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "tenantry":
                found += [(node.lineno, f"tenantry.{alias.name}") for alias in node.names]
            elif node.module.startswith("tenantry."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names
                      if alias.name.startswith("tenantry.")]
    return found


def violations(package: str) -> list[str]:
    forbidden = FORBIDDEN[package]
    out = []
    for path in sorted((PACKAGE / package).rglob("*.py")):
        for line, module in _imports(path):
            layer = module.split(".")[1]
            if layer in forbidden:
                out.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_only_the_layers_below_it(package: str) -> None:
    assert violations(package) == []


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text("from tenantry.controller.tenant import handlers\n"
                       "from tenantry import webhook\nimport tenantry.api.app\n")
    assert _imports(planted) == [(1, "tenantry.controller.tenant"), (2, "tenantry.webhook"),
                                 (3, "tenantry.api.app")]
