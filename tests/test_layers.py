"""The module boundaries the code promises (docs/internals.md), checked on its imports."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from sessions.contract import PROCEDURES

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sessions"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_only_the_storage_package_knows_asynctnt():
    for path in PACKAGE.rglob("*.py"):
        if any(name.split(".")[0] == "asynctnt" for name in _imports(path)):
            assert path.parent.name == "storage", path


def test_aiohttps_private_parts_are_used_in_one_module():
    public = {"aiohttp", "aiohttp.web", "aiohttp.abc"}
    for path in PACKAGE.rglob("*.py"):
        private = {name for name in _imports(path) if name.startswith("aiohttp") and name not in public}
        assert not private or path.name == "aiohttp_internals.py", (path, private)


def test_the_storage_never_loads_aiohttp():
    probe = "import sys, sessions.storage; print(sorted(m for m in sys.modules if m.startswith('aiohttp')))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the docstring nodes in a module (a docstring may name a procedure)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def test_the_procedures_are_named_in_the_contract_only():
    """The service calls a procedure by contract.py's name for it, never by a string of its own."""
    named = re.compile("|".join(re.escape(name) for name in PROCEDURES))
    for path in PACKAGE.rglob("*.py"):
        if path.name == "contract.py":
            continue
        tree = ast.parse(path.read_text())
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                assert not named.search(node.value), (path, node.lineno, node.value)
