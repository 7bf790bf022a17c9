-- What the event feed costs Tarantool: `new`, `delete` and `get` through the procedures as
-- the service calls them (batches of 16 from 8 fibers at once, WAL mode write), with the feed
-- off and on in alternating turns, in one instance. The service's own share of a request
-- (HTTP, JSON) does not change with the feed; `make bench`'s events.py measures the whole.
-- Run from the repository root: tarantool bench/events_cost.lua   (prints JSON and ratios)
local clock = require('clock')
local fiber = require('fiber')
local fio = require('fio')
local json = require('json')

local root = fio.dirname(fio.dirname(fio.abspath(debug.getinfo(1, 'S').source:sub(2))))
package.path = root .. '/tarantool/?.lua;' .. package.path

local dir = fio.tempdir()
box.cfg{work_dir = dir, wal_mode = 'write', memtx_memory = 1024 * 1024 * 1024, log_level = 1}
require('sessions.schema').migrate()
local sessions = require('sessions.procedures')
require('sessions.events').start()

local FIBERS, BATCH, PER_TURN, TURNS = 8, 16, 40000, 5
local serial = 0

local function token()
    serial = serial + 1
    local bytes = {}
    local n = serial
    for i = 16, 9, -1 do
        bytes[i] = string.char(n % 256)
        n = math.floor(n / 256)
    end
    return ('\64'):rep(8) .. table.concat(bytes, '', 9, 16)
end

local function context(on)
    return {
        rules = {ttl = 86400, lifetime = 0, cap = 0},
        deadline = fiber.time() + 600,
        extra_max = 1024,
        events = on and {keep = 86400, most = 100000000} or nil,
    }
end

-- `PER_TURN` calls of `operation`, items made by `item(i)`, from FIBERS fibers; calls/s.
local function turn(operation, item, on)
    local done = fiber.channel(FIBERS)
    local started = clock.monotonic()
    for f = 1, FIBERS do
        fiber.create(function()
            local ctx = context(on)
            for first = f, PER_TURN, FIBERS * BATCH do
                local items = {}
                for i = first, math.min(first + (BATCH - 1) * FIBERS, PER_TURN), FIBERS do
                    items[#items + 1] = item(i)
                end
                sessions.batch(operation, items, ctx)
            end
            done:put(true)
        end)
    end
    for _ = 1, FIBERS do
        done:get()
    end
    return PER_TURN / (clock.monotonic() - started)
end

local rates = {}
local function record(name, on, rate)
    local key = name .. (on and '_on' or '_off')
    rates[key] = rates[key] or {}
    table.insert(rates[key], rate)
end

local function median(list)
    local sorted = table.copy(list)
    table.sort(sorted)
    return sorted[math.ceil(#sorted / 2)]
end

for _ = 1, TURNS do
    for _, on in ipairs({false, true}) do
        local opened = {}
        record('new', on, turn('new', function(i)
            local made = token()
            opened[i] = made
            return {token = made, user_id = i, ip = '192.0.2.1'}
        end, on))
        local texts = {}
        for i, made in ipairs(opened) do
            texts[i] = require('uuid').frombin(made, 'b'):str()
        end
        record('get', on, turn('get', function(i) return {token = texts[i]} end, on))
        record('delete', on, turn('delete', function(i) return {token = texts[i]} end, on))
    end
end

local result = {}
for _, name in ipairs({'new', 'delete', 'get'}) do
    local off, on = median(rates[name .. '_off']), median(rates[name .. '_on'])
    result[name] = {
        off = math.floor(off), on = math.floor(on), on_over_off = math.floor(on / off * 1000) / 1000,
    }
end
print(json.encode(result))
for _, name in ipairs({'new', 'delete', 'get'}) do
    local ratio = result[name].on_over_off
    print(('%s with the feed on against off, in Tarantool: %.2fx the calls/s'):format(name, ratio))
end
-- The WAL thread may still rotate its file: quiet, then gone.
box.cfg{log_level = 0}
fio.rmtree(dir)
os.exit(0)
