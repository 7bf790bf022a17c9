-- Unit tests of sessions/merge.lua: extra data merged like JSON Merge Patch at the top level.
local fio = require('fio')
local here = fio.dirname(fio.abspath(debug.getinfo(1, 'S').source:sub(2)))
package.path = fio.dirname(here) .. '/?.lua;' .. package.path
local msgpack = require('msgpack')

local merge = require('sessions.merge').merge
local suite = require('test.cases').suite('merge')

suite.case('a patch merges at the top level', function(test)
    test:is_deeply(merge(nil, {device = 'Nexus 5'}, 1024), {device = 'Nexus 5'}, 'into nothing')
    test:is_deeply(merge({a = 1, b = 2}, {b = 3, c = 4}, 1024), {a = 1, b = 3, c = 4}, 'added and replaced')
    test:is_deeply(merge({a = 1, b = 2}, {b = box.NULL}, 1024), {a = 1}, 'null removes a key')
    test:is_deeply(merge({a = {x = 1, y = 2}}, {a = {x = 5}}, 1024), {a = {x = 5}},
        'nested values are taken whole')
    test:is(msgpack.encode(merge({}, {}, 1024)), msgpack.encode(setmetatable({}, {__serialize = 'map'})),
        'an empty result is still a map')
end)

-- The limit is on the merged result's msgpack size: exactly at it passes, one byte more fails.
suite.case('the size limit is exact', function(test)
    local value = string.rep('x', 20)
    local size = #msgpack.encode(setmetatable({k = value}, {__serialize = 'map'}))
    test:ok(merge(nil, {k = value}, size) ~= nil, 'exactly the limit fits')
    local none, kind, reason = merge(nil, {k = value}, size - 1)
    test:is(none, nil, 'one byte over does not')
    test:is(kind, 'PayloadTooLarge', 'and says why')
    test:like(reason, tostring(size - 1), 'naming the limit')
end)

suite.case('a patch that is not a map is a bug of the caller', function(test)
    local _, bad = merge(nil, 'text', 1024)
    test:is(bad, 'InvalidArgument', 'refused as an invalid argument')
end)

os.exit(suite.run())
