-- The ceiling of the expiry purge on this machine: how fast memtx deletes sessions with the
-- service's four indexes, with no other load, in transactions of 100 and of 1000.
-- Run: tarantool bench/delete_cost.lua   (uses a temporary directory; prints deletes/s)
local clock = require('clock')
local fio = require('fio')
local uuid = require('uuid')

local dir = fio.tempdir()
box.cfg{work_dir = dir, wal_mode = 'write', memtx_memory = 1024 * 1024 * 1024, log_level = 1}
local space = box.schema.space.create('sessions', {format = {
    {'token', 'uuid'}, {'user_id', 'unsigned'}, {'ip', 'string'},
    {'create', 'unsigned'}, {'activity', 'unsigned'}, {'extra', 'map', is_nullable = true},
}})
space:create_index('token', {type = 'hash', parts = {{'token'}}})
space:create_index('user', {unique = false, parts = {{'user_id'}, {'activity'}}})
space:create_index('ip', {unique = false, parts = {{'ip'}, {'activity'}}})
space:create_index('activity', {unique = false, parts = {{'activity'}}})

local COUNT = 300000

local function fill()
    for i = 1, COUNT, 1000 do
        box.begin()
        for _ = i, i + 999 do
            local ip = ('%d.%d.%d.%d'):format(math.random(1, 223), math.random(0, 255),
                math.random(0, 255), math.random(1, 254))
            space:insert{uuid.new(), math.random(1, 5000000), ip, 100, 100 + math.random(0, 1000), box.NULL}
        end
        box.commit()
    end
end

for _, batch in ipairs({100, 1000}) do
    fill()
    local started = clock.monotonic()
    while true do
        local tokens = {}
        for _, tuple in space.index.activity:pairs() do
            tokens[#tokens + 1] = tuple[1]
            if #tokens >= batch then
                break
            end
        end
        if #tokens == 0 then
            break
        end
        box.begin()
        for _, token in ipairs(tokens) do
            space:delete(token)
        end
        box.commit()
    end
    print(('batch %4d: %.0f deletes/s'):format(batch, COUNT / (clock.monotonic() - started)))
end
fio.rmtree(dir)
os.exit(0)
