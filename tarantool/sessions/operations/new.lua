-- new: open a session.
local uuid = require('uuid')

local F = require('sessions.fields')
local buckets = require('sessions.buckets')
local clock = require('sessions.clock')
local errors = require('sessions.errors')
local events = require('sessions.events')
local ids = require('sessions.ids')
local liveness = require('sessions.liveness')
local memory = require('sessions.memory')
local rows = require('sessions.rows')
local schema = require('sessions.schema')
local sharded = require('sessions.sharded')

local check, is_integer, is_live = errors.check, errors.is_integer, liveness.is_live
local K = F.KEYS

-- A `new` over a user's cap ends at most this many of the user's older sessions.
local CAP_DELETES = 1000
-- The fields of the `idem` argument (part of the wire contract: describe() reports them).
local IDEM = {'key', 'fingerprint', 'window'}

-- With a cap on live sessions per user, end the user's least recently active ones so that
-- the new one fits: the walk goes newest first, keeps cap - 1 live ones and ends the rest
-- (at most CAP_DELETES per call), and stops where even the service's TTL has lapsed.
local function make_room(user_id, rules)
    local cap = rules[liveness.CAP]
    if cap == 0 then
        return
    end
    local space = box.space.sessions
    local cutoff = clock.now() - rules[liveness.TTL]
    local kept, doomed = 0, {}
    for _, tuple in space.index.user:pairs({user_id}, {iterator = 'REQ'}) do
        if tuple[F.ACTIVITY] < cutoff or #doomed >= CAP_DELETES then
            break
        end
        if is_live(tuple, rules) then
            if kept < cap - 1 then
                kept = kept + 1
            else
                doomed[#doomed + 1] = tuple
            end
        end
    end
    for _, tuple in ipairs(doomed) do
        space:delete(tuple[F.TOKEN])
        events.emit('ended', 'cap', tuple)
    end
end

-- An idempotency key is its user's: kept as "<user_id> <key>", so that another user's `new`
-- with the same key is its own (in the sharded mode the two users' keys may be on two replica
-- sets, which cannot tell each other; and a key held once per user stays with the user's
-- bucket when it moves, where a key alone could exist on both sets and stop the move). A key
-- is visible ASCII (the service refuses a space), so a scoped one never equals a bare one
-- of the release before (a key "31/abc" once found user 31's "abc").
local function scoped(user_id, key)
    -- (The largest ids come as 64-bit cdata, which %d does not take: their digits.)
    return buckets.digits(user_id) .. ' ' .. key
end

-- The session an idempotency key opened within its window: the tuple, or nil when the key
-- is new (or its window is over). The same key with other parameters, or one whose session
-- has ended since, is a conflict: answering another session, or opening one again, would
-- be wrong for a client that retries.
local function replay(user_id, idem, rules)
    local entry = box.space.idempotency:get(scoped(user_id, idem.key))
    if entry == nil and not idem.key:find(' ', 1, true) then
        -- Kept by a release before keys were per user (for its window, an hour by default):
        -- the same user's retry only (the fingerprint holds the user).
        entry = box.space.idempotency:get(idem.key)
        if entry ~= nil and entry[K.FINGERPRINT] ~= idem.fingerprint then
            entry = nil
        end
    end
    if entry == nil or entry[K.EXPIRES] < clock.now() then
        return nil
    end
    if entry[K.FINGERPRINT] ~= idem.fingerprint then
        errors.raise('IdempotencyConflict',
            'This Idempotency-Key was used with other parameters; use a new key.')
    end
    local tuple = box.space.sessions:get(entry[K.TOKEN])
    if tuple == nil or not is_live(tuple, rules) then
        errors.raise('IdempotencyConflict',
            'The session this Idempotency-Key opened has ended; use a new key.')
    end
    return tuple
end

-- `token` is 16 random bytes from the service with the UUID version 4 bits set; `ttl` the
-- session's own idle TTL, or nil for the service's; `idem`, if given, is {key = text,
-- fingerprint = text, window = seconds}: a repeat of the same key answers the session it
-- opened instead of opening another.
local function new(args, ctx)
    local token, user_id, ip, own_ttl, idem = args.token, args.user_id, args.ip, args.ttl, args.idem
    check(type(token) == 'string' and #token == 16, 'token must be 16 bytes')
    check(is_integer(user_id), 'user_id must be an integer')
    check(type(ip) == 'string', 'ip must be a string')
    check(own_ttl == nil or (type(own_ttl) == 'number' and own_ttl >= 1), 'own ttl must be positive')
    local rules = ctx.rules
    if idem ~= nil then
        check(type(idem) == 'table' and type(idem.key) == 'string' and type(idem.fingerprint) == 'string'
            and type(idem.window) == 'number', 'idem must be {key, fingerprint, window}')
        local replayed = replay(user_id, idem, rules)
        if replayed ~= nil then
            return {session = rows.answer(replayed)}
        end
    end
    local extra = box.NULL
    if args.patch ~= nil then
        extra = rows.merged_extra(nil, args.patch, ctx.extra_max)
    end
    make_room(user_id, rules)
    local ts = clock.now()
    local key = uuid.frombin(token, 'b')
    local row = {
        key, user_id, ip, ts, ts, extra, liveness.deadline_of(ts, ts, own_ttl, rules), own_ttl,
        schema.next_seq(), ids.make(math.floor(clock.time() * 1000)),
    }
    -- A storage of the sharded mode keeps each row's bucket, its user's (sharded.lua).
    local bucket = sharded.bucket_of_new(user_id)
    row[F.BUCKET_ID] = bucket
    local tuple = box.space.sessions:insert(row)
    events.emit('opened', nil, tuple)
    if idem ~= nil then
        local entry = {scoped(user_id, idem.key), idem.fingerprint, key, ts + idem.window, bucket}
        box.space.idempotency:replace(entry)
    end
    memory.wrote()
    return {session = rows.answer(tuple)}
end

return {
    fn = new,
    batch = true,
    args = {'token', 'user_id', 'ip', 'patch', 'ttl', 'idem'},
    reply = {'session'},
    IDEM = IDEM,
}
