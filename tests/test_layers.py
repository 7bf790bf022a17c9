"""The module boundaries the code promises (docs/internals.md), checked on its imports."""

from __future__ import annotations

import ast
import functools
import re
import subprocess
import sys
from pathlib import Path

import aiohttp

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


@functools.cache
def _aiohttps_private_names() -> frozenset[str]:
    """Every private name (one leading underscore) aiohttp's own code uses as an attribute or
    defines as a function: its private parts, whatever object they are reached through."""
    found = set()
    for path in Path(aiohttp.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "name", None)
            if isinstance(name, str) and name.startswith("_") and not name.startswith("__"):
                found.add(name)
    return frozenset(found)


def _private_uses(source: str) -> list[str]:
    """Where a module reaches into aiohttp: a private name of aiohttp's read through any object
    but `self` of a class of its own, or defined (an override of a private hook) in a class
    derived from aiohttp's (or from aiohttp_internals.py's, which stand for aiohttp's)."""
    private = _aiohttps_private_names()
    tree = ast.parse(source)
    foreign = set()  # names that stand for aiohttp's classes (aiohttp_internals.py's too)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            foreign |= {
                (a.asname or a.name).split(".")[0] for a in node.names if a.name.startswith("aiohttp")
            }
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("aiohttp"):
            foreign |= {a.asname or a.name for a in node.names}
    derived = set()
    classes = sorted((n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)), key=lambda n: n.lineno)
    for node in classes:  # in source order, so a class derived from a derived one is found too
        roots = {sub.id for base in node.bases for sub in ast.walk(base) if isinstance(sub, ast.Name)}
        if roots & (foreign | derived):
            derived.add(node.name)
    found = []

    def visit(node: ast.AST, owner: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, ast.ClassDef) else owner
            defined = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) and child.name in private
            if defined and owner in derived:
                found.append(f"line {child.lineno}: def {child.name} in {owner}")
            if isinstance(child, ast.Attribute) and child.attr in private:
                own = isinstance(child.value, ast.Name) and child.value.id in ("self", "cls")
                if not own or owner in derived:
                    found.append(f"line {child.lineno}: {ast.unparse(child)}")
            visit(child, inner)

    visit(tree, None)
    return found


def test_aiohttps_private_attributes_are_used_in_one_module():
    """Importing a public module is not enough: reading `runner._server` or overriding
    `_make_server` reaches into aiohttp as much as importing aiohttp.web_protocol does."""
    for path in PACKAGE.rglob("*.py"):
        if path.name != "aiohttp_internals.py":
            assert _private_uses(path.read_text()) == [], path


def test_the_scan_finds_private_uses_of_aiohttp():
    code = (
        "from aiohttp import web\n"
        "class Runner(web.BaseRunner):\n"
        "    async def _make_server(self):\n"
        "        return Server(**self._kwargs)\n"
        "class Own:\n"
        "    def __init__(self, runner):\n"
        "        self._kwargs = {}\n"
        "        self._server = runner._server\n"
    )
    assert _private_uses(code) == [
        "line 3: def _make_server in Runner",
        "line 4: self._kwargs",
        "line 8: runner._server",
    ]


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
