-- Stored procedures behind the HTTP API, one per operation. Each runs without yielding
-- between its read and its write, so it is atomic inside the instance.
local fiber = require('fiber')
local fio = require('fio')
local log = require('log')
local msgpack = require('msgpack')
local uuid = require('uuid')

local F = require('sessions.fields')
local clock = require('sessions.clock')
local expiry = require('sessions.expiry')
local liveness = require('sessions.liveness')
local role = require('sessions.role')
local schema = require('sessions.schema')

local MAP = {__serialize = 'map'}
-- The flag beside a `get` result served without rewriting its activity.
local UNTOUCHED = 'untouched'
local LIST_YIELD_EVERY = 1000
-- A bulk delete ends at most this many sessions per transaction, and at most BULK_CALL
-- per call: the service calls again while more remain, so that neither a transaction nor
-- a call holds anybody up for long (about 5 ms and 50 ms here).
local BULK_TRANSACTION = 500
local BULK_CALL = 5000
-- A `new` over a user's cap ends at most this many of the user's older sessions.
local CAP_DELETES = 1000
-- Listings and bulk deletes run at most this many at once in this instance, whoever calls:
-- the transaction thread is one core, so more would only interleave, and each one holds
-- its page in memory until it is sent. Beyond it a call waits for its turn until its
-- deadline, then is refused as `Overloaded`: the memory all bulk work takes here is at
-- most BULK_SLOTS pages, and the `get`s beside it wait behind at most one step of each.
local BULK_SLOTS = 4

local function raise(error_type, reason)
    box.error({type = error_type, reason = reason})
end

local now = clock.now

-- Deadlines are absolute times on this instance's real clock (fiber.time(), never the
-- frozen test clock): the service sends the moment after which its caller no longer waits,
-- measured against this clock (storage.py), and work past it is not started.
local function check_deadline(deadline)
    if deadline ~= nil and fiber.time() > deadline then
        raise('Overloaded', 'the deadline of this call passed before its work was done')
    end
end

local bulk = {
    slots = fiber.channel(BULK_SLOTS),
    waiting = 0,
}

-- Runs fn(...) in a bulk slot, waiting for one until `deadline`; the slot is given back
-- however fn ends.
local function in_bulk_slot(deadline, fn, ...)
    local wait = deadline - fiber.time()
    bulk.waiting = bulk.waiting + 1
    local admitted = wait > 0 and bulk.slots:put(true, wait)
    bulk.waiting = bulk.waiting - 1
    if not admitted then
        raise('Overloaded', 'too much bulk work: no slot was free before the deadline')
    end
    local result = {pcall(fn, ...)}
    bulk.slots:get(0)
    if not result[1] then
        error(result[2], 0)
    end
    return unpack(result, 2, table.maxn(result))
end

-- Whether memtx memory ran out: set by a write that failed for lack of it, cleared by the
-- next write that fits. Reads and deletes go on meanwhile (see `get`).
local memory = {
    full = false,
    touch_skipped = 0,  -- `get`s served without rewriting activity, since start
}

local function is_out_of_memory(err)
    return type(err) == 'cdata' and (err.type == 'OutOfMemory' or err.code == box.error.MEMORY_ISSUE)
end

local function check(condition, reason)
    if not condition then
        raise('InvalidArgument', reason)
    end
end

local function is_integer(value)
    local kind = type(value)
    return kind == 'number' or kind == 'cdata'
end

-- Every call carries the service's rules (liveness.lua); the purge learns them here.
local function check_rules(rules)
    check(liveness.valid(rules), 'rules must be {ttl > 0, lifetime >= 0, cap >= 0}')
    expiry.set_rules(rules)
end

local is_live = liveness.is_live

-- Results carry the token as text: Tarantool formats it in C for free, where the
-- service would pay for decoding and formatting a UUID object per session.
local function with_text_token(tuple)
    return tuple:transform(F.TOKEN, 1, tuple[F.TOKEN]:str())
end

-- The live session a token names: its key and tuple, or nil; with `remove`, it is deleted
-- too. A lapsed one found is deleted either way: lapsed is final, whatever the rules say
-- later. Tokens arrive as text the service has checked for the 8-4-4-4-12 form, since
-- uuid.fromstr on its own lets some malformed strings through.
local function find_live(token, rules, remove)
    local key = uuid.fromstr(token)
    if key == nil then
        return nil
    end
    local space = box.space.sessions
    local tuple = remove and space:delete(key) or space:get(key)
    if tuple == nil then
        return nil
    end
    if not is_live(tuple, rules) then
        if not remove then
            space:delete(key)
        end
        return nil
    end
    return key, tuple
end

-- JSON Merge Patch (RFC 7396) at the top level: null removes a key, anything else
-- replaces it; nested values are taken whole.
local function merge_extra(current, patch, extra_max)
    check(type(patch) == 'table', 'extra must be a map')
    check(type(extra_max) == 'number', 'extra_max must be a number')
    local merged = setmetatable({}, MAP)
    if current ~= nil then
        for key, value in pairs(current) do
            merged[key] = value
        end
    end
    for key, value in pairs(patch) do
        if value == nil then -- also true for box.NULL
            merged[key] = nil
        else
            merged[key] = value
        end
    end
    if #msgpack.encode(merged) > extra_max then
        raise('PayloadTooLarge', ('extra data would exceed %d bytes'):format(extra_max))
    end
    return merged
end

-- With a cap on live sessions per user, end the user's least recently active ones so that
-- the new one fits: the walk goes newest first, keeps cap - 1 live ones and ends the rest
-- (at most CAP_DELETES per call), and stops where even the service's TTL has lapsed.
local function make_room(user_id, rules)
    local cap = rules[liveness.CAP]
    if cap == 0 then
        return
    end
    local space = box.space.sessions
    local cutoff = now() - rules[liveness.TTL]
    local kept, doomed = 0, {}
    for _, tuple in space.index.user:pairs({user_id}, {iterator = 'REQ'}) do
        if tuple[F.ACTIVITY] < cutoff or #doomed >= CAP_DELETES then
            break
        end
        if is_live(tuple, rules) then
            if kept < cap - 1 then
                kept = kept + 1
            else
                doomed[#doomed + 1] = tuple[F.TOKEN]
            end
        end
    end
    for _, token in ipairs(doomed) do
        space:delete(token)
    end
end

-- The session an idempotency key opened within its window: the tuple, or nil when the key
-- is new (or its window is over). The same key with other parameters, or one whose session
-- has ended since, is a conflict: answering another session, or opening one again, would
-- be wrong for a client that retries.
local K = F.KEYS
local function replay(idem, rules)
    local entry = box.space.idempotency:get(idem.key)
    if entry == nil or entry[K.EXPIRES] < now() then
        return nil
    end
    if entry[K.FINGERPRINT] ~= idem.fingerprint then
        raise('IdempotencyConflict', 'this Idempotency-Key was used with other parameters')
    end
    local tuple = box.space.sessions:get(entry[K.TOKEN])
    if tuple == nil or not is_live(tuple, rules) then
        raise('IdempotencyConflict', 'the session this Idempotency-Key opened has ended; use a new key')
    end
    return tuple
end

-- `token` is 16 random bytes from the service with the UUID version 4 bits set; `own_ttl`
-- the session's own idle TTL, or nil for the service's; `idem`, if given, is
-- {key = text, fingerprint = text, window = seconds}: a repeat of the same key answers the
-- session it opened instead of opening another.
local function new(token, user_id, ip, patch, extra_max, rules, own_ttl, idem)
    check(type(token) == 'string' and #token == 16, 'token must be 16 bytes')
    check(is_integer(user_id), 'user_id must be an integer')
    check(type(ip) == 'string', 'ip must be a string')
    check_rules(rules)
    check(own_ttl == nil or (type(own_ttl) == 'number' and own_ttl >= 1), 'own ttl must be positive')
    if idem ~= nil then
        check(type(idem.key) == 'string' and type(idem.fingerprint) == 'string'
            and type(idem.window) == 'number', 'idem must be {key, fingerprint, window}')
        local replayed = replay(idem, rules)
        if replayed ~= nil then
            return with_text_token(replayed)
        end
    end
    local extra = box.NULL
    if patch ~= nil then
        extra = merge_extra(nil, patch, extra_max)
    end
    make_room(user_id, rules)
    local ts = now()
    local key = uuid.frombin(token, 'b')
    local tuple = box.space.sessions:insert{
        key, user_id, ip, ts, ts, extra, liveness.deadline_of(ts, ts, own_ttl, rules), own_ttl,
        box.sequence[schema.SEQUENCE]:next(),
    }
    if idem ~= nil then
        box.space.idempotency:replace{idem.key, idem.fingerprint, key, ts + idem.window}
    end
    memory.full = false
    return with_text_token(tuple)
end

-- The session, marked active now; with `ip`, moved to that address; with `patch`, its extra
-- data merged.
local function get(token, ip, patch, rules, extra_max)
    check(type(token) == 'string', 'token must be a string')
    check(ip == nil or type(ip) == 'string', 'ip must be a string')
    check_rules(rules)
    local key, tuple = find_live(token, rules)
    if key == nil then
        return nil
    end
    local space = box.space.sessions
    local ops = {}
    local ts = now()
    -- Rewriting the same second would cost a WAL write for nothing.
    if tuple[F.ACTIVITY] ~= ts then
        ops[#ops + 1] = {'=', F.ACTIVITY, ts}
        ops[#ops + 1] = {'=', F.EXPIRES, liveness.deadline_of(tuple[F.CREATE], ts, tuple[F.TTL], rules)}
    end
    if ip ~= nil and ip ~= tuple[F.IP] then
        ops[#ops + 1] = {'=', F.IP, ip}
    end
    if patch ~= nil then
        ops[#ops + 1] = {'=', F.EXTRA, merge_extra(tuple[F.EXTRA], patch, extra_max)}
    end
    if #ops == 0 then
        return with_text_token(tuple)
    end
    local ok, updated = pcall(space.update, space, key, ops)
    if ok then
        return with_text_token(updated)
    end
    -- With memory full, a signed-in user stays signed in: the session is served as stored,
    -- its activity (and last ip) not rewritten this time. Extra data the caller sent is a
    -- write it asked for, so that still fails.
    if patch ~= nil or not is_out_of_memory(updated) then
        error(updated)
    end
    memory.full = true
    memory.touch_skipped = memory.touch_skipped + 1
    return with_text_token(tuple), UNTOUCHED
end

local function delete(token, rules)
    check(type(token) == 'string', 'token must be a string')
    check_rules(rules)
    local _, tuple = find_live(token, rules, true)
    return tuple and with_text_token(tuple)
end

-- The same session under `new_token` (16 bytes, as for `new`): user, ip, extra, create, its
-- own TTL and its place in listings (seq) kept, activity now; the old token ends in the same
-- transaction.
local function rotate(token, new_token, rules)
    check(type(token) == 'string', 'token must be a string')
    check(type(new_token) == 'string' and #new_token == 16, 'new token must be 16 bytes')
    check_rules(rules)
    local key, tuple = find_live(token, rules)
    if key == nil then
        return nil
    end
    local space = box.space.sessions
    local ts = now()
    -- The old one goes first: the new one takes its place (seq) in the listings' unique
    -- indexes. A failure of the insert undoes the delete too (batch's savepoint).
    space:delete(key)
    local fresh = space:insert(tuple:update({
        {'=', F.TOKEN, uuid.frombin(new_token, 'b')},
        {'=', F.ACTIVITY, ts},
        {'=', F.EXPIRES, liveness.deadline_of(tuple[F.CREATE], ts, tuple[F.TTL], rules)},
    }))
    return with_text_token(fresh)
end

local LISTS = {
    user = {index = 'user_seq', field = F.USER_ID, check = is_integer, what = 'user_id must be an integer'},
    ip = {index = 'ip_seq', field = F.IP, check = function(v) return type(v) == 'string' end,
          what = 'ip must be a string'},
}

-- Live sessions under one key of a (key, seq) index, newest opened first, at most
-- `opts.limit` of them and at most `opts.page_bytes` bytes of tuples (but at least one
-- session, whatever it holds), starting after the session whose seq is `opts.after` when
-- given. A session's seq never changes (rotate keeps it), so a walk page by page meets
-- every session that stays under the key and live exactly once, whatever happens to the
-- others meanwhile; sessions opened during the walk come before its start and are not met.
-- Returns {sessions, more, seq of the last one}. The walk yields every LIST_YIELD_EVERY
-- tuples, so a long one never holds up other requests, and gives up once `opts.deadline`
-- has passed.
local function walk(kind, key, rules, opts)
    local spec = LISTS[kind]
    local limit, page_bytes, deadline = opts.limit, opts.page_bytes, opts.deadline
    local position, iterator = {key}, 'REQ'
    if opts.after ~= nil then
        position, iterator = {key, opts.after}, 'LT'
    end
    local result = {}
    local count, bytes, seen, last = 0, 0, 0, box.NULL
    local more = false
    for _, tuple in box.space.sessions.index[spec.index]:pairs(position, {iterator = iterator}) do
        if tuple[spec.field] ~= key then
            break
        end
        seen = seen + 1
        if seen % LIST_YIELD_EVERY == 0 then
            fiber.yield()
            check_deadline(deadline)
        end
        if is_live(tuple, rules) then
            local size = tuple:bsize()
            if count >= limit or (count > 0 and bytes + size > page_bytes) then
                more = true
                break
            end
            count = count + 1
            bytes = bytes + size
            result[count] = with_text_token(tuple)
            last = tuple[F.SEQ]
        end
    end
    return {result, more, last}
end

local function list(kind, key, rules, opts)
    local spec = LISTS[kind]
    check(spec ~= nil, 'unknown list')
    check(spec.check(key), spec.what)
    check_rules(rules)
    check(type(opts) == 'table', 'opts must be a map')
    check(type(opts.limit) == 'number' and opts.limit >= 1, 'limit must be a positive number')
    check(type(opts.page_bytes) == 'number' and opts.page_bytes >= 1, 'page_bytes must be positive')
    check(type(opts.deadline) == 'number', 'deadline must be a number')
    check(opts.after == nil or is_integer(opts.after), 'after must be a seq')
    check_deadline(opts.deadline)
    return in_bulk_slot(opts.deadline, walk, kind, key, rules, opts)
end

-- End the live sessions of a user (`kind` "user") or an address ("ip"), except the session
-- `opts.except_token` (which must then be a live session of that user, or nothing is
-- ended; `opts.checked` says an earlier call of the same request checked it already), in
-- transactions of BULK_TRANSACTION that yield between them, at most BULK_CALL per call
-- and none begun after `opts.deadline`. Lapsed sessions met on the way go too, uncounted.
-- Returns {ended, more}.
local function end_all(kind, key, rules, opts)
    local spec = LISTS[kind]
    local except_token, checked, deadline = opts.except_token, opts.checked, opts.deadline
    local space = box.space.sessions
    local except = nil
    if except_token ~= nil then
        check(type(except_token) == 'string', 'except must be a string')
        except = uuid.fromstr(except_token)
        local kept = except and space:get(except)
        if not checked and (not kept or kept[spec.field] ~= key or not is_live(kept, rules)) then
            raise('TokenNotFound', 'except is not a live session of this user')
        end
    end
    local index = space.index[spec.index]
    local ended, removed = 0, 0
    while removed < BULK_CALL do
        local doomed, live = {}, 0
        for _, tuple in index:pairs({key}, {iterator = 'EQ'}) do
            if except == nil or tuple[F.TOKEN] ~= except then
                doomed[#doomed + 1] = tuple[F.TOKEN]
                if is_live(tuple, rules) then
                    live = live + 1
                end
                if #doomed >= BULK_TRANSACTION then
                    break
                end
            end
        end
        if #doomed == 0 then
            return {ended, false}
        end
        if fiber.time() > deadline then
            -- What is done stays done; the service calls again for the rest.
            return {ended, true}
        end
        box.begin()
        for _, token in ipairs(doomed) do
            space:delete(token)
        end
        box.commit()
        ended = ended + live
        removed = removed + #doomed
        fiber.yield()
    end
    return {ended, true}
end

local function delete_all(kind, key, rules, opts)
    local spec = LISTS[kind]
    check(spec ~= nil, 'unknown list')
    check(spec.check(key), spec.what)
    check_rules(rules)
    check(type(opts) == 'table', 'opts must be a map')
    check(type(opts.deadline) == 'number', 'deadline must be a number')
    check_deadline(opts.deadline)
    return in_bulk_slot(opts.deadline, end_all, kind, key, rules, opts)
end

-- Several operations of one kind in one call: the service coalesces concurrent requests
-- so that one round trip serves them all, in one transaction (one WAL write). Listings
-- are called one by one (`list`): a long one must not hold up, or share a timeout with,
-- anybody else's. Each item answers on its own,
-- in one of three shapes the service tells apart by length (storage.py):
--   {}                              nothing (an unknown or lapsed token)
--   {result} or {result, flag}      a result, with `UNTOUCHED` for a get served as stored
--   {nil, type, code, message}      an error, which undoes only that item's writes
-- An error of the whole call (a failed WAL write at commit, say) undoes every item and
-- reaches the service as the call's own error.
local batchable = {
    new = new,
    get = get,
    delete = delete,
    rotate = rotate,
}

local function error_item(err)
    if type(err) == 'cdata' then
        if is_out_of_memory(err) then
            memory.full = true
        end
        return {box.NULL, err.type, err.code, err.message}
    end
    -- A plain Lua error is a bug here, not bad input: log it where an operator looks.
    log.error('sessions: procedure failed: %s', tostring(err))
    return {box.NULL, 'LuaError', 0, tostring(err)}
end

-- Whether a commit failed because the replicas synchronous replication waits for did not
-- confirm it in time (SESSIONS_SYNC_REPLICAS): nothing of it was written.
local function is_sync_failure(err)
    return type(err) == 'cdata'
        and (err.code == box.error.SYNC_QUORUM_TIMEOUT or err.code == box.error.SYNC_ROLLBACK)
end

-- With its replicas out of reach, a signed-in user stays signed in: the `get`s of a batch
-- whose touches could not be confirmed serve their sessions as stored, untouched (as with
-- memory full); one that sent extra data asked for a write, and fails.
local function served_as_stored(calls, results, err)
    local space = box.space.sessions
    for i, args in ipairs(calls) do
        if results[i][1] ~= nil then
            local token, patch, rules = args[1], args[3], args[4]
            local key = uuid.fromstr(token)
            local tuple = key and space:get(key)
            if patch ~= nil then
                results[i] = error_item(err)
            elseif tuple ~= nil and is_live(tuple, rules) then
                results[i] = {with_text_token(tuple), UNTOUCHED}
            else
                results[i] = {}
            end
        end
    end
    return results
end

-- `deadline`: the moment the last of the batch's callers stops waiting (see check_deadline).
local function batch(operation, calls, deadline)
    local fn = batchable[operation]
    check(fn ~= nil, 'unknown batch operation')
    check(type(calls) == 'table', 'calls must be an array')
    check_deadline(deadline)
    local results = {}
    -- Nothing in a write yields before commit, so the batch is atomic and isolated.
    box.begin()
    for i, args in ipairs(calls) do
        -- An item that fails after some of its writes (a `new` that made room, then found
        -- memory full) undoes all of them, and only them.
        local savepoint = box.savepoint()
        local ok, result, flag = pcall(fn, unpack(args, 1, 8))
        if not ok then
            box.rollback_to_savepoint(savepoint)
            results[i] = error_item(result)
        elseif result == nil then
            results[i] = {}
        else
            results[i] = {result, flag}
        end
    end
    if operation ~= 'get' then
        box.commit()
        return results
    end
    local committed, err = pcall(box.commit)
    if committed then
        return results
    end
    if not is_sync_failure(err) then
        error(err)
    end
    return served_as_stored(calls, results, err)
end

-- Modification time of the newest snapshot, or nil before the first one.
local function last_checkpoint()
    local checkpoints = box.info.gc().checkpoints
    local newest = checkpoints[#checkpoints]
    if newest == nil then
        return nil
    end
    local path = fio.pathjoin(box.cfg.memtx_dir, ('%020d.snap'):format(newest.signature))
    local stat = fio.stat(path)
    return stat and stat.mtime
end

-- What a readiness probe and `sessions stats` need, without a full scan.
local function info()
    local space = box.space.sessions
    local next_due = space.index.expires:min()
    local expiry_stats = expiry.stats()
    return {
        now = fiber.time(),
        bulk_active = bulk.slots:count(),
        bulk_waiting = bulk.waiting,
        ro = box.info.ro,
        role = role.get().role or box.NULL,
        vclock = role.vclock(),
        schema_version = schema.version(),
        schema_latest = schema.VERSION,
        sessions = space:len(),
        next_expiry = next_due and next_due[F.EXPIRES] or box.NULL,
        purged = expiry_stats.purged,
        memory_used = box.slab.info().arena_used,
        tarantool_version = box.info.version,
        last_checkpoint = last_checkpoint() or box.NULL,
        storage_full = memory.full,
        touch_skipped = memory.touch_skipped,
    }
end

-- What another instance asks before it becomes writable (role.lua): whether this one is,
-- and what it has.
local function peer()
    return {ro = box.info.ro, role = role.get().role or box.NULL, vclock = role.vclock()}
end

-- What the service calls, and so all that its Tarantool user may execute (access.lua);
-- `peer` is for the other instances' `replicator` too.
return {
    batch = batch,
    list = list,
    delete_all = delete_all,
    info = info,
    peer = peer,
}
