-- The operations behind the HTTP API, and the procedures the service calls them through.
--
-- The wire contract is declared once, in OPERATIONS below: each operation's function, the
-- named arguments it takes, the named fields of its reply, and whether its calls are
-- coalesced into one `batch` or run as bulk work. Every call also carries a context map
-- (CONTEXT: the service's liveness rules, its deadline, the extra data limit). `describe()`
-- hands all of it to the service, which compares it with its own declaration
-- (sessions/contract.py) when it connects and refuses to start on any difference. Adding an
-- operation is one entry in OPERATIONS and its function; the grants follow the exports.
--
-- Each operation runs without yielding between its read and its write, so it is atomic
-- inside the instance.
local fiber = require('fiber')
local fio = require('fio')
local log = require('log')
local uuid = require('uuid')

local F = require('sessions.fields')
local clock = require('sessions.clock')
local election = require('sessions.election')
local expiry = require('sessions.expiry')
local liveness = require('sessions.liveness')
local merge = require('sessions.merge')
local role = require('sessions.role')
local schema = require('sessions.schema')

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

-- The error types the operations raise on purpose; the service maps each to its answer.
local ERRORS = {'InvalidArgument', 'PayloadTooLarge', 'TokenNotFound', 'Overloaded', 'IdempotencyConflict',
                'ReplicasUnavailable'}
local KNOWN_ERRORS = {}
for _, name in ipairs(ERRORS) do
    KNOWN_ERRORS[name] = true
end

local function raise(error_type, reason)
    assert(KNOWN_ERRORS[error_type], error_type)
    box.error({type = error_type, reason = reason})
end

local now = clock.now

-- Deadlines are absolute times on this instance's real clock (fiber.time(), never the
-- frozen test clock): the service sends the moment after which its caller no longer waits,
-- measured against this clock (sessions/storage), and work past it is not started.
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

local is_live = liveness.is_live

-- The reply of an operation that found nothing (an unknown or lapsed token): an empty map.
local NONE = setmetatable({}, {__serialize = 'map'})

-- Results carry the token as text: Tarantool formats it in C for free, where the
-- service would pay for decoding and formatting a UUID object per session.
local function with_text_token(tuple)
    return tuple:transform(F.TOKEN, 1, tuple[F.TOKEN]:str())
end

-- The live session a token names, as its key and tuple, or nil. A lapsed one found is
-- deleted: lapsed is final, whatever the rules say later. Tokens arrive as text the
-- service has checked for the 8-4-4-4-12 form, since uuid.fromstr on its own lets some
-- malformed strings through.
local function find_live(token, rules, untouched)
    local key = uuid.fromstr(token)
    if key == nil then
        return nil
    end
    local space = box.space.sessions
    local tuple = space:get(key)
    if tuple == nil then
        return nil
    end
    if not is_live(tuple, rules) then
        if not untouched then
            space:delete(key)
        end
        return nil
    end
    return key, tuple
end

local function merged_extra(current, patch, extra_max)
    local merged, error_type, reason = merge.merge(current, patch, extra_max)
    if merged == nil then
        raise(error_type, reason)
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

-- Open a session. `token` is 16 random bytes from the service with the UUID version 4 bits
-- set; `ttl` the session's own idle TTL, or nil for the service's; `idem`, if given, is
-- {key = text, fingerprint = text, window = seconds}: a repeat of the same key answers the
-- session it opened instead of opening another.
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
        local replayed = replay(idem, rules)
        if replayed ~= nil then
            return {session = with_text_token(replayed)}
        end
    end
    local extra = box.NULL
    if args.patch ~= nil then
        extra = merged_extra(nil, args.patch, ctx.extra_max)
    end
    make_room(user_id, rules)
    local ts = now()
    local key = uuid.frombin(token, 'b')
    local tuple = box.space.sessions:insert{
        key, user_id, ip, ts, ts, extra, liveness.deadline_of(ts, ts, own_ttl, rules), own_ttl,
        schema.next_seq(),
    }
    if idem ~= nil then
        box.space.idempotency:replace{idem.key, idem.fingerprint, key, ts + idem.window}
    end
    memory.full = false
    return {session = with_text_token(tuple)}
end

-- The session, marked active now; with `ip`, moved to that address; with `patch`, its extra
-- data merged. `untouched`: served as stored, its activity not recorded (memory full).
local function get(args, ctx)
    local token, ip, patch = args.token, args.ip, args.patch
    check(type(token) == 'string', 'token must be a string')
    check(ip == nil or type(ip) == 'string', 'ip must be a string')
    local rules = ctx.rules
    local key, tuple = find_live(token, rules, ctx.untouched)
    if key == nil then
        return NONE
    end
    if ctx.untouched then
        -- Asked of an instance that may not write (no leader elected yet, too few replicas
        -- to confirm a write): the session as stored, its activity not recorded this time;
        -- extra data is a write, refused.
        if patch ~= nil then
            raise('ReplicasUnavailable', 'extra data is a write, and no write can be made now')
        end
        return {session = with_text_token(tuple), untouched = true}
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
        ops[#ops + 1] = {'=', F.EXTRA, merged_extra(tuple[F.EXTRA], patch, ctx.extra_max)}
    end
    if #ops == 0 then
        return {session = with_text_token(tuple)}
    end
    local ok, updated = pcall(space.update, space, key, ops)
    if ok then
        return {session = with_text_token(updated)}
    end
    -- With memory full, a signed-in user stays signed in: the session is served as stored,
    -- its activity (and last ip) not rewritten this time. Extra data the caller sent is a
    -- write it asked for, so that still fails.
    if patch ~= nil or not is_out_of_memory(updated) then
        error(updated)
    end
    memory.full = true
    memory.touch_skipped = memory.touch_skipped + 1
    return {session = with_text_token(tuple), untouched = true}
end

-- End the session; the session as it was. One delete either way: a lapsed session found
-- goes too (lapsed is final), but answers as none.
local function delete(args, ctx)
    check(type(args.token) == 'string', 'token must be a string')
    local key = uuid.fromstr(args.token)
    local tuple = key and box.space.sessions:delete(key)
    if tuple == nil or not is_live(tuple, ctx.rules) then
        return NONE
    end
    return {session = with_text_token(tuple)}
end

-- The same session under `new_token` (16 bytes, as for `new`): user, ip, extra, create, its
-- own TTL and its place in listings (seq) kept, activity now; the old token ends in the same
-- transaction.
local function rotate(args, ctx)
    local token, new_token = args.token, args.new_token
    check(type(token) == 'string', 'token must be a string')
    check(type(new_token) == 'string' and #new_token == 16, 'new token must be 16 bytes')
    local rules = ctx.rules
    local key, tuple = find_live(token, rules)
    if key == nil then
        return NONE
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
    return {session = with_text_token(fresh)}
end

local LISTS = {
    user = {index = 'user_seq', field = F.USER_ID, check = is_integer, what = 'user_id must be an integer'},
    ip = {index = 'ip_seq', field = F.IP, check = function(v) return type(v) == 'string' end,
          what = 'ip must be a string'},
}

local function list_spec(kind, key)
    local spec = LISTS[kind]
    check(spec ~= nil, 'unknown list')
    check(spec.check(key), spec.what)
    return spec
end

-- Live sessions under one key of a (key, seq) index, newest opened first, at most `limit`
-- of them and at most `page_bytes` bytes of tuples (but at least one session, whatever it
-- holds), starting after the session whose seq is `after` when given. A session's seq
-- never changes (rotate keeps it), so a walk page by page meets every session that stays
-- under the key and live exactly once, whatever happens to the others meanwhile; sessions
-- opened during the walk come before its start and are not met. Replies {sessions, more,
-- last: the seq of the last one}. The walk yields every LIST_YIELD_EVERY tuples, so a long
-- one never holds up other requests, and gives up once the deadline has passed.
local function list(args, ctx)
    local spec = list_spec(args.kind, args.key)
    local key, limit, page_bytes, after = args.key, args.limit, args.page_bytes, args.after
    check(type(limit) == 'number' and limit >= 1, 'limit must be a positive number')
    check(type(page_bytes) == 'number' and page_bytes >= 1, 'page_bytes must be positive')
    check(after == nil or is_integer(after), 'after must be a seq')
    local rules = ctx.rules
    local position, iterator = {key}, 'REQ'
    if after ~= nil then
        position, iterator = {key, after}, 'LT'
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
            check_deadline(ctx.deadline)
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
    return {sessions = result, more = more, last = last}
end

-- How many live sessions a user has. The walk yields like a listing's and gives up past the
-- deadline. Replies {count}.
local function count(args, ctx)
    local user_id = args.user_id
    check(is_integer(user_id), 'user_id must be an integer')
    local live, seen = 0, 0
    for _, tuple in box.space.sessions.index.user_seq:pairs({user_id}, {iterator = 'EQ'}) do
        seen = seen + 1
        if seen % LIST_YIELD_EVERY == 0 then
            fiber.yield()
            check_deadline(ctx.deadline)
        end
        if is_live(tuple, ctx.rules) then
            live = live + 1
        end
    end
    return {count = live}
end

-- End the live sessions of a user (`kind` "user") or an address ("ip"), except the session
-- `except_token` (which must then be a live session of that user, or nothing is ended;
-- `checked` says an earlier call of the same request checked it already), in transactions
-- of BULK_TRANSACTION that yield between them, at most BULK_CALL per call and none begun
-- after the deadline. Lapsed sessions met on the way go too, uncounted. Replies {deleted,
-- more}.
local function delete_all(args, ctx)
    local spec = list_spec(args.kind, args.key)
    local key, except_token, rules = args.key, args.except_token, ctx.rules
    local space = box.space.sessions
    local except = nil
    if except_token ~= nil then
        check(type(except_token) == 'string', 'except must be a string')
        except = uuid.fromstr(except_token)
        local kept = except and space:get(except)
        if not args.checked and (not kept or kept[spec.field] ~= key or not is_live(kept, rules)) then
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
            return {deleted = ended, more = false}
        end
        if fiber.time() > ctx.deadline then
            -- What is done stays done; the service calls again for the rest.
            return {deleted = ended, more = true}
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
    return {deleted = ended, more = true}
end

-- The wire contract, declared once. `batch`: calls of it made at once are coalesced into one
-- `batch` procedure call, one transaction, each answering on its own; `bulk`: it walks many
-- sessions, so it runs in one of BULK_SLOTS and the service sends it over its bulk
-- connection. Replies are maps with these fields (a missing one is nil).
local OPERATIONS = {
    new = {fn = new, batch = true, args = {'token', 'user_id', 'ip', 'patch', 'ttl', 'idem'},
           reply = {'session'}},
    get = {fn = get, batch = true, args = {'token', 'ip', 'patch'}, reply = {'session', 'untouched'}},
    delete = {fn = delete, batch = true, args = {'token'}, reply = {'session'}},
    rotate = {fn = rotate, batch = true, args = {'token', 'new_token'}, reply = {'session'}},
    list = {fn = list, bulk = true, args = {'kind', 'key', 'limit', 'page_bytes', 'after'},
            reply = {'sessions', 'more', 'last'}},
    delete_all = {fn = delete_all, bulk = true, writes = true,
                  args = {'kind', 'key', 'except_token', 'checked'}, reply = {'deleted', 'more'}},
    count = {fn = count, bulk = true, args = {'user_id'}, reply = {'count'}},
}
-- What every call carries beside its own arguments.
local CONTEXT = {'rules', 'deadline', 'extra_max', 'untouched'}

for _, spec in pairs(OPERATIONS) do
    spec.accepts = {}
    for _, name in ipairs(spec.args) do
        spec.accepts[name] = true
    end
end

local function check_args(operation, spec, args)
    check(type(args) == 'table', 'arguments must be a map')
    for name in pairs(args) do
        check(spec.accepts[name], ('%s takes no argument %s'):format(operation, tostring(name)))
    end
end

-- One item of a batch: its arguments checked, then its operation (a plain function, so
-- that a batch makes no closure per item).
local function run_item(operation, spec, args, ctx)
    check_args(operation, spec, args)
    return spec.fn(args, ctx)
end

-- The context of a call, checked once per call (not per item).
local function check_context(ctx)
    check(type(ctx) == 'table', 'context must be a map')
    check(liveness.valid(ctx.rules), 'rules must be {ttl > 0, lifetime >= 0, cap >= 0}')
    check(type(ctx.deadline) == 'number', 'deadline must be a number')
    check(ctx.extra_max == nil or type(ctx.extra_max) == 'number', 'extra_max must be a number')
    check(ctx.untouched == nil or type(ctx.untouched) == 'boolean', 'untouched must be a boolean')
    check_deadline(ctx.deadline)
end

local function error_item(err)
    if type(err) == 'cdata' then
        if is_out_of_memory(err) then
            memory.full = true
        end
        return {error = {type = err.type, code = err.code, message = err.message}}
    end
    -- A plain Lua error is a bug here, not bad input: log it where an operator looks.
    log.error('sessions: procedure failed: %s', tostring(err))
    return {error = {type = 'LuaError', code = 0, message = tostring(err)}}
end

-- How many peers' replication `side` ('upstream': this instance following them,
-- 'downstream': them following this one) has `status`.
local function count_peers(side, status)
    local found = 0
    for _, peer_info in pairs(box.info.replication) do
        if peer_info[side] ~= nil and peer_info[side].status == status then
            found = found + 1
        end
    end
    return found
end

local UNCONFIRMED = 'too few replicas answer to confirm this write (synchronous replication); '
    .. 'nothing was changed, try again later'

-- Whether a write can be confirmed now: always without synchronous replication; with it,
-- while enough replicas follow this instance to make the quorum.
local function confirmable()
    if not box.space.sessions.is_sync then
        return true
    end
    local quorum = box.cfg.replication_synchro_quorum
    if type(quorum) ~= 'number' then
        return true
    end
    -- This instance, and each replica following it.
    return 1 + count_peers('downstream', 'follow') >= quorum
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
local function served_as_stored(items, replies, rules, err)
    local space = box.space.sessions
    for i, args in ipairs(items) do
        if replies[i].session ~= nil then
            local key = uuid.fromstr(args.token)
            local tuple = key and space:get(key)
            if args.patch ~= nil then
                replies[i] = error_item(err)
            elseif tuple ~= nil and is_live(tuple, rules) then
                replies[i] = {session = with_text_token(tuple), untouched = true}
            else
                replies[i] = NONE
            end
        end
    end
    return replies
end

-- Calls of one batchable operation made at once, as one transaction (one WAL write). Each
-- item is that operation's argument map and gets its own reply: the operation's, or
-- {error = {type, code, message}}, which undoes only that item's writes. An error of the
-- whole call (a failed WAL write at commit, say) undoes every item and reaches the service
-- as the call's own error.
local function batch(operation, items, ctx)
    local spec = OPERATIONS[operation]
    check(spec ~= nil and spec.batch, 'unknown batch operation')
    check(type(items) == 'table', 'items must be an array')
    check_context(ctx)
    -- The purge learns the service's rules from its calls (expiry.lua).
    expiry.set_rules(ctx.rules)
    if not ctx.untouched and not confirmable() then
        -- Known at once, rather than after SESSIONS_SYNC_TIMEOUT: `get`s serve their sessions
        -- as stored, the writes are refused and change nothing.
        if operation ~= 'get' then
            local refused = {}
            for i = 1, #items do
                refused[i] = error_item(box.error.new({type = 'ReplicasUnavailable', reason = UNCONFIRMED}))
            end
            return refused
        end
        ctx = table.copy(ctx)
        ctx.untouched = true
    end
    local replies = {}
    -- Nothing in a write yields before commit, so the batch is atomic and isolated.
    box.begin()
    for i, args in ipairs(items) do
        -- An item that fails after some of its writes (a `new` that made room, then found
        -- memory full) undoes all of them, and only them.
        local savepoint = box.savepoint()
        local ok, reply = pcall(run_item, operation, spec, args, ctx)
        if ok then
            replies[i] = reply
        else
            box.rollback_to_savepoint(savepoint)
            replies[i] = error_item(reply)
        end
    end
    if operation ~= 'get' then
        box.commit()
        return replies
    end
    local committed, err = pcall(box.commit)
    if committed then
        return replies
    end
    if not is_sync_failure(err) then
        error(err)
    end
    return served_as_stored(items, replies, ctx.rules, err)
end

-- One call of an operation that is not batched; its reply, or its error raised.
local function call(operation, args, ctx)
    local spec = OPERATIONS[operation]
    check(spec ~= nil and not spec.batch, 'unknown operation')
    check_context(ctx)
    -- The purge learns the service's rules from its calls (expiry.lua).
    expiry.set_rules(ctx.rules)
    check_args(operation, spec, args)
    if spec.writes and not confirmable() then
        raise('ReplicasUnavailable', UNCONFIRMED)
    end
    if spec.bulk then
        return in_bulk_slot(ctx.deadline, spec.fn, args, ctx)
    end
    return spec.fn(args, ctx)
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
-- How many of this instance's upstreams stopped on an error (a conflict, say): it no longer
-- follows them, and says so rather than drop a row in silence.
local function replication_stopped()
    return count_peers('upstream', 'stopped')
end

local function term()
    local raft = election.state()
    if raft ~= nil then
        return raft.term
    end
    return role.get().generation or 0
end

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
        replication_stopped = replication_stopped(),
        -- Whether a write can be confirmed now (synchronous replication with too few
        -- replicas following: no).
        writes_confirmable = confirmable(),
        -- With elections (election.lua): this instance's state, the term, the leader's id.
        election = election.state() or box.NULL,
        -- Which promotion this instance's writes belong to: the election term, else the
        -- generation of its last `promote` (role.lua). The service prefers the writable
        -- instance of the latest one (sessions/storage).
        term = term(),
    }
end

-- What another instance asks before it becomes writable (role.lua): whether this one is,
-- and what it has.
local function peer()
    return {ro = box.info.ro, role = role.get().role or box.NULL, vclock = role.vclock(), term = term()}
end

local procedures = {
    batch = batch,
    call = call,
    info = info,
    peer = peer,
}

-- The contract this Lua speaks, for the service to compare with its own at connect time.
function procedures.describe()
    local operations = {}
    for name, spec in pairs(OPERATIONS) do
        operations[name] = {
            args = spec.args, reply = spec.reply, batch = spec.batch == true, bulk = spec.bulk == true,
        }
    end
    local names, fields = {}, {}
    for name in pairs(procedures) do
        names[#names + 1] = name
    end
    table.sort(names)
    for _, field in ipairs(F.FORMAT) do
        fields[#fields + 1] = field.name
    end
    return {
        procedures = names,
        operations = operations,
        context = CONTEXT,
        rules = liveness.FIELDS,
        errors = ERRORS,
        fields = fields,
    }
end

-- What the service calls, and so all that its Tarantool user may execute (access.lua);
-- `peer` is for the other instances' `replicator` too.
return procedures
