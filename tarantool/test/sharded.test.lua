-- Unit tests of sessions/sharded.lua's guards of the seq's replica set number: the cluster
-- configuration's `numbers`, and the number a storage keeps, on an in-memory instance
-- (vshard itself is not needed: it is required only when a storage starts).
local fio = require('fio')
local json = require('json')
local here = fio.dirname(fio.abspath(debug.getinfo(1, 'S').source:sub(2)))
package.path = fio.dirname(here) .. '/?.lua;' .. package.path

local work_dir = fio.tempdir()
box.cfg{work_dir = work_dir, wal_mode = 'none', log = fio.pathjoin(work_dir, 'tarantool.log')}
local schema = require('sessions.schema')
schema.migrate({idle_ttl = 100})
local sharded = require('sessions.sharded')
local suite = require('test.cases').suite('sharded')

local A, B = 'aaaaaaaa-0000-4000-8000-000000000001', 'bbbbbbbb-0000-4000-8000-000000000002'

-- The error read_config raises for a configuration of `numbers`, or nil when it accepts it.
local function refusal(numbers)
    local path = fio.pathjoin(work_dir, 'cluster.json')
    local file = io.open(path, 'w')
    file:write(json.encode({sharding = {[A] = {replicas = {}}, [B] = {replicas = {}}}, numbers = numbers}))
    file:close()
    local ok, err = pcall(sharded.read_config, path)
    return not ok and tostring(err) or nil
end

suite.case('each replica set needs a number of its own, 1 to 256', function(test)
    test:is(refusal({[A] = 1, [B] = 2}), nil, 'two numbers are taken')
    test:ok(refusal(nil):find('no "numbers"', 1, true), 'none is refused')
    test:ok(refusal({[A] = 1}):find(B, 1, true), 'a set without one is named')
    test:ok(refusal({[A] = 3, [B] = 3}):find('the same number 3', 1, true), 'two alike are refused')
    test:ok(refusal({[A] = 0, [B] = 2}):find('1 to 256', 1, true), 'zero is refused')
    test:ok(refusal({[A] = 1, [B] = 257}):find('1 to 256', 1, true), 'past 256 is refused')
    test:ok(refusal({[A] = 1.5, [B] = 2}):find('an integer', 1, true), 'a fraction is refused')
end)

suite.case('SESSIONS_VSHARD_PASSWORD fills the uris written without credentials', function(test)
    local path = fio.pathjoin(work_dir, 'cluster.json')
    local file = io.open(path, 'w')
    file:write(json.encode({
        sharding = {[A] = {replicas = {[A] = {uri = 'storage-1:3301', master = true}}},
                    [B] = {replicas = {[B] = {uri = 'own:secret@storage-2:3301', master = true}}}},
        numbers = {[A] = 1, [B] = 2},
    }))
    file:close()
    local cluster = sharded.read_config(path)
    test:is(cluster.sharding[A].replicas[A].uri, 'storage-1:3301', 'without it, as written')
    os.setenv('SESSIONS_VSHARD_PASSWORD', 'pw-from-env')
    cluster = sharded.read_config(path)
    os.setenv('SESSIONS_VSHARD_PASSWORD', nil)
    test:is(cluster.sharding[A].replicas[A].uri, 'vshard:pw-from-env@storage-1:3301', 'filled')
    test:is(cluster.sharding[B].replicas[B].uri, 'own:secret@storage-2:3301', 'its own kept')
end)

suite.case('a storage keeps its first number and refuses another', function(test)
    sharded.use_number(7)
    local seq = schema.next_seq()
    test:is(tonumber(seq / 32 % schema.SEQ_SETS), 6, 'its seqs carry it')
    test:ok(pcall(sharded.use_number, 7), 'the same number again is taken')
    local ok, err = pcall(sharded.use_number, 8)
    test:ok(not ok and tostring(err):find('numbered with 7', 1, true),
        'another is refused: ' .. tostring(err))
    schema.set_seq_set(nil)
end)

suite.case('a single instance\'s sessions are refused; an empty data dir gets the bucket field',
    function(test)
    local space = box.space.sessions
    local function session()
        return {token = require('uuid').new(), user_id = 1, ip = '192.0.2.1', create = 1, activity = 1,
            extra = box.NULL, expires = 1, seq = schema.next_seq(), id = require('sessions.ids').make()}
    end
    space:insert(space:frommap(session()))
    local ok, err = pcall(sharded.migrate)
    test:ok(not ok and tostring(err):find('holds 1 sessions of a single instance', 1, true),
        'refused, the count said: ' .. tostring(err))
    test:is(space.index.bucket_id, nil, 'nothing changed')
    space:truncate()
    test:ok(pcall(sharded.migrate), 'empty: migrated')
    test:isnt(space.index.bucket_id, nil, 'sessions have the bucket index')
    test:isnt(box.space.idempotency.index.bucket_id, nil, 'idempotency keys too')
    local row = session()
    row.bucket_id = 1
    space:insert(space:frommap(row))
    test:ok(pcall(sharded.migrate), 'and again at the next start, with sessions now')
end)

local code = suite.run()
box.cfg{read_only = true}
fio.rmtree(work_dir)
os.exit(code)
