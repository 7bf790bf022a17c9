"""Mutation testing of the Lua procedures and the purge (`make mutate`; mutmut does the Python).

Each mutant flips one comparison (`<=` to `<`, `==` to `~=`, ...) or moves one integer
constant by one, in a copy of the tree, and runs the tests that guard that code against it.
A mutant the tests let through is a survivor: printed with its place, for a person to
judge. Usage: python tests/mutate_lua.py [--only PATTERN]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The functions that decide liveness, expiry, listing bounds and the extra-data limit.
TARGETS = {
    "tarantool/sessions/liveness.lua": ["deadline_of", "is_live", "valid"],
    "tarantool/sessions/merge.lua": ["merge"],
    "tarantool/sessions/operations/new.lua": ["make_room", "new", "replay"],
    "tarantool/sessions/operations/get.lua": ["get"],
    "tarantool/sessions/operations/delete.lua": ["delete"],
    "tarantool/sessions/operations/rotate.lua": ["rotate"],
    "tarantool/sessions/operations/list.lua": ["list"],
    "tarantool/sessions/operations/delete_all.lua": ["delete_all"],
    "tarantool/sessions/operations/count.lua": ["count"],
    "tarantool/sessions/dispatch.lua": ["batch", "call", "check_context", "check_args"],
    "tarantool/sessions/bulk.lua": ["in_slot", "pace", "check_deadline"],
    "tarantool/sessions/expiry.lua": ["purge_batch", "step"],
}
# The unit layer first (the Lua modules' tap tests, under a second): a mutant it kills costs
# nothing more; the integration tests run only for the ones it misses.
UNIT_TESTS = ["tests/test_lua_units.py"]
TESTS = [
    "tests/test_expiry.py",
    "tests/test_get_del.py",
    "tests/test_lists.py",
    "tests/test_new.py",
    "tests/test_extra.py",
    "tests/test_management.py",
    "tests/test_overload.py",
    "tests/test_security.py::test_procedures_check_each_items_arguments",
    "tests/test_security.py::test_procedures_check_the_context_of_a_call",
    "tests/test_edges.py::test_memory_full_keeps_signed_in_users_signed_in",
    "tests/test_edges.py::test_purged_sessions_give_their_memory_back_without_outside_help",
    "tests/test_edges.py::test_a_huge_listing_pages_and_does_not_hold_up_other_listings",
]
FLIPS = {"<=": "<", "<": "<=", ">=": ">", ">": ">=", "==": "~=", "~=": "=="}
# Comparisons first (longest operators first), then whole integer literals.
_OPERATOR = re.compile(r"<=|>=|==|~=|(?<![-<>=~])<(?![=])|(?<![-<>=~])>(?![=])")
_NUMBER = re.compile(r"(?<![\w.])\d+(?![\w.])")


@dataclass(frozen=True)
class Mutant:
    path: str
    line: int  # 1-based
    column: int
    old: str
    new: str

    def describe(self) -> str:
        return f"{self.path}:{self.line}:{self.column + 1}: {self.old!r} -> {self.new!r}"


def _code_part(line: str) -> str:
    """The line up to a comment, with string literals blanked out (same length)."""
    code = re.sub(r"'[^']*'|\"[^\"]*\"", lambda m: " " * len(m.group()), line)
    cut = code.find("--")
    return code if cut < 0 else code[:cut]


def _in_functions(lines: list[str], names: list[str]) -> set[int]:
    """Line numbers (1-based) inside the top-level `local function NAME` bodies named."""
    inside, current = set(), None
    for number, line in enumerate(lines, start=1):
        match = re.match(r"local function (\w+)\(", line)
        if match:
            current = match.group(1) if match.group(1) in names else None
        elif line.startswith("end") and current is not None:
            current = None
        elif current is not None:
            inside.add(number)
    return inside


def mutants() -> list[Mutant]:
    found = []
    for path, functions in TARGETS.items():
        lines = (ROOT / path).read_text().splitlines()
        wanted = _in_functions(lines, functions)
        for number, line in enumerate(lines, start=1):
            if number not in wanted:
                continue
            code = _code_part(line)
            for match in _OPERATOR.finditer(code):
                found.append(Mutant(path, number, match.start(), match.group(), FLIPS[match.group()]))
            for match in _NUMBER.finditer(code):
                value = int(match.group())
                found.append(Mutant(path, number, match.start(), match.group(), str(value + 1)))
    return found


def _copy_tree(into: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        source = ROOT / name
        if source.is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, into / name)


def _killed(tree: Path, mutant: Mutant) -> bool:
    target = tree / mutant.path
    original = target.read_text()
    lines = original.splitlines(keepends=True)
    line = lines[mutant.line - 1]
    end = mutant.column + len(mutant.old)
    assert line[mutant.column : end] == mutant.old, mutant
    lines[mutant.line - 1] = line[: mutant.column] + mutant.new + line[end:]
    target.write_text("".join(lines))
    try:
        for layer in (UNIT_TESTS, TESTS):
            result = subprocess.run(
                [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *layer],
                cwd=tree,
                env={**os.environ, "PYTHONPATH": str(tree)},
                capture_output=True,
                timeout=600,
            )
            if result.returncode != 0:
                return True
        return False
    except subprocess.TimeoutExpired:
        return True  # a hang is caught too
    finally:
        target.write_text(original)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="only mutants whose description contains this")
    args = parser.parse_args()
    todo = [m for m in mutants() if not args.only or args.only in m.describe()]
    survivors = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mutate-lua-") as tmp:
        tree = Path(tmp)
        _copy_tree(tree)
        for number, mutant in enumerate(todo, start=1):
            killed = _killed(tree, mutant)
            print(
                f"[{number}/{len(todo)}] {'killed  ' if killed else 'SURVIVED'} {mutant.describe()}",
                flush=True,
            )
            if not killed:
                survivors.append(mutant)
    killed_count = len(todo) - len(survivors)
    print(f"\nLua mutation score: {killed_count}/{len(todo)} killed in {time.monotonic() - started:.0f}s")
    for mutant in survivors:
        print(f"  survived: {mutant.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
