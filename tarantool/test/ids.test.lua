-- Unit tests of sessions/ids.lua: session ids as UUIDv7, made without a running box.
-- Run: tarantool tarantool/test/ids.test.lua (tests/test_lua_units.py runs every file).
local fio = require('fio')
local here = fio.dirname(fio.abspath(debug.getinfo(1, 'S').source:sub(2)))
package.path = fio.dirname(here) .. '/?.lua;' .. package.path

local ids = require('sessions.ids')
local suite = require('test.cases').suite('ids')

local MS = 1700000000123

suite.case('an id is a UUID of version 7 and the RFC variant, in the 8-4-4-4-12 form', function(test)
    for _ = 1, 200 do
        local text = ids.make(MS):str()
        local form = '^%x%x%x%x%x%x%x%x%-%x%x%x%x%-7%x%x%x%-[89ab]%x%x%x%-' .. ('%x'):rep(12) .. '$'
        if not text:match(form) then
            test:fail('not a UUIDv7: ' .. text)
            return
        end
    end
    test:ok(true, '200 ids: version nibble 7, variant bits 10')
    local made = ids.make(MS)
    test:is(ids.parse(made:str()), made, 'parse reads what make made')
end)

suite.case('its first 48 bits are the Unix milliseconds it was made at', function(test)
    test:is(ids.ms_of(ids.make(MS)), MS, 'milliseconds kept exactly')
    test:is(ids.make(MS):str():sub(1, 13), '018bcfe5-687b', 'big-endian, first in the text')
    test:is(ids.ms_of(ids.make(0)), 0, 'the epoch')
    test:is(ids.ms_of(ids.make(2 ^ 48 - 1)), 2 ^ 48 - 1, 'the last millisecond 48 bits hold')
    local now = ids.ms_of(ids.make())
    test:ok(math.abs(now - require('fiber').time() * 1000) < 5000, 'without a time: now')
end)

suite.case('ids sort by the millisecond they were made at, as text and as uuids', function(test)
    local earlier, later = ids.make(MS), ids.make(MS + 1)
    test:ok(earlier:str() < later:str(), 'one millisecond later sorts after, as text')
    test:ok(earlier:bin('b') < later:bin('b'), 'and as bytes (the order of the id index)')
    local ordered = true
    for step = 0, 99 do
        if ids.make(MS + step * 1000):str() >= ids.make(MS + step * 1000 + 1):str() then
            ordered = false
        end
    end
    test:ok(ordered, 'across 100 seconds, each pair in order')
end)

suite.case('two ids of the same millisecond differ (74 random bits)', function(test)
    local seen, clashes = {}, 0
    for _ = 1, 10000 do
        local text = ids.make(MS):str()
        if seen[text] then
            clashes = clashes + 1
        end
        seen[text] = true
    end
    test:is(clashes, 0, '10000 ids of one millisecond, all different')
end)

suite.case('parse takes a UUID text, and nothing else', function(test)
    test:is(ids.parse('not an id'), nil, 'junk')
    test:is(ids.parse(42), nil, 'not a string')
    test:ok(ids.parse('019ae3b2-5c1e-7b4a-9d2f-3a6c8e1f0b24') ~= nil, 'a UUID')
end)

os.exit(suite.run())
