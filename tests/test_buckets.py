"""The sharded mode's token layout and bucket placement (sessions/buckets.py and
tarantool/sessions/buckets.lua): pure functions, each side's, and that the two agree."""

from __future__ import annotations

import collections
import json
import math
import random
import subprocess
import uuid
from pathlib import Path

import pytest

from sessions.buckets import bucket_of_token, bucket_of_user, with_bucket
from sessions.contract import BUCKETS
from sessions.limits import MAX_USER_ID
from sessions.storage import new_token

ROOT = Path(__file__).resolve().parent.parent
# The version nibble and the variant bits of a UUID v4, in its integer.
_FIXED_UUID = uuid.UUID("00000000-0000-f000-c000-000000000000").int
_BUCKET_MASK = ((1 << BUCKETS.bits) - 1) << BUCKETS.shift


def test_a_sharded_token_is_a_canonical_uuid_v4_with_its_bucket_in_the_declared_bits():
    for bucket in [1, 2, 255, 256, 2048, BUCKETS.count - 1, BUCKETS.count]:
        raw = new_token(bucket)
        token = uuid.UUID(bytes=raw)
        assert token.version == 4 and token.variant == uuid.RFC_4122
        text = str(token)
        assert uuid.UUID(text) == token and text == text.lower()
        assert bucket_of_token(raw) == bucket_of_token(text) == bucket_of_token(text.upper()) == bucket
        # The third group reads `4` and the bucket id minus one, in hex.
        assert text[14] == "4" and int(text[15:18], 16) == bucket - 1
        assert (token.int & _BUCKET_MASK) >> BUCKETS.shift == bucket - 1


def test_the_bucket_bits_do_not_overlap_the_version_and_variant_bits():
    assert _FIXED_UUID & _BUCKET_MASK == 0
    # Every bucket id fits, and every value of the bits is a bucket (no token to refuse).
    assert BUCKETS.count == 1 << BUCKETS.bits


def test_with_bucket_rewrites_only_the_bucket_bits_and_refuses_a_bucket_out_of_range():
    raw = new_token()
    for bucket in range(1, BUCKETS.count + 1):
        moved = with_bucket(raw, bucket)
        assert bucket_of_token(moved) == bucket
        changed = int.from_bytes(moved, "big") ^ int.from_bytes(raw, "big")
        assert changed & ~_BUCKET_MASK == 0
    for wrong in (0, -1, BUCKETS.count + 1):
        with pytest.raises(ValueError, match="bucket id"):
            with_bucket(raw, wrong)


def test_a_sharded_token_keeps_110_random_bits():
    fixed = _FIXED_UUID | _BUCKET_MASK
    random_bits = 128 - bin(fixed).count("1")
    assert random_bits == 110 >= 100
    # Each of them is 1 in about half of 100 000 tokens of one bucket (within 6 standard
    # deviations, as tests/test_security.py checks the 122 of a plain token), and the fixed
    # ones never vary.
    count = 100_000
    raw = [new_token(1234) for _ in range(count)]
    assert len(set(raw)) == count
    bound = 6 * math.sqrt(count) / 2
    joined = b"".join(raw)
    varying = 0
    for position in range(16):
        seen = collections.Counter(joined[position::16])
        for shift in range(8):
            bit = (15 - position) * 8 + shift
            ones = sum(times for value, times in seen.items() if value >> shift & 1)
            if fixed >> bit & 1:
                assert ones in (0, count), bit
                continue
            varying += 1
            assert abs(ones - count / 2) < bound, (bit, ones)
    assert varying == random_bits


def test_a_users_bucket_is_stable():
    # Tokens name buckets for as long as they live, and a cluster's buckets hold users by
    # this function: a change to it is a change of the wire contract (these are its values).
    assert [bucket_of_user(user_id) for user_id in (1, 2, 3, 10**12, MAX_USER_ID)] == [
        628,
        3643,
        134,
        2469,
        3121,
    ]


def test_users_spread_over_the_buckets_and_two_replica_sets_within_ten_percent():
    # The check at the level of placement: 20,000 sessions of 2,000 users, each
    # replica set of two holding half of the buckets, split within 10 %.
    users = random.Random(29).sample(range(1, 10**9), 2000)
    per_set = collections.Counter(bucket_of_user(user) > BUCKETS.count // 2 for user in users)
    sessions = {half: times * 10 for half, times in per_set.items()}
    assert abs(sessions[True] - sessions[False]) <= 0.1 * 20_000 / 2, sessions
    # Consecutive ids too, and every bucket is in range.
    seen = collections.Counter(bucket_of_user(user) for user in range(1, 40_961))
    assert min(seen) >= 1 and max(seen) <= BUCKETS.count
    assert len(seen) > 0.99 * BUCKETS.count


_LUA = """
local fio = require('fio')
package.path = fio.pathjoin(arg[1], 'tarantool', '?.lua;') .. package.path
local json = require('json')
local buckets = require('sessions.buckets')
local input = json.decode(io.read('*a'))
local users, texts, raws = {}, {}, {}
for i, user in ipairs(input.users) do users[i] = buckets.of_user(user) end
for i, text in ipairs(input.texts) do texts[i] = buckets.of_token(text) end
for i, hex in ipairs(input.raws) do
    raws[i] = buckets.of_token(hex:gsub('..', function(h) return string.char(tonumber(h, 16)) end))
end
local uuids = {}
for i, text in ipairs(input.texts) do uuids[i] = buckets.of_token(require('uuid').fromstr(text)) end
print(json.encode({
    users = users, texts = texts, raws = raws, uuids = uuids,
    described = buckets.described(), not_tokens = {buckets.of_token('nope'), buckets.of_token(12)},
}))
"""


@pytest.mark.each_release
def test_the_lua_places_users_and_reads_tokens_as_the_service_does(tmp_path, tarantool_bin):
    rng = random.Random(7)
    # Large ids reach Lua as 64-bit integers (cdata), as from msgpack: json decodes them so too.
    users = [
        1,
        2,
        3,
        2**31,
        2**53 - 1,
        2**53 + 1,
        MAX_USER_ID,
        *(rng.randrange(1, MAX_USER_ID) for _ in range(500)),
    ]
    tokens = [new_token(rng.randint(1, BUCKETS.count)) for _ in range(500)]
    script = tmp_path / "buckets.lua"
    script.write_text(_LUA)
    source = json.dumps(
        {
            "users": users,
            "texts": [str(uuid.UUID(bytes=t)) for t in tokens],
            "raws": [t.hex() for t in tokens],
        }
    )
    done = subprocess.run(
        [tarantool_bin, str(script), str(ROOT)], input=source, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["described"] == BUCKETS.wire()
    assert answer["users"] == [bucket_of_user(user) for user in users]
    expected = [bucket_of_token(token) for token in tokens]
    assert answer["texts"] == answer["raws"] == answer["uuids"] == expected
    assert answer["not_tokens"] == []
