"""The API's limits and defaults, declared once: the settings, the parameter checks, the API
document and the Lua (told through the wire contract, contract.py) all read them from here."""

from __future__ import annotations

__all__ = [
    "ANSWER_PAGES",
    "BODY_COUNT",
    "DAY",
    "DEFAULT_TTL",
    "FD_RESERVE",
    "LIST_MAX",
    "MAX_CONNECTIONS",
    "MAX_TTL",
    "MAX_USER_ID",
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
