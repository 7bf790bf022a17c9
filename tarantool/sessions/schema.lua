-- Schema of the `sessions` space: ordered, idempotent migrations and a check that an
-- existing space has what the procedures rely on.
local fiber = require('fiber')
local log = require('log')

local F = require('sessions.fields')
local ids = require('sessions.ids')

local SPACE = 'sessions'
local IDEMPOTENCY = 'idempotency'
-- What the instance must remember across restarts beside the sessions: {name, value}.
local STATE = 'sessions_state'
-- The event feed (events.lua).
local EVENTS = 'events'

-- The indexes the procedures rely on, by field number, each with the migration that
-- creates it: checked on every start.
local INDEXES = {
    -- Tokens are only ever looked up whole.
    {name = 'token', type = 'hash', unique = true, parts = {F.TOKEN}, since = 1},
    -- A user's sessions by activity: the cap ends the least recently active ones first.
    {name = 'user', type = 'tree', unique = false, parts = {F.USER_ID, F.ACTIVITY}, since = 1},
    -- The purge walks this one from the earliest expiry.
    {name = 'expires', type = 'tree', unique = false, parts = {F.EXPIRES}, since = 3},
    -- Listings page by (key, seq), newest opened first: a position in that order never
    -- moves, so a walk sees every session that stays live exactly once.
    {name = 'user_seq', type = 'tree', unique = true, parts = {F.USER_ID, F.SEQ}, since = 5},
    {name = 'ip_seq', type = 'tree', unique = true, parts = {F.IP, F.SEQ}, since = 5},
    -- A session by its id (a tree: ids sort by when their sessions were opened).
    {name = 'id', type = 'tree', unique = true, parts = {F.ID}, since = 7},
}

-- Numbers the sessions in the order they are opened (`seq`).
local SEQUENCE = 'sessions_seq'

local function create_indexes(space, version)
    for _, index in ipairs(INDEXES) do
        if index.since == version then
            local parts = {}
            for i, fieldno in ipairs(index.parts) do
                parts[i] = {field = fieldno}
            end
            space:create_index(index.name, {
                type = index.type, unique = index.unique, parts = parts, if_not_exists = true,
            })
        end
    end
end

-- The format with the fields of the first `count` only, nullable from `nullable_from` on:
-- what a step needs while it brings old tuples up to date.
local function format_of(count, nullable_from)
    local format = {}
    for i = 1, count do
        local field = table.copy(F.FORMAT[i])
        if nullable_from ~= nil and i >= nullable_from then
            field.is_nullable = true
        end
        format[i] = field
    end
    return format
end

-- Sets `field` of each session that lacks it to value(tuple), walking `index` (a tree index
-- keeps its place while tuples change under it; a hash one may not), 1000 updates to a
-- transaction.
local function backfill(index, field, value)
    local space = box.space[index.space_id]
    local batch = {}
    local function flush()
        box.begin()
        for _, item in ipairs(batch) do
            space:update(item[1], {{'=', field, item[2]}})
        end
        box.commit()
        batch = {}
    end
    for _, tuple in index:pairs() do
        if tuple[field] == nil then
            batch[#batch + 1] = {tuple[F.TOKEN], value(tuple)}
        end
        if #batch >= 1000 then
            flush()
        end
    end
    flush()
end

-- Each migration runs once per database (box.once keeps its name in _schema), in this
-- order, so a newer release can start on a snapshot written by an older one.
-- Append new steps; never change what a shipped step does.
local migrations = {
    {'sessions_v1', function()
        local space = box.schema.space.create(SPACE, {if_not_exists = true, format = format_of(F.EXTRA)})
        create_indexes(space, 1)
        -- Release 1's listing index by address and activity, replaced by `ip_seq` in v5.
        space:create_index('ip', {
            type = 'tree', unique = false, if_not_exists = true,
            parts = {{field = F.IP}, {field = F.ACTIVITY}},
        })
        -- Release 1's purge index, replaced by `expires` in v3.
        space:create_index('activity', {
            type = 'tree', unique = false, parts = {{field = F.ACTIVITY}}, if_not_exists = true,
        })
    end},
    -- Nobody may use the instance without a password: the service has its own user, and
    -- guest would otherwise keep its default right to connect and call public functions.
    {'sessions_v2', function()
        box.schema.user.revoke('guest', 'session,usage', 'universe', nil, {if_exists = true})
    end},
    -- Per-session TTLs and a maximum lifetime: each session stores when it expires, and the
    -- purge follows an index on that instead of on activity (the same memory per session).
    -- Old sessions get activity + the idle TTL the instance was started with (or activity
    -- itself without one: the purge then re-checks them under the service's rules and only
    -- moves their expiry on; it never ends a live session).
    {'sessions_v3', function(options)
        local space = box.space[SPACE]
        space:format(format_of(F.TTL, F.EXPIRES))
        local ttl = options.idle_ttl or 0
        backfill(space.index.activity, F.EXPIRES, function(tuple) return tuple[F.ACTIVITY] + ttl end)
        space:format(format_of(F.TTL, F.TTL))
        create_indexes(space, 3)
        if space.index.activity ~= nil then
            space.index.activity:drop()
        end
    end},
    -- Idempotency keys of `new`: a retried `new` with the same key answers the session the
    -- first one opened. Entries live for the service's window and the purge removes them.
    {'sessions_v4', function()
        local K = F.KEYS
        local space = box.schema.space.create(IDEMPOTENCY, {if_not_exists = true, format = F.KEYS_FORMAT})
        space:create_index('key', {type = 'hash', parts = {{field = K.KEY}}, if_not_exists = true})
        space:create_index('expires', {
            type = 'tree', unique = false, parts = {{field = K.EXPIRES}}, if_not_exists = true,
        })
    end},
    -- Stable paging: each session gets `seq` (existing ones in the order the `expires`
    -- index holds them, which is as good as any), listings walk (key, seq) and their cursors
    -- are a seq, which reveals nothing secret.
    {'sessions_v5', function()
        local space = box.space[SPACE]
        local sequence = box.schema.sequence.create(SEQUENCE, {if_not_exists = true})
        space:format(format_of(F.SEQ, F.TTL))
        local batch = {}
        local function flush()
            box.begin()
            for _, token in ipairs(batch) do
                -- Older tuples may end before `ttl` (nullable fields at the end are left
                -- out), and an update cannot set a field past the end: the whole tuple.
                local fields = space:get(token):totable()
                for i = #fields + 1, F.SEQ - 1 do
                    fields[i] = box.NULL
                end
                fields[F.SEQ] = sequence:next()
                space:replace(fields)
            end
            box.commit()
            batch = {}
        end
        for _, tuple in space.index.expires:pairs() do
            if tuple[F.SEQ] == nil then
                batch[#batch + 1] = tuple[F.TOKEN]
            end
            if #batch >= 1000 then
                flush()
            end
        end
        flush()
        space:format(format_of(F.SEQ))
        create_indexes(space, 5)
        if space.index.ip ~= nil then
            space.index.ip:drop()
        end
    end},
    -- The rules in force and when they took force (expiry.lua), so that lapsed stays lapsed
    -- across a restart with other rules.
    {'sessions_v6', function()
        local space = box.schema.space.create(STATE, {if_not_exists = true, format = {
            {name = 'name', type = 'string'}, {name = 'value', type = 'any'},
        }})
        space:create_index('name', {type = 'tree', parts = {{field = 1}}, if_not_exists = true})
    end},
    -- Session ids: each existing session gets one made from its `create` time (so ids sort
    -- by when their sessions were opened, old and new alike), then the unique index.
    {'sessions_v7', function()
        local space = box.space[SPACE]
        space:format(format_of(F.ID, F.ID))
        -- Every field before `id` is there since v5 (seq is not nullable), so an update
        -- may set it.
        backfill(space.index.expires, F.ID, function(tuple) return ids.make(tuple[F.CREATE] * 1000) end)
        space:format(format_of(F.ID))
        create_indexes(space, 7)
    end},
    -- The event feed: every change to a session, in the transaction of the change, numbered
    -- by `seq` (events.lua); the retention fiber trims it from the oldest.
    {'sessions_v8', function()
        local space = box.schema.space.create(EVENTS, {if_not_exists = true, format = F.EVENTS_FORMAT})
        space:create_index('seq', {type = 'tree', parts = {{field = F.EVENTS.SEQ}}, if_not_exists = true})
    end},
}

local VERSION = #migrations

local function validate()
    local space = box.space[SPACE]
    if space == nil then
        error(('space %q is missing after migrations'):format(SPACE))
    end
    for _, wanted in ipairs(INDEXES) do
        local name = wanted.name
        local index = space.index[name]
        if index == nil then
            error(('space %q has no index %q'):format(SPACE, name))
        end
        for i, fieldno in ipairs(wanted.parts) do
            local part = index.parts[i]
            if part == nil or part.fieldno ~= fieldno then
                error(('index %q of space %q does not have the expected parts'):format(name, SPACE))
            end
        end
    end
    if box.space[STATE] == nil then
        error(('space %q is missing after migrations'):format(STATE))
    end
    local events = box.space[EVENTS]
    if events == nil or events.index.seq == nil or events.index.seq.parts[1].fieldno ~= F.EVENTS.SEQ then
        error(('space %q or its index is missing after migrations'):format(EVENTS))
    end
    local keys = box.space[IDEMPOTENCY]
    if keys == nil or keys.index.key == nil or keys.index.expires == nil then
        error(('space %q or its indexes are missing after migrations'):format(IDEMPOTENCY))
    end
end

-- box.once waits for the instance to become writable, so a replica simply picks the
-- schema up through replication.
local function migrate(options)
    for _, step in ipairs(migrations) do
        local name, up = step[1], step[2]
        box.once(name, function()
            log.info('sessions: applying schema migration %s', name)
            up(options or {})
        end)
    end
    validate()
end

-- Synchronous replication on or off for the data spaces: with it on, a transaction is
-- acknowledged only once replication_synchro_quorum instances have it.
local function set_sync(on)
    for _, name in ipairs({SPACE, IDEMPOTENCY, EVENTS}) do
        local space = box.space[name]
        if (space.is_sync or false) ~= on then
            -- space:alter() came after 2.6; the system space takes the flag on both.
            local flags = table.copy(box.space._space:get(space.id).flags or {})
            flags.is_sync = on
            box.space._space:update(space.id, {{'=', 'flags', setmetatable(flags, {__serialize = 'map'})}})
        end
    end
end

-- The seq of a session opened now: the sessions_seq counter times SEQ_INSTANCES plus this
-- instance's replica id (1 to 31). Two instances that both open sessions (a replica promoted
-- while it lagged behind the old primary, which had used the same counter values) so never
-- hand out the same seq, and the unique (user_id, seq) and (ip, seq) indexes never make their
-- rows collide when they meet again. Seqs numbered before (the counter alone, schema v5) are
-- all below the first of these.
local SEQ_INSTANCES = 32
-- A storage of the sharded mode also puts its replica set's number (1 to SEQ_SETS, the
-- cluster configuration's `numbers`, sharded.lua) between the counter and the instance id.
-- Each replica set counts from 1 with instances numbered from 1, so without it two sets hand
-- out the same seqs, and a bucket moved between them (its sessions inserted as they are, seq
-- and all) meets a row of the same (ip, seq) or (user_id, seq) and the move fails. With it,
-- a seq names the set and the instance that numbered it, so rows from anywhere never collide.
-- Why a number the operators write rather than one derived: a hash of the set's uuid can
-- collide, and a position in the configuration changes when a set is added.
-- A storage's counter is also anchored to the clock: it never falls behind the 10 µs ticks
-- since TICKS_FROM, so the seqs of sets that each count their own interleave in the order
-- their sessions were opened (to within the sets' clock difference), which listings merged
-- across sets (router.lua) and sessions moved in from another set rely on. A set runs ahead
-- of its clock only above 100,000 sessions a second. Such seqs pass 2^53, so they are made
-- as 64-bit integers (exact); the largest, in 2^50 ticks (357 years), stays below 2^63.
-- A single instance has no number (nil), and numbers as it always did.
local SEQ_SETS = 256
local TICKS_FROM = 1735689600 -- 2025-01-01T00:00:00Z
local TICK = 10 -- microseconds
local seq_set = nil

local function set_seq_set(number)
    assert(number == nil or (number >= 1 and number <= SEQ_SETS and number % 1 == 0),
        'a replica set number is 1 to ' .. SEQ_SETS)
    seq_set = number
end

local function next_seq()
    local sequence = box.sequence[SEQUENCE]
    local counter = sequence:next()
    if seq_set == nil then
        return counter * SEQ_INSTANCES + box.info.id
    end
    local ticks = (fiber.time64() - TICKS_FROM * 1000000LL) / TICK
    if counter < ticks then
        sequence:set(ticks)
        counter = ticks
    end
    return ((counter + 0LL) * SEQ_SETS + seq_set - 1) * SEQ_INSTANCES + box.info.id
end

local function version()
    local applied = 0
    for i, step in ipairs(migrations) do
        if box.space._schema:get{'once' .. step[1]} ~= nil then
            applied = i
        end
    end
    return applied
end

return {
    SPACE = SPACE,
    SEQUENCE = SEQUENCE,
    IDEMPOTENCY = IDEMPOTENCY,
    EVENTS = EVENTS,
    STATE = STATE,
    VERSION = VERSION,
    migrate = migrate,
    SEQ_SETS = SEQ_SETS,
    next_seq = next_seq,
    set_seq_set = set_seq_set,
    set_sync = set_sync,
    version = version,
}
