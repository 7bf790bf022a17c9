-- Unit tests of the operations (sessions/operations/) through the procedures the service
-- calls (sessions/procedures.lua), and of the purge in sessions/expiry.lua, on an in-memory
-- instance of their own (a temporary directory, no WAL, nothing listening), called as the
-- service calls them: named arguments and a context map.
local fio = require('fio')
local here = fio.dirname(fio.abspath(debug.getinfo(1, 'S').source:sub(2)))
package.path = fio.dirname(here) .. '/?.lua;' .. package.path
local fiber = require('fiber')
local uuid = require('uuid')

local work_dir = fio.tempdir()
box.cfg{work_dir = work_dir, wal_mode = 'none', log = fio.pathjoin(work_dir, 'tarantool.log')}
require('sessions.schema').migrate({idle_ttl = 100})
local F = require('sessions.fields')
local clock = require('sessions.clock')
local expiry = require('sessions.expiry')
local sessions = require('sessions.procedures')
local suite = require('test.cases').suite('procedures')

local NOW = 1700000000
clock.freeze(NOW)

local function context(ttl, cap)
    local rules = {ttl = ttl or 100, lifetime = 0, cap = cap or 0}
    return {rules = rules, deadline = fiber.time() + 60, extra_max = 1024, token_storage = 'plain'}
end

local serial = 0
local function token()
    serial = serial + 1
    return ('\64'):rep(12) .. string.char(0, 0, math.floor(serial / 256), serial % 256)
end

local function new(user_id, ip, extra)
    return sessions.batch('new', {{token = token(), user_id = user_id, ip = ip, patch = extra}}, context())[1]
end

local function count(kind, key)
    return sessions.call('count', {kind = kind, key = key}, context()).count
end

local text

suite.case('new and get, as the service calls them', function(test)
    local opened = new(1, '192.0.2.1', {device = 'Nexus 5'})
    text = opened.session[F.TOKEN]
    test:is(opened.session[F.USER_ID], 1, 'new opens a session')
    test:is(opened.session[F.EXTRA].device, 'Nexus 5', 'with its extra data')
    local got = sessions.batch('get', {{token = text, ip = '192.0.2.2'}}, context())[1]
    test:is(got.session[F.IP], '192.0.2.2', 'get moves it to a new address')
    test:is(got.untouched, nil, 'and records its activity')
end)

suite.case('every item of a batch answers alone', function(test)
    local replies = sessions.batch('get', {
        {token = '00000000-0000-4000-8000-000000000000'},
        {token = text},
        {token = text, patch = 'not a map'},
    }, context())
    test:is(next(replies[1]), nil, 'an unknown token is an empty reply')
    test:is(replies[2].session[F.TOKEN], text, 'a known one its session')
    test:is(replies[3].error.type, 'InvalidArgument', 'a bad argument an error of its own')
    local described = {}
    for name in pairs(replies[3].error) do
        described[#described + 1] = name
    end
    table.sort(described)
    test:is_deeply(described, {'code', 'message', 'type'}, 'of the shape describe() gives')
end)

suite.case('idle exactly ttl is live for get; ttl + 1 is gone, and deleted', function(test)
    clock.freeze(NOW + 100)
    test:ok(sessions.batch('get', {{token = text}}, context())[1].session ~= nil, 'idle ttl: live')
    clock.freeze(NOW + 201)
    test:is(next(sessions.batch('get', {{token = text}}, context())[1]), nil, 'idle ttl + 1: gone')
    test:is(box.space.sessions:len(), 0, 'and deleted')
    clock.freeze(NOW)
end)

suite.case('listings page newest opened first, and a page ends at limit', function(test)
    for _ = 1, 5 do
        new(2, '192.0.2.9')
    end
    local args = {kind = 'user', key = 2, limit = 2, page_bytes = 1048576}
    local page = sessions.call('list', args, context())
    test:is(#page.sessions, 2, 'a page holds `limit` sessions')
    test:ok(page.more, 'and says more follow')
    test:ok(page.sessions[1][F.SEQ] > page.sessions[2][F.SEQ], 'newest opened first')
    args.after, args.limit = page.last, 10
    local rest = sessions.call('list', args, context())
    test:is(#rest.sessions, 3, 'the next page starts after the last one')
    test:ok(not rest.more, 'and is the last')
end)

suite.case('the cap ends the least recently active sessions with the new one', function(test)
    sessions.batch('new', {{token = token(), user_id = 2, ip = '192.0.2.9'}}, context(100, 3))
    test:is(box.space.sessions.index.user:count({2}), 3, 'a cap of 3 leaves 3')
end)

suite.case('an idempotency key is its user\'s; one kept before that answers its own user only', function(test)
    local function keyed(user_id, key, fingerprint)
        local idem = {key = key, fingerprint = fingerprint, window = 3600}
        return sessions.batch('new', {{token = token(), user_id = user_id, ip = '198.51.100.4', idem = idem}},
            context())[1]
    end
    local first = keyed(41, 'k1', 'f41')
    test:is(keyed(41, 'k1', 'f41').session[F.TOKEN], first.session[F.TOKEN], 'a repeat answers the session')
    test:is(keyed(41, 'k1', 'other').error.type, 'IdempotencyConflict', 'other parameters conflict')
    local theirs = keyed(42, 'k1', 'f42')
    test:isnt(theirs.session[F.TOKEN], first.session[F.TOKEN], 'another user\'s same key is its own')
    test:isnt(box.space.idempotency:get('41 k1'), nil, 'kept as "<user_id> <key>"')
    local big = 9007199254740993ULL  -- above 2^53: msgpack hands such ids over as cdata
    test:is(keyed(big, 'k1', 'fbig').session[F.USER_ID], big, 'a 64-bit user id keys too')
    test:isnt(box.space.idempotency:get('9007199254740993 k1'), nil, 'by its digits')
    -- An entry of the release before, under the key alone.
    local old = keyed(43, 'prior', 'f43')
    box.space.idempotency:delete('43 prior')
    local entry = {'legacy', 'f43', uuid.fromstr(old.session[F.TOKEN]), NOW + 3600}
    box.space.idempotency:insert(entry)
    test:is(keyed(43, 'legacy', 'f43').session[F.TOKEN], old.session[F.TOKEN], 'its own user\'s repeat')
    test:isnt(keyed(44, 'legacy', 'f44').session[F.TOKEN], old.session[F.TOKEN], 'another user is new')
    local plain = keyed(45, 'abc', 'f45')
    test:isnt(keyed(45, '45/abc', 'f45').session[F.TOKEN], plain.session[F.TOKEN],
        'a key that spells another of the user\'s, scoped, is a key of its own')
    for _, user_id in ipairs({41, 42, 43, 44, 45, big}) do  -- the later cases count the store's sessions
        for _, tuple in ipairs(box.space.sessions.index.user:select({user_id})) do
            box.space.sessions:delete(tuple[F.TOKEN])
        end
    end
    box.space.idempotency:truncate()
end)

suite.case('count: the live sessions of one user or address, exactly at the idle TTL boundary', function(test)
    new(7, '192.0.2.7')
    test:is(count('user', 2), 3, 'the live sessions of the user')
    test:is(count('ip', '192.0.2.9'), 3, 'the live sessions of the address')
    clock.freeze(NOW + 100)
    test:is(count('user', 2), 3, 'idle ttl is live')
    test:is(count('ip', '192.0.2.9'), 3, 'idle ttl is live at the address')
    clock.freeze(NOW + 101)
    test:is(count('user', 2), 0, 'idle ttl + 1 is not')
    test:is(count('ip', '192.0.2.9'), 0, 'idle ttl + 1 is not at the address')
    clock.freeze(NOW)
    local ok, err = pcall(sessions.call, 'count', {kind = 'ip', key = 7}, context())
    test:ok(not ok and tostring(err):find('ip must be a string'), 'an address is a string')
    sessions.call('delete_all', {kind = 'ip', key = '192.0.2.7'}, context())
end)

suite.case('bulk deletes count live sessions only', function(test)
    local ended = sessions.call('delete_all', {kind = 'user', key = 2}, context())
    test:is_deeply({ended.deleted, ended.more}, {3, false}, 'delete_all ends them all')
end)

suite.case('unknown arguments, kinds and operations are refused, never ignored', function(test)
    local unknown = {kind = 'user', key = 2, limit = 1, page_bytes = 1, pages = 3}
    local ok, err = pcall(sessions.call, 'list', unknown, context())
    test:ok(not ok and tostring(err):find('no argument pages'), 'an unknown argument')
    ok, err = pcall(sessions.call, 'list', {kind = 'device', key = 2, limit = 1, page_bytes = 1}, context())
    test:ok(not ok and tostring(err):find('unknown kind'), 'an unknown kind')
    ok, err = pcall(sessions.call, 'get', {token = text}, context())
    test:ok(not ok and tostring(err):find('unknown operation'), 'a batch operation outside a batch')
end)

suite.case('describe() reports what the declarations say', function(test)
    local described = sessions.describe()
    local operations = require('sessions.operations')
    for name, spec in pairs(operations) do
        test:is_deeply(described.operations[name].args, spec.args, name .. ': its arguments')
    end
    test:is_deeply(described.kinds, {'ip', 'user'}, 'the kinds of key')
    test:is_deeply(described.idem, {'key', 'fingerprint', 'window'}, 'the idem shape')
    -- A null field is there too, as box.NULL (which equals nil).
    local answered, declared = {}, table.copy(described.info)
    for name in pairs(sessions.info()) do
        answered[#answered + 1] = name
    end
    table.sort(answered)
    table.sort(declared)
    test:is_deeply(answered, declared, 'info answers the fields it declares')
end)

suite.case('the purge deletes what lapsed, exactly: expires NOW is due only after NOW', function(test)
    new(3, '192.0.2.3')
    clock.freeze(NOW + 100)
    test:is(select(1, expiry.purge_batch(box.space.sessions, context().rules)), 0, 'the purge keeps idle ttl')
    clock.freeze(NOW + 101)
    test:is(select(1, expiry.purge_batch(box.space.sessions, context().rules)), 1, 'and ends idle ttl + 1')
end)

-- Another instance's seqs from the same counter values (a promoted replica that lagged) end
-- in its own id, so they never meet.
suite.case('a seq carries the instance that numbered it', function(test)
    local schema = require('sessions.schema')
    local first, second = schema.next_seq(), schema.next_seq()
    test:is(first % 32, box.info.id, 'a seq ends in this instance\'s id')
    test:is(second - first, 32, 'and counts in steps of 32')
end)

-- A storage of the sharded mode: its replica set's number too, so two sets' seqs never meet
-- when a bucket moves, and a counter that never falls behind the clock's 10 µs ticks, so sets
-- counting their own interleave by opening time; a single instance (no number) numbers as
-- above. (Such seqs are 64-bit integers: `/` divides them as integers.)
suite.case('a storage\'s seq carries its replica set\'s number and the clock', function(test)
    local schema = require('sessions.schema')
    local ticks = (require('fiber').time64() - 1735689600 * 1000000LL) / 10
    schema.set_seq_set(3)
    local first, second = schema.next_seq(), schema.next_seq()
    schema.set_seq_set(nil)
    local single = schema.next_seq()
    test:is(tonumber(first % 32), box.info.id, 'a seq ends in this instance\'s id')
    test:is(tonumber(first / 32 % schema.SEQ_SETS), 2, 'after the set\'s number minus one')
    test:ok(first / 32 / schema.SEQ_SETS >= ticks, 'its counter is no less than the ticks before it')
    test:ok(second > first and tonumber(second / 32 % schema.SEQ_SETS) == 2, 'and counts up')
    test:is(single % 32, box.info.id, 'without a number, as before')
    test:ok(math.floor(single / 32) == tonumber(second / 32 / schema.SEQ_SETS) + 1, 'from the same counter')
end)

-- TTL 60, a session; TTL 5 (its stored deadline swept to T + 5); a restart (the module's
-- memory gone) past that deadline with TTL 60 again: the change across the restart counts,
-- and the session stays lapsed.
suite.case('lapsed stays lapsed across a restart', function(test)
    clock.freeze(NOW + 1000)
    local function rules(ttl)
        local made = {ttl = ttl, lifetime = 0, cap = 0}
        expiry.set_rules(made)
        return made
    end
    rules(60)
    local lapsing = new(6, '192.0.2.6').session
    clock.freeze(NOW + 1001)
    local short = rules(5)
    expiry.sweep_batch(box.space.sessions, short)
    local swept = box.space.sessions:get(uuid.fromstr(lapsing[F.TOKEN]))
    test:is(swept[F.EXPIRES], NOW + 1005, 'swept to the TTL of 5')
    package.loaded['sessions.expiry'] = nil
    local restarted = require('sessions.expiry')
    clock.freeze(NOW + 1010)
    local long = {ttl = 60, lifetime = 0, cap = 0}
    restarted.set_rules(long)
    local stored = box.space.sessions:get(uuid.fromstr(lapsing[F.TOKEN]))
    test:ok(not require('sessions.liveness').is_live(stored, long),
        'lapsed while stopped: not live after the restart')
end)

suite.case('an id is kept by rotate; peek reads by it without touching; delete_id ends by it', function(test)
    clock.freeze(NOW + 2000)
    local opened = new(7, '192.0.2.7').session
    local id = opened[F.ID]
    test:is(require('sessions.ids').ms_of(require('uuid').fromstr(id)), (NOW + 2000) * 1000,
        'new makes the id at its create time')
    local rotated = sessions.batch('rotate', {{token = opened[F.TOKEN], new_token = token()}}, context())[1]
    test:is(rotated.session[F.ID], id, 'rotate keeps the id')
    clock.freeze(NOW + 2050)
    local peeked = sessions.batch('peek', {{id = id}}, context())[1]
    test:is(peeked.session[F.ACTIVITY], NOW + 2000, 'peek answers it as stored: activity not recorded')
    test:is(peeked.session[F.TOKEN], rotated.session[F.TOKEN], 'under its current token')
    test:is(next(sessions.batch('peek', {{id = 'nope'}}, context())[1]), nil, 'a malformed id: none')
    clock.freeze(NOW + 2101)
    test:is(next(sessions.batch('peek', {{id = id}}, context())[1]), nil, 'idle ttl + 1: none')
    test:ok(box.space.sessions.index.id:get(require('uuid').fromstr(id)) ~= nil, 'and still not written')
    clock.freeze(NOW + 2100)
    local ended = sessions.batch('delete_id', {{id = id}}, context())[1]
    test:is(ended.session[F.ID], id, 'idle exactly ttl: delete_id ends it and answers it')
    test:is(next(sessions.batch('delete_id', {{id = id}}, context())[1]), nil, 'a second time: none')
    clock.freeze(NOW)
end)

suite.case('delete_all keeps the session except_id names, and only a live one of that user', function(test)
    clock.freeze(NOW + 3000)
    local kept = new(8, '192.0.2.8').session
    new(8, '192.0.2.8')
    new(8, '192.0.2.8')
    local other = new(9, '192.0.2.9').session
    local function delete_all(args)
        local ok, reply = pcall(sessions.call, 'delete_all', args, context())
        return ok and reply.deleted or reply.type
    end
    test:is(delete_all({kind = 'user', key = 8, except_id = other[F.ID]}), 'TokenNotFound',
        'another user\'s id: refused, nothing ended')
    test:is(delete_all({kind = 'user', key = 8, except_id = 'junk'}), 'TokenNotFound', 'a malformed one too')
    test:is(delete_all({kind = 'user', key = 8, except_id = kept[F.ID], except_token = kept[F.TOKEN]}),
        'InvalidArgument', 'a token and an id: refused')
    test:is(count('user', 8), 3, 'all three still there')
    test:is(delete_all({kind = 'user', key = 8, except_id = kept[F.ID]}), 2, 'the other two ended')
    test:is(sessions.batch('peek', {{id = kept[F.ID]}}, context())[1].session[F.TOKEN], kept[F.TOKEN],
        'the kept one lives')
    clock.freeze(NOW)
end)

-- The feed: every change with its kind and reason, in the transaction of the change,
-- numbered one after the other; a page stops where the WAL does; the retention trims the
-- oldest, never the newest.
suite.case('every change writes its event, numbered without gaps', function(test)
    local events = require('sessions.events')
    clock.freeze(NOW + 2000)
    local function on(ttl, cap, lifetime)
        local ctx = context(ttl, cap)
        ctx.rules.lifetime = lifetime or 0
        ctx.events = {keep = 3600, most = 1000}
        return ctx
    end
    local start = events.head()
    local function open(user_id, ip, ctx)
        return sessions.batch('new', {{token = token(), user_id = user_id, ip = ip}}, ctx or on())[1].session
    end
    local a = open(70, '192.0.2.70')
    sessions.batch('get', {{token = a[F.TOKEN], ip = '192.0.2.71'}}, on())
    local rotated = sessions.batch('rotate', {{token = a[F.TOKEN], new_token = token()}}, on())[1].session
    sessions.batch('delete', {{token = rotated[F.TOKEN]}}, on())
    open(71, '192.0.2.72')
    open(71, '192.0.2.72', on(100, 1))            -- the cap of 1 ends the first
    sessions.call('delete_all', {kind = 'user', key = 71}, on())
    open(72, '192.0.2.73')
    sessions.call('delete_all', {kind = 'ip', key = '192.0.2.73'}, on())
    local lapsing = open(73, '192.0.2.74')
    clock.freeze(NOW + 2101)
    sessions.batch('get', {{token = lapsing[F.TOKEN]}}, on())   -- idle 101 s of 100: ends it
    open(74, '192.0.2.75', on(1000, 0, 50))
    clock.freeze(NOW + 2160)
    expiry.purge_batch(box.space.sessions, on(1000, 0, 50).rules)  -- lifetime 50 s
    open(75, '192.0.2.76')
    clock.freeze(NOW + 2261)
    expiry.purge_batch(box.space.sessions, on().rules)              -- idle
    local page, missed, head = events.page(start, 100)
    local seen = {}
    for i, event in ipairs(page) do
        local E = F.EVENTS
        test:is(event[E.SEQ], start + i, ('event %d follows the one before'):format(i))
        local reason = event[E.REASON] ~= nil and ('/' .. event[E.REASON]) or ''
        -- (The purge also ends what earlier cases left.)
        if event[E.USER_ID] >= 70 then
            seen[#seen + 1] = event[E.KIND] .. reason .. ':' .. event[E.USER_ID]
        end
    end
    test:is_deeply(seen, {
        'opened:70', 'moved:70', 'rotated:70', 'ended/del:70',
        'opened:71', 'ended/cap:71', 'opened:71', 'ended/user/del:71',
        'opened:72', 'ended/ip/del:72',
        'opened:73', 'ended/idle:73',
        'opened:74', 'ended/lifetime:74',
        'opened:75', 'ended/idle:75',
    }, 'each change once, in order, with its reason')
    test:is(missed, false, 'nothing missed')
    test:is(tostring(page[1][F.EVENTS.SESSION]), a[F.ID], 'an event carries its session\'s id')
    test:is(tostring(page[3][F.EVENTS.SESSION]), a[F.ID], 'kept by rotate')
    test:is(head, start + #page, 'the head is the last one')
    local off = context()
    open(76, '192.0.2.77', off)
    test:is(events.head(), head, 'off: nothing is written')
    events.configure({keep = 3600, most = 3})
    test:is(events.trim_batch({keep = 3600, most = 3}), #page - 3, 'the retention keeps the newest `most`')
    local _, gone = events.page(start, 100)
    test:is(gone, true, 'a consumer behind what it removed is told')
    local oldest = box.space.events.index.seq:min()[F.EVENTS.TIME]
    clock.freeze(oldest + 1)
    test:is(events.trim_batch({keep = 1, most = 1000}), 0, 'an event exactly `keep` old stays')
    clock.freeze(oldest + 2)
    test:ok(events.trim_batch({keep = 1, most = 1000}) >= 1, 'one older goes')
    clock.freeze(NOW + 9000)
    events.trim_batch({keep = 1, most = 1000})
    test:is(box.space.events:len(), 1, 'and all older ones, but never the newest')
    test:is(box.space.events.index.seq:max()[F.EVENTS.SEQ], head, 'so numbering goes on from it')
end)

suite.case('one webhook lease holder at a time, and what it delivered', function(test)
    local lease = function(holder, delivered)
        return sessions.call('webhook_lease', {holder = holder, ttl = 60, delivered = delivered}, context())
    end
    local first = lease('a')
    test:is(first.held, true, 'the first holder takes it')
    test:is(lease('b').held, false, 'another does not while it holds it')
    test:is(lease('a', first.delivered + 5).delivered, first.delivered + 5, 'the holder records its progress')
    test:is(lease('a', first.delivered).delivered, first.delivered + 5, 'which never goes back')
    box.space.sessions_state:update('webhook', {{'=', '[2].expires', 0}})
    local taken = lease('b')
    test:ok(taken.held and taken.delivered == first.delivered + 5,
        'an expired lease is taken, with the progress')
end)

local code = suite.run()
box.cfg{read_only = true}
fio.rmtree(work_dir)
os.exit(code)
