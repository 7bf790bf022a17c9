"""Which API keys and passwords are too weak to run with: the one declaration of the rule.

The service checks its settings with `is_weak`; Tarantool's `init.lua` checks its passwords
with `tarantool/sessions/secrets.lua`, which reads the same rule from
`tarantool/sessions/weak_secrets.lua`, generated from this module by `make docs` (each image
holds only its own side: the service image this package, the Tarantool image `tarantool/`).
tests/test_security.py keeps that file current and feeds the same values to both checks.

A value is weak when it has fewer than `MIN_LENGTH` characters that are not spaces, or when,
folded, it starts with the sample prefix or is on the list of common passwords. Folding drops
spaces (ASCII and Unicode, the no-break space among them) and punctuation and lowers ASCII
letters, so that `Change Me`, `change\u00a0me` and `P-a-s-s-w-o-r-d-1` fold like the words
they spell. Only ASCII letters change case: Lua, on the other side, knows no other.
"""

from __future__ import annotations

import string
import sys

__all__ = ["MIN_LENGTH", "RULE", "folded", "is_weak", "length", "lua_module"]

MIN_LENGTH = 16
"""Fewest characters, spaces not counted, of an API key or password."""

RULE = (
    f"at least {MIN_LENGTH} characters, spaces not counted, and neither a sample value (`change-me...`) "
    "nor a common password"
)
"""The rule in words, for error messages and the settings' documentation."""

# Characters that never count: ASCII and Unicode spaces (Python's str.isspace() ones) and
# the invisible ones a copy and paste can bring along.
SPACES = (
    "\t\n\v\f\r \x1c\x1d\x1e\x1f\x85\xa0\u1680"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
    + "\u200b\u200c\u200d\u2028\u2029\u202f\u205f\u2060\u3000\ufeff"
)
# Left out too when a value is compared with the list: ASCII punctuation and Unicode dashes.
PUNCTUATION = string.punctuation + "\u2010\u2011\u2012\u2013\u2014\u2015\u2212"

# What .env.sample ships starts with `change-me` (folded: changeme).
SAMPLE_PREFIX = "changeme"

# Passwords people type first, the words of this project and its samples, and the
# keyboard walks and repetitions that look long but are not. Short ones are refused by the
# length anyway; they are here for their padded, spaced and punctuated variants.
# fmt: off
COMMON = (
    # digits
    "000000", "111111", "121212", "123123", "123321", "654321", "666666", "696969", "112233",
    "12345", "123456", "1234567", "12345678", "123456789", "1234567890", "0987654321", "987654321",
    "1234567890123456", "12345678901234567890", "1111111111111111", "0000000000000000",
    # keyboard walks and alphabets
    "qwerty", "qwerty123", "qwertyuiop", "qwertyuiopasdfgh", "qwertyuiopasdfghjkl", "asdfgh",
    "asdfghjkl", "zxcvbnm", "azerty", "qazwsx", "1qaz2wsx", "zaq12wsx", "1q2w3e4r", "1q2w3e4r5t",
    "qweasdzxc", "abc123", "abcd1234", "abcdef", "abcdefgh", "abcdefghijklmnop",
    "abcdefghijklmnopqrstuvwxyz",
    # words
    "password", "password1", "password12", "password123", "password1234", "passw0rd", "p@ssw0rd",
    "passwordpassword", "pass", "pass123", "passpass", "letmein", "letmein123", "welcome",
    "welcome1", "welcome123", "hello", "hello123", "iloveyou", "iloveyouiloveyou", "trustno1",
    "monkey", "dragon", "master", "shadow", "sunshine", "princess", "football", "baseball",
    "superman", "batman", "starwars", "whatever", "freedom", "mustang", "michael", "secret",
    "secret123", "mysecret", "supersecret", "topsecret", "opensesame", "login", "access", "default",
    "guest", "test", "test123", "testing", "testtest", "demo", "example", "sample", "admin",
    "admin123", "administrator", "root", "toor", "changeme", "changethis",
    "correcthorsebatterystaple",
    # this project's own words
    "sessions", "tarantool", "apikey", "token", "bearer",
)
# fmt: on


def _drop(value: str, characters: str) -> str:
    return value.translate({ord(c): None for c in characters})


_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def length(value: str) -> int:
    """Characters that are not spaces."""
    return len(_drop(value, SPACES))


def folded(value: str) -> str:
    """Without spaces and punctuation, ASCII letters in lower case."""
    return _drop(value, SPACES + PUNCTUATION).translate(_LOWER)


_COMMON = frozenset(folded(word) for word in COMMON)


def is_weak(value: str) -> bool:
    """Whether an API key or password must be refused (see the module's docstring)."""
    plain = folded(value)
    return length(value) < MIN_LENGTH or plain.startswith(SAMPLE_PREFIX) or plain in _COMMON


def _lua_string(text: str) -> str:
    """A Lua string literal of `text`'s UTF-8 bytes, printable ASCII as it is."""
    out = []
    for byte in text.encode():
        char = chr(byte)
        out.append(char if 0x20 <= byte < 0x7F and char not in "'\\" else f"\\{byte}")
    return "'" + "".join(out) + "'"


def _parts(text: str, width: int) -> list[str]:
    """`text` cut after spaces into pieces of at most about `width` characters."""
    parts, part = [], ""
    for word in text.split(" "):
        if part and len(part) + len(word) > width:
            parts.append(part)
            part = ""
        part += word + " "
    return [*parts, part[:-1]]


def _wrapped(items: list[str], indent: str, width: int = 100) -> list[str]:
    lines, line = [], indent
    for item in items:
        if len(line) + len(item) + 2 > width and line.strip():
            lines.append(line.rstrip())
            line = indent
        line += item + ", "
    if line.strip():
        lines.append(line.rstrip())
    return lines


def lua_module() -> str:
    """The text of tarantool/sessions/weak_secrets.lua."""
    common = [f"[{_lua_string(word)}] = true" for word in sorted(_COMMON)]
    return "\n".join(
        [
            "-- The rule for weak secrets, generated from sessions/weak_secrets.py by `make docs`: edit",
            "-- that file, not this one. sessions/secrets.lua applies it; tests/test_security.py keeps",
            "-- this file current and both sides' verdicts equal.",
            "return {",
            f"    MIN_LENGTH = {MIN_LENGTH},",
            "    RULE = " + " ..\n        ".join(_lua_string(part) for part in _parts(RULE, 80)) + ",",
            f"    SAMPLE_PREFIX = {_lua_string(SAMPLE_PREFIX)},",
            "    -- Characters that never count, each as its UTF-8 bytes.",
            "    SPACES = {",
            *_wrapped([_lua_string(c) for c in SPACES], " " * 8),
            "    },",
            "    -- Left out too when a value is compared with COMMON.",
            "    PUNCTUATION = {",
            *_wrapped([_lua_string(c) for c in PUNCTUATION], " " * 8),
            "    },",
            "    -- Common passwords, folded.",
            "    COMMON = {",
            *_wrapped(common, " " * 8),
            "    },",
            "}",
            "",
        ]
    )


if __name__ == "__main__":
    sys.stdout.write(lua_module())
