-- Unit tests of sessions/liveness.lua: the one definition of a live session.
-- Run: tarantool tarantool/test/liveness.test.lua (tests/test_lua_units.py runs every file).
local fio = require('fio')
local here = fio.dirname(fio.abspath(debug.getinfo(1, 'S').source:sub(2)))
package.path = fio.dirname(here) .. '/?.lua;' .. package.path

local F = require('sessions.fields')
local clock = require('sessions.clock')
local liveness = require('sessions.liveness')
local suite = require('test.cases').suite('liveness')

local NOW = 1700000000
clock.freeze(NOW)

-- A session row as the procedures see it, by field name.
local function row(fields)
    local tuple = {}
    for name, value in pairs(fields) do
        tuple[F[name:upper()]] = value
    end
    return tuple
end

local function rules(ttl, lifetime, cap, since)
    return {ttl = ttl, lifetime = lifetime or 0, cap = cap or 0, since = since}
end

local idle = rules(100)

-- Idle exactly ttl seconds is live; one more is gone.
suite.case('idle exactly ttl is live, one more second is not', function(test)
    test:ok(liveness.is_live(row{create = NOW - 500, activity = NOW - 100, expires = NOW}, idle),
        'idle ttl: live')
    test:ok(not liveness.is_live(row{create = NOW - 500, activity = NOW - 101, expires = NOW}, idle),
        'idle ttl + 1: gone')
end)

-- A session's own ttl counts when it is the shorter one, never when it is longer.
suite.case('a session\'s own ttl counts only when shorter', function(test)
    test:ok(liveness.is_live(row{create = NOW - 60, activity = NOW - 60, ttl = 60, expires = NOW}, idle),
        'own ttl: live')
    test:ok(not liveness.is_live(row{create = NOW - 61, activity = NOW - 61, ttl = 60, expires = NOW}, idle),
        'own ttl + 1: gone')
    test:is(liveness.deadline_of(NOW, NOW, 1000, idle), NOW + 100,
        'a longer own ttl is bounded by the service')
end)

-- The lifetime ends a busy session exactly `lifetime` after it was opened.
suite.case('the lifetime ends a busy session', function(test)
    local lifetime = rules(100, 500)
    test:ok(liveness.is_live(row{create = NOW - 500, activity = NOW, expires = NOW}, lifetime),
        'lifetime: live')
    test:ok(not liveness.is_live(row{create = NOW - 501, activity = NOW, expires = NOW}, lifetime),
        'lifetime + 1: gone')
    test:is(liveness.deadline_of(NOW, NOW, nil, rules(100, 0)), NOW + 100, 'lifetime 0 is no limit')
end)

-- Lapsed is final: a stored expiry before the rules took force is gone under any rules.
suite.case('lapsed is final', function(test)
    local changed = rules(1000, 0, 0, NOW - 10)
    test:ok(not liveness.is_live(row{create = NOW - 50, activity = NOW - 50, expires = NOW - 11}, changed),
        'expired before the rules changed: gone')
    test:ok(liveness.is_live(row{create = NOW - 50, activity = NOW - 50, expires = NOW - 10}, changed),
        'expired as the rules changed: live')
end)

-- The shape of the rules the procedures accept.
suite.case('the shape of the rules the procedures accept', function(test)
    test:ok(liveness.valid(rules(1)), 'ttl 1 is valid')
    test:ok(not liveness.valid(rules(0)), 'ttl 0 is not')
    test:ok(not liveness.valid(rules(100, -1)), 'a negative lifetime is not')
    test:ok(not liveness.valid(rules(100, 0, -1)), 'a negative cap is not')
    test:ok(not liveness.valid({100, 0, 0}), 'an array is not')
    test:is_deeply(liveness.FIELDS, {'ttl', 'lifetime', 'cap'}, 'the fields the service sends')
end)

os.exit(suite.run())
