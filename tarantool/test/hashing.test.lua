-- Unit tests of sessions/hashing.lua: the store's kind of key, and the one-way conversion of
-- plain tokens to their hashes, resumed where a cut one stopped, on an in-memory instance.
local fio = require('fio')
local here = fio.dirname(fio.abspath(debug.getinfo(1, 'S').source:sub(2)))
package.path = fio.dirname(here) .. '/?.lua;' .. package.path
local fiber = require('fiber')
local uuid = require('uuid')

local work_dir = fio.tempdir()
box.cfg{work_dir = work_dir, wal_mode = 'none', log = fio.pathjoin(work_dir, 'tarantool.log')}
local schema = require('sessions.schema')
schema.migrate({idle_ttl = 100})
local F = require('sessions.fields')
local clock = require('sessions.clock')
local hashing = require('sessions.hashing')
local sessions = require('sessions.procedures')
local suite = require('test.cases').suite('hashing')

local NOW = 1700000000

local function context(mode)
    return {rules = {ttl = 100, lifetime = 0, cap = 0}, deadline = fiber.time() + 60, extra_max = 1024,
            token_storage = mode or 'plain'}
end

local function new(seconds, idem)
    clock.freeze(NOW + seconds)
    local token = uuid.new()
    local args = {token = token:bin('b'), user_id = 1, ip = '192.0.2.1', idem = idem}
    local reply = sessions.batch('new', {args}, context())[1]
    return token, reply.session[F.ID]
end

suite.case('an empty store is claimed by a hashing service; a plain one is not', function(test)
    test:is(hashing.stored(), 'empty', 'no session, no mark: empty')
    new(0)
    test:is(hashing.stored(), 'plain', 'sessions under their tokens: plain')
    test:is(hashing.claim(), 'plain', 'a hashing service cannot claim it')
    box.space.sessions:truncate()
end)

suite.case('convert re-keys every session and idempotency key once, also after a cut', function(test)
    local tokens, ids = {}, {}
    for i = 1, 3 do
        tokens[i], ids[i] = new(i, i == 3 and {key = 'k', fingerprint = 'f', window = 3600} or nil)
    end
    -- A conversion cut after its first batch (of one session, here): that one re-keyed and
    -- the progress kept with it, in one transaction.
    local first = box.space.sessions:get(tokens[1])
    box.begin()
    box.space.sessions:delete(tokens[1])
    box.space.sessions:insert(first:update({{'=', F.TOKEN, hashing.key_of(tokens[1])}}))
    box.space[schema.STATE]:replace{'token_storage_converting', ids[1]}
    box.commit()
    test:is(hashing.stored(), 'converting', 'a cut conversion says so')
    test:is(hashing.convert(), 2, 'run again, it converts the other two')
    test:is(hashing.stored(), 'hash', 'and marks the store')
    for i = 1, 3 do
        local tuple = box.space.sessions:get(hashing.key_of(tokens[i]))
        test:is(tuple and tuple[F.ID]:str(), ids[i], 'session ' .. i .. ' under its key, hashed once')
        test:is(box.space.sessions:get(tokens[i]), nil, 'and not under its token')
    end
    test:is(box.space.idempotency:get('1 k').token, hashing.key_of(tokens[3]), 'the key names the hashed one')
    test:is(hashing.convert(), 0, 'a third run changes nothing')
    test:is(hashing.claim(), 'hash', 'a hashed store stays one')
end)

suite.case('a key is the SHA-256 of the token, 16 bytes, variant bits set', function(test)
    local token = uuid.fromstr('61494096-9af7-49ba-9fb4-e89c0811e6d3')
    local digest = require('digest').sha256(token:bin('b'))
    local key = hashing.key_of(token):bin('b')
    test:is(key:sub(1, 8) .. key:sub(10, 16), digest:sub(1, 8) .. digest:sub(10, 16), 'its bytes but one')
    test:is(key:byte(9), 128 + digest:byte(9) % 64, 'and that one with the RFC variant')
end)

-- The error a call raised: its type and message.
local function refusal(fn, ...)
    local ok, err = pcall(fn, ...)
    if ok then
        return nil
    end
    return err.type, err.message
end

suite.case('every call is refused to a service that keeps tokens another way than the store', function(test)
    box.space.sessions:truncate()
    box.space[schema.STATE]:truncate()
    local count = {kind = 'user', key = 1}
    local get = {{token = uuid.new():bin('b')}}
    test:is(refusal(sessions.call, 'count', count, context('plain')), nil, 'an empty store answers plain')
    test:is(refusal(sessions.batch, 'get', get, context('hash')), nil, 'and hash, which claims it')
    test:is(hashing.stored(), 'hash', 'marked by that call')
    local kind, message = refusal(sessions.batch, 'get', get, context('plain'))
    test:is(kind, 'TokenStorageMismatch', 'then a plain batch is refused')
    test:ok(message:find('SESSIONS_TOKEN_STORAGE=hash', 1, true), 'naming the setting: ' .. message)
    kind = refusal(sessions.call, 'count', count, context('plain'))
    test:is(kind, 'TokenStorageMismatch', 'and a plain call')
    local stored = sessions.call('token_storage', {mode = 'plain'}, context('plain')).stored
    test:is(stored, 'hash', 'token_storage answers either, to say why')
    box.space[schema.STATE]:truncate()
    new(0)
    kind, message = refusal(sessions.call, 'count', count, context('hash'))
    test:is(kind, 'TokenStorageMismatch', 'a plain store refuses a hashing call')
    test:ok(message:find('SESSIONS_TOKEN_STORAGE=plain', 1, true), 'naming the setting: ' .. message)
    box.space[schema.STATE]:replace{'token_storage_converting', uuid.new():str()}
    for _, mode in ipairs({'plain', 'hash'}) do
        kind, message = refusal(sessions.batch, 'get', get, context(mode))
        test:is(kind, 'TokenStorageMismatch', 'a conversion under way refuses ' .. mode)
        test:ok(message:find('convert-tokens', 1, true), 'naming the command: ' .. message)
    end
    box.space[schema.STATE]:truncate()
    box.space.sessions:truncate()
end)

local code = suite.run()
box.cfg{read_only = true}
fio.rmtree(work_dir)
os.exit(code)
