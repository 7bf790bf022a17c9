"""The API's limits and defaults, declared once: the settings, the parameter checks, the error
messages, the API document, the docs (`make docs` writes their values where the docs name
them: reference.py) and the Lua (told through the wire contract, contract.py) all read them
from here."""

from __future__ import annotations

__all__ = [
    "ANSWER_PAGES",
    "BODY_COUNT",
    "DAY",
    "DEFAULT_TTL",
    "EVENTS_MAX",
    "EVENTS_PAGE",
    "EVENTS_RETENTION",
    "EVENTS_WAIT_MAX",
    "FD_RESERVE",
    "LIST_MAX",
    "MAX_CONNECTIONS",
    "MAX_DEPTH",
    "MAX_KEYS",
    "MAX_TTL",
    "MAX_USER_ID",
    "WEBHOOK_LEASE",
    "shown",
]

DAY = 24 * 60 * 60
# Sessions idle this long are gone unless SESSIONS_IDLE_TTL says otherwise.
DEFAULT_TTL = 180 * DAY
# The longest idle TTL or lifetime a setting may give (a century: beyond it is a mistake).
MAX_TTL = 100 * 365 * DAY
# user_id is a positive signed 64-bit integer: what Tarantool's `unsigned` index and every
# client language's int64 hold alike.
MAX_USER_ID = 2**63 - 1
# The most sessions one page of /user or /ip holds.
LIST_MAX = 1000
# Extra data: the deepest nesting of objects and arrays in a JSON body, and the most
# top-level keys in one body (JSON or form).
MAX_DEPTH = 32
MAX_KEYS = 1024

# The event feed: how long and how many events are kept unless set, and the longest `wait` of
# one `/events` call (a long poll shorter than the usual proxies' idle timeouts).
EVENTS_RETENTION = DAY
EVENTS_MAX = 1_000_000
EVENTS_WAIT_MAX = 30
# Events in one page of `/events` without `limit` (at most LIST_MAX with it).
EVENTS_PAGE = 100
# Seconds a webhook delivery worker holds its lease without renewing it: another process
# takes over delivery this long after the holder died.
WEBHOOK_LEASE = 10

# The memory budgets of a process unless set (config.py): answers of listings in flight, in
# pages of the page budget, and request bodies, in the largest body.
ANSWER_PAGES = 32
BODY_COUNT = 64
# Connections one process keeps unless set: its file descriptor limit less FD_RESERVE (the
# Tarantool connections, the embedded Tarantool's pipes, logs, listening sockets and the
# look at /proc all take some), and never more than MAX_CONNECTIONS, which at the few KiB an
# idle connection takes keeps them to a few tens of MB.
FD_RESERVE = 64
MAX_CONNECTIONS = 10_000


def shown(value: int) -> str:
    """A limit as the docs and messages write it: 2^63-1 rather than its 19 digits."""
    if value > 2**32 and (value + 1).bit_count() == 1:
        return f"2^{(value + 1).bit_length() - 1}-1"
    return str(value)
