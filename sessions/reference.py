"""The tables of the documentation that describe the code, generated from it.

Each table sits in a Markdown file between `<!-- table: NAME -->` and `<!-- end table -->`,
and each limit the prose names between `<!-- limit: NAME -->` and `<!-- end limit -->` (a
name of limits.py). `make docs` (python -m sessions.reference) rewrites them; test_docs.py
fails when one differs from what the code declares, so neither goes stale: the methods from
the route table (api.METHODS), the errors from errors.BY_CODE and their docstrings (where
`{NAME}` stands for a limit), the settings from config.Settings and theirs, the metrics from
metrics.FAMILIES, the limits from limits.py.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr

from . import limits
from .api import METHODS
from .config import Settings
from .errors import BY_CODE
from .metrics import FAMILIES
from .routing import SESSION, SESSIONS

__all__ = ["FILES", "TABLES", "render", "rewrite"]

ROOT = Path(__file__).resolve().parent.parent
# The files that hold generated tables.
FILES = ("README.md", "docs/api.md", "docs/configuration.md", "docs/operations.md", "docs/reliability.md")
_BLOCK = re.compile(r"(<!-- table: (\w+) -->\n)(.*?)(<!-- end table -->)", re.DOTALL)
_LIMIT = re.compile(r"(<!-- limit: (\w+) -->)(.*?)(<!-- end limit -->)")
_PLACEHOLDER = re.compile(r"\{([A-Z_]+)\}")
# Every limit by its name in limits.py, as the docs write it.
LIMITS: dict[str, str] = {
    name: limits.shown(value) for name in limits.__all__ if isinstance(value := getattr(limits, name), int)
}


def _text(value: str) -> str:
    """A table cell: one line, its `{NAME}`s the limits'."""
    value = _PLACEHOLDER.sub(lambda match: LIMITS[match.group(1)], value)
    return " ".join(value.split()).replace("|", "\\|")


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |\n"


def methods() -> str:
    table = _row("method", "parameters", "does", "`data`", "errors") + "|---|---|---|---|---|\n"
    for route in METHODS:
        params = []
        for param in route.params:
            name = f"header `{param.name}`" if param.name[:1].isupper() else f"`{param.name}`"
            params.append(name if param.required else f"{name} (optional)")
        errors = ", ".join(f"`{error.code}`" for error in route.all_errors())
        if isinstance(route.result, str):
            result = {SESSION: "SessionObject", SESSIONS: "SessionObject[]"}[route.result]
        else:
            result = "`{" + ", ".join(f'"{name}": N' for name in route.result.model_fields) + "}`"
        table += _row(f"`{route.path}`", ", ".join(params), _text(route.summary), result, errors)
    return table


def overview() -> str:
    """The README's short table: each method with its required parameters, and what it does."""
    table = _row("method", "does") + "|---|---|\n"
    for route in METHODS:
        required = "&".join(
            f"{param.name}=" for param in route.params if param.required and param.name.islower()
        )
        table += _row(f"`{route.path}{'?' + required if required else ''}`", _text(route.summary))
    return table


# How docs/api.md words an error's `x-retry`.
_RETRIED = {"always": "any call", "if_safe": "if safe", "never": "no"}


def errors() -> str:
    table = _row("code", "HTTP", "family", "retried", "when") + "|---|---|---|---|---|\n"
    for code, error in sorted(BY_CODE.items(), key=lambda item: (item[1].status, item[0])):
        cells = (f"`{code}`", str(error.status), f"`{error.family}`", _RETRIED[error.retry])
        table += _row(*cells, _text(error.__doc__ or ""))
    return table


def _default(value: object) -> str:
    if value is None or value == ():
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, Path) and value.is_absolute():
        return f"`{value.relative_to(ROOT)}/` of this checkout"
    return f"`{value}`"


def settings() -> str:
    table = _row("variable", "default", "meaning") + "|---|---|---|\n"
    for name, field in Settings.model_fields.items():
        if name == "metrics_dir":
            continue  # the supervisor's, not an operator's
        table += _row(f"`SESSIONS_{name.upper()}`", _default(field.default), _text(field.description or ""))
    return table


def metrics() -> str:
    table = _row("metric", "type", "meaning") + "|---|---|---|\n"
    for family in FAMILIES.values():
        labels = "{" + ",".join(family.labels) + "}" if family.labels else ""
        name = family.name + ("_total" if family.kind == "counter" else "")
        table += _row(f"`{name}{labels}`", family.kind, _text(family.help))
    process = "CPU, memory and file descriptors of the answering process (prometheus-client's)"
    table += _row("`process_*`", "", process)
    return table


def method_labels() -> str:
    """The values of the metrics' `method` label: each API method's, the operational
    endpoints' (ops.py) and the one of any other path (routing.py)."""
    return ", ".join(f"`{name}`" for name in [*(route.name for route in METHODS), "ops", "other"]) + "):\n"


TABLES: dict[str, Callable[[], str]] = {
    "overview": overview,
    "methods": methods,
    "errors": errors,
    "settings": settings,
    "metrics": metrics,
    "method_labels": method_labels,
}


def render(text: str) -> str:
    """The text with every table in it as the code declares it."""

    def fill(match: re.Match[str]) -> str:
        head, name, _, end = match.groups()
        if name not in TABLES:
            raise KeyError(f"no table named {name!r}")
        return head + TABLES[name]() + end

    def value(match: re.Match[str]) -> str:
        head, name, _, end = match.groups()
        if name not in LIMITS:
            raise KeyError(f"no limit named {name!r} in limits.py")
        return head + LIMITS[name] + end

    return _LIMIT.sub(value, _BLOCK.sub(fill, text))


def rewrite() -> list[str]:
    """Rewrite the tables in FILES; the files that changed."""
    changed = []
    for name in FILES:
        path = ROOT / name
        text = path.read_text()
        fresh = render(text)
        if fresh != text:
            path.write_text(fresh)
            changed.append(name)
    return changed


if __name__ == "__main__":
    for name in rewrite():
        print(f"rewrote the tables of {name}", file=sys.stderr)
