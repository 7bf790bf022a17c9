"""The sharded mode's placement, as this side computes it: a user's bucket, and a token that
carries its session's bucket (contract.Buckets: the count and the bits), so that `get`,
`delete` and `rotate` reach the one replica set that holds the session without a lookup.

tarantool/sessions/buckets.lua computes the same; tests/test_buckets.py compares the two.

Tokens are made here (storage.new_token), never in Lua. With SESSIONS_TOKEN_STORAGE=hash,
Tarantool gets a token's key (storage.token_key, a hash) in its place, which has lost these
bits: the bucket can only be read from the token itself, before it is hashed, so in that
mode it is this side that must tell the router each item's bucket. A rotated session keeps
its bucket (the new token is made with the old one's).
"""

from __future__ import annotations

import hashlib
import uuid

from .contract import BUCKETS

__all__ = ["bucket_of_token", "bucket_of_user", "with_bucket"]

_MASK = (1 << BUCKETS.bits) - 1


def bucket_of_user(user_id: int) -> int:
    """The bucket of a user's sessions, 1 to BUCKETS.count: the first four bytes of the
    SHA-256 of the user id's decimal digits, big-endian, modulo the count, plus one (vshard
    numbers buckets from 1). A hash, not the id itself, so that consecutive ids spread over
    the buckets; of its text, so that Lua, which holds a large id as a 64-bit integer apart
    from its numbers, hashes the same bytes."""
    digest = hashlib.sha256(str(user_id).encode()).digest()
    return int.from_bytes(digest[:4], "big") % BUCKETS.count + 1


def with_bucket(raw: bytes, bucket: int) -> bytes:
    """The 16 bytes of a token, `raw`, with the bucket id written into its bucket bits."""
    if not 1 <= bucket <= BUCKETS.count:
        raise ValueError(f"a bucket id is 1 to {BUCKETS.count}, not {bucket}")
    value = int.from_bytes(raw, "big") & ~(_MASK << BUCKETS.shift)
    return (value | (bucket - 1) << BUCKETS.shift).to_bytes(16, "big")


def bucket_of_token(token: bytes | str) -> int:
    """The bucket a token (16 bytes, or its text) names."""
    value = int.from_bytes(token, "big") if isinstance(token, bytes) else uuid.UUID(token).int
    return (value >> BUCKETS.shift & _MASK) + 1
