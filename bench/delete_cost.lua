-- The ceiling of the expiry purge on this machine: how fast the purge code deletes sessions
-- from the real schema when nothing else runs, in transactions of 100 (the fiber's) and 1000.
-- Run from the repository root: tarantool bench/delete_cost.lua   (prints deletes/s)
local clock = require('clock')
local fio = require('fio')
local uuid = require('uuid')

local root = fio.dirname(fio.dirname(fio.abspath(debug.getinfo(1, 'S').source:sub(2))))
package.path = root .. '/tarantool/?.lua;' .. package.path

local dir = fio.tempdir()
box.cfg{work_dir = dir, wal_mode = 'write', memtx_memory = 1024 * 1024 * 1024, log_level = 1}
require('sessions.schema').migrate()
local purge_batch = require('sessions.expiry').purge_batch
local space = box.space.sessions

local COUNT = 300000

local function fill()
    for i = 1, COUNT, 1000 do
        box.begin()
        for _ = i, i + 999 do
            local ip = ('%d.%d.%d.%d'):format(math.random(1, 223), math.random(0, 255),
                math.random(0, 255), math.random(1, 254))
            local activity = 100 + math.random(0, 1000)
            space:insert(space:frommap({token = uuid.new(), user_id = math.random(1, 5000000), ip = ip,
                create = 100, activity = activity, expires = activity + 1,
                seq = require('sessions.schema').next_seq(), id = require('sessions.ids').make()}))
        end
        box.commit()
    end
end

for _, batch in ipairs({100, 1000}) do
    fill()
    local started = clock.monotonic()
    -- Every session lapsed long ago under a one-second TTL.
    while select(2, purge_batch(space, {ttl = 1, lifetime = 0, cap = 0}, batch)) > 0 do end
    print(('batch %4d: %.0f deletes/s'):format(batch, COUNT / (clock.monotonic() - started)))
end
fio.rmtree(dir)
os.exit(0)
