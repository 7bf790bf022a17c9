-- The procedures of a router of the sharded mode (router.lua), by the names and with the
-- arguments of a single instance's (procedures.lua), so that the service calls a router as
-- it calls an instance. Each item goes to the storage that holds its bucket, through
-- vshard.router.callrw, which holds the bucket there for the call (a bucket on its way to
-- another replica set is retried there once it has arrived), into that storage's own
-- `batch` or `call`: the operations run where the sessions are, unchanged.
--
-- The bucket of an item: its user's for `new` (and for a listing, count or bulk end by
-- user), the one its token carries for `get`, `delete` and `rotate` (buckets.lua).
local fiber = require('fiber')
local msgpack = require('msgpack')
local vshard = require('vshard')
local vshard_error = require('vshard.error')

local F = require('sessions.fields')

local buckets = require('sessions.buckets')
local errors = require('sessions.errors')
local procedures = require('sessions.procedures')
local schema = require('sessions.schema')

local BATCH, CALL = 'sessions.batch', 'sessions.call'
-- The least time a routed call is given, past its deadline's: the storage itself refuses
-- work past the deadline, with the error the service expects.
local MIN_TIMEOUT = 0.05
-- The operations by address (defined below call's helpers).
local BY_IP

local function timeout_of(ctx)
    local deadline = type(ctx) == 'table' and ctx.deadline
    if type(deadline) ~= 'number' then
        return MIN_TIMEOUT
    end
    return math.max(deadline - fiber.time(), MIN_TIMEOUT)
end

-- How long a call waits before it asks again for a bucket being sent to another replica set.
local TRANSFER_PAUSE = 0.01

-- Why the master of `set` (a vshard replicaset) cannot take a call now, or nil: unknown (a
-- set that fails over, its master lost and none promoted yet) or not connected. Such a call
-- fails at once rather than at its deadline: seen here with a set's master killed, every
-- coalesced batch that held an item of that set's users waited the whole deadline, which the
-- service's own timeout equals, so the other sets' items in the batch failed with it (their
-- users got 503s, and one answer a second).
local function master_lost(set)
    local master = set.master
    if master == nil then
        return set.is_master_auto and ('replica set %s has no writable master'):format(set.id) or nil
    end
    if not master:is_connected() then
        return ('the master of replica set %s is not connected'):format(set.id)
    end
    return nil
end

-- A lost master's error, as vshard's for a connection that is not there (a 503).
local function unavailable(message)
    return {type = 'ClientError', code = box.error.NO_CONNECTION, message = message}
end

-- vshard.router.callrw, asked again until the deadline while the bucket is being sent:
-- vshard's router retries a bucket that has arrived elsewhere (WRONG_BUCKET) but answers
-- TRANSFER_IS_IN_PROGRESS at once for a write, and every call here is one. The storage
-- refused before running anything, so asking again is safe; a session in a moving bucket
-- is served once the bucket is on its new set (or, past the deadline, the storage is
-- unavailable: a 503, never a session not found).
local function callrw(bucket, func, args, ctx)
    local set = vshard.router.route(bucket)
    local lost = set ~= nil and master_lost(set)
    if lost then
        return nil, unavailable(lost)
    end
    local deadline = fiber.clock() + timeout_of(ctx)
    while true do
        local answer, err = vshard.router.callrw(bucket, func, args,
            {timeout = math.max(deadline - fiber.clock(), MIN_TIMEOUT)})
        if answer ~= nil or type(err) ~= 'table' or err.type ~= 'ShardingError'
                or err.code ~= vshard_error.code.TRANSFER_IS_IN_PROGRESS
                or fiber.clock() >= deadline then
            return answer, err
        end
        fiber.sleep(TRANSFER_PAUSE)
    end
end

-- The bucket of one item of a batch; nil when its arguments name none (a malformed token).
local function bucket_of_item(operation, args)
    if type(args) ~= 'table' then
        return nil
    end
    if operation == 'new' then
        if not errors.is_integer(args.user_id) then
            return nil
        end
        return buckets.of_user(args.user_id)
    end
    -- The service's word for the session's bucket (a hashed store's key has lost the
    -- token's), else the token's own.
    local bucket = args.bucket
    if errors.is_integer(bucket) and bucket >= 1 and bucket <= buckets.COUNT then
        return bucket
    end
    return buckets.of_token(args.token)
end

-- A storage's failure as an item of a batch, or as the call's error: a known type of the
-- procedures is kept, anything else (no route, a timeout, a connection lost) is the
-- storage being unavailable, `where` (a text) saying which.
local function failure(err, where)
    local kind = type(err) == 'table' and (err.custom_type or err.type) or nil
    local message = type(err) == 'table' and tostring(err.message) or tostring(err)
    for _, known in ipairs(errors.TYPES) do
        if kind == known then
            return {error = {type = kind, code = err.code or 0, message = message}}
        end
    end
    return {error = {
        type = 'ClientError', code = box.error.NO_CONNECTION,
        message = ('%s: %s'):format(where, message),
    }}
end

-- One bucket's items, in one call of the storage's batch; its replies in `replies`.
local function batch_bucket(operation, group, ctx, replies)
    local items = {}
    for i, position in ipairs(group.positions) do
        items[i] = group.items[position]
    end
    local answer, err = callrw(group.bucket, BATCH, {operation, items, ctx}, ctx)
    for i, position in ipairs(group.positions) do
        replies[position] = answer ~= nil and answer[i]
            or failure(err, ('the replica set of bucket %d'):format(group.bucket))
    end
end

-- fn(unpack(args)) for each `args` of `calls`, each in a fiber of its own, all at once;
-- returns when every one is done.
local function all_at_once(fn, calls)
    local running = {}
    for i, args in ipairs(calls) do
        local worker = fiber.new(fn, unpack(args))
        worker:set_joinable(true)
        running[i] = worker
    end
    for _, worker in ipairs(running) do
        worker:join()
    end
end

-- `func` called with `args` on the master of every replica set at once, each given at most
-- `timeout`: {answer = ..., err = ...} by replica set uuid (`lost` too when its master is).
local function each_set(func, args, timeout)
    local results, calls = {}, {}
    local function ask(id, set)
        local lost = master_lost(set)
        if lost then
            results[id] = {err = lost, lost = true}
            return
        end
        local answer, err = set:callrw(func, args, {timeout = timeout})
        results[id] = {answer = answer, err = answer == nil and (err or 'no answer') or nil}
    end
    for id, set in pairs(vshard.router.routeall()) do
        calls[#calls + 1] = {id, set}
    end
    all_at_once(ask, calls)
    return results
end

-- Why some replica set cannot take a call now (master_lost), or nil when all can. A call
-- that needs every set fails at once then: map_callrw would wait its whole deadline on the
-- lost one, and such calls share the service's queue of bulk work with the other sets' users'
-- listings (seen: two callers of /ip/count starved /user of a healthy set).
local function any_lost()
    for _, set in pairs(vshard.router.routeall()) do
        local lost = master_lost(set)
        if lost then
            return lost
        end
    end
    return nil
end

-- The operations whose items name a session by its id, which carries no bucket.
local BY_ID = {peek = true, delete_id = true}
-- A reply that found nothing.
local NONE = setmetatable({}, {__serialize = 'map'})

-- Items by id: all of them on every replica set at once, through map_callrw, which holds
-- every bucket in place for the call (a session on its way to another set is found once,
-- and an end by id never deletes the one copy while the move carries the other). An item's
-- reply is the one of the set that found its session, else the first error, else none.
-- Each such call costs every replica set a call: ids are for the rarer calls (a devices
-- page, an end by id), never the check path.
-- While a replica set is lost: a look-up (peek) asks the other sets, each on its own, and
-- answers what one of them found; what none found may be on the lost set (503, never a
-- "not found"). An end by id fails at once: without map_callrw's hold on every bucket, a
-- session on its way between two sets could keep the copy the end did not meet.
local function by_id_while_lost(operation, items, ctx, lost)
    local replies, failed = {}, failure(unavailable(lost), 'a replica set')
    local answers = {}
    if operation == 'peek' then
        for _, result in pairs(each_set(BATCH, {operation, items, ctx}, timeout_of(ctx))) do
            if type(result.answer) == 'table' then
                answers[#answers + 1] = result.answer
            end
        end
    end
    for i = 1, #items do
        replies[i] = failed
        for _, answer in ipairs(answers) do
            local reply = answer[i]
            if type(reply) == 'table' and reply.session ~= nil then
                replies[i] = reply
            end
        end
    end
    return replies
end

local function batch_by_id(operation, items, ctx)
    local lost = any_lost()
    if lost ~= nil then
        return by_id_while_lost(operation, items, ctx, lost)
    end
    local answers, err, where = vshard.router.map_callrw(BATCH, {operation, items, ctx},
        {timeout = timeout_of(ctx)})
    local replies = {}
    if answers == nil then
        local failed = failure(err, ('replica set %s'):format(tostring(where)))
        for i = 1, #items do
            replies[i] = failed
        end
        return replies
    end
    for i = 1, #items do
        local found, failed
        for _, answer in pairs(answers) do
            local reply = answer[1][i]
            if reply.session ~= nil then
                found = reply
            elseif reply.error ~= nil then
                failed = failed or reply
            end
        end
        replies[i] = found or failed or NONE
    end
    return replies
end

-- Calls of one batchable operation, each item to its bucket's storage (those of one bucket
-- in one call, the buckets' calls at once): a reply per item, as a single instance's batch.
-- Items by id go to every replica set (batch_by_id).
local function batch(operation, items, ctx)
    errors.check(type(items) == 'table', 'items must be an array')
    if BY_ID[operation] then
        return batch_by_id(operation, items, ctx)
    end
    local replies, groups, order = {}, {}, {}
    for position, args in ipairs(items) do
        local bucket = bucket_of_item(operation, args)
        if bucket == nil then
            replies[position] = errors.item(box.error.new({
                type = 'InvalidArgument', reason = operation .. ' names no bucket (user_id or token)',
            }))
        else
            local group = groups[bucket]
            if group == nil then
                group = {bucket = bucket, items = items, positions = {}}
                groups[bucket] = group
                order[#order + 1] = group
            end
            group.positions[#group.positions + 1] = position
        end
    end
    if #order == 1 then
        batch_bucket(operation, order[1], ctx, replies)
        return replies
    end
    local calls = {}
    for i, group in ipairs(order) do
        calls[i] = {operation, group, ctx, replies}
    end
    all_at_once(batch_bucket, calls)
    return replies
end

-- A storage's failure as the call's error (failure says which).
local function raise(err, where)
    local failed = failure(err, where).error
    if failed.type == 'ClientError' then
        box.error({code = failed.code, reason = failed.message})
    end
    errors.raise(failed.type, failed.message)
end

-- What the stores keep, as one answer for the service's check at connect (token_storage):
-- a store cut short in a conversion, then one that keeps the other kind than `mode`, is
-- what the service must hear of; stores that are empty agree with either. A set whose master
-- is lost is left out while another answers: a service that could not start during one
-- set's outage would fail every set's users. Nothing is risked: every call carries the
-- service's mode, which each storage checks against its own mark (a set back with a store of
-- the other kind refuses its calls, 503, as a single instance does).
local function token_storage(args, ctx)
    local found, answered, lost = {}, false, nil
    for id, result in pairs(each_set(CALL, {'token_storage', args, ctx}, timeout_of(ctx))) do
        if result.lost then
            lost = lost or {result.err, ('replica set %s'):format(id)}
        elseif result.answer == nil then
            raise(result.err, ('replica set %s'):format(id))
        else
            answered = true
            found[result.answer.stored] = true
        end
    end
    if not answered and lost ~= nil then
        raise(lost[1], lost[2])
    end
    local other = args.mode == 'hash' and 'plain' or 'hash'
    for _, stored in ipairs({'converting', other, args.mode}) do
        if found[stored] then
            return {stored = stored}
        end
    end
    return {stored = 'empty'}
end

-- An address's sessions are on every replica set: an operation by address is called on each
-- one's master through vshard.router.map_callrw, which holds every bucket where it is for
-- the call (none moves meanwhile, so none is met twice or missed); the answers, in no order.
local function on_every_set(operation, args, ctx)
    local lost = any_lost()
    if lost ~= nil then
        raise(unavailable(lost), 'a replica set')
    end
    local answers, err, where = vshard.router.map_callrw(CALL, {operation, args, ctx},
        {timeout = timeout_of(ctx)})
    if answers == nil then
        raise(err, ('replica set %s'):format(tostring(where)))
    end
    local replies = {}
    for _, answer in pairs(answers) do
        replies[#replies + 1] = answer[1]
    end
    return replies
end

-- One page of an address's sessions from each replica set's page (list.lua's, all from the
-- same `after`), newest opened first: a merge by seq, which is unique across the cluster
-- (schema.next_seq) and never changes, so the one seq a cursor holds is every replica set's
-- position too, and a walk goes on from it on each. The merge stops at `limit`, at
-- `page_bytes` (but one session at least), or where a page that has more ran out: beyond it
-- would come that set's sessions not listed yet.
local function merged_page(pages, args)
    local heads, result, bytes, more, last = {}, {}, 0, false, box.NULL
    for i = 1, #pages do
        heads[i] = 1
    end
    while true do
        local best, stop = nil, false
        for i, page in ipairs(pages) do
            local row = page.sessions[heads[i]]
            if row == nil then
                stop = stop or page.more
            elseif best == nil or row[F.SEQ] > pages[best].sessions[heads[best]][F.SEQ] then
                best = i
            end
        end
        if stop or best == nil then
            more = more or stop
            break
        end
        local row = pages[best].sessions[heads[best]]
        local size = #msgpack.encode(row)
        if #result >= args.limit or (#result > 0 and bytes + size > args.page_bytes) then
            more = true
            break
        end
        result[#result + 1], bytes, last = row, bytes + size, row[F.SEQ]
        heads[best] = heads[best] + 1
    end
    return {sessions = result, more = more, last = last}
end

-- The event feed over every replica set. Events stay on the set that wrote them (a log:
-- `events` has no bucket_id index, so vshard moves none), and their seqs order them across
-- sets (events.lua): a page is every set's page from the same `after`, merged by seq, up to
-- the lowest `stable` of the sets (and the last event of a set's page that was full), so an
-- event a slower set commits later never sorts below a cursor already handed out. A set
-- that does not answer stops the feed (its events would be skipped): the call fails, a 503.

-- How long a wait's look at the sets may take, and how often it looks again while an event
-- is there but above another set's stable bound (which moves with the clock).
local FEED_LOOK = 1
local BOUND_POLL = 0.005
-- How fast seqs pass with the clock (events.lua).
local SEQS_PER_SECOND = 1e6 / require('sessions.events').TICK_US * require('sessions.events').SETS
-- A wait answers this much before its deadline (as events_wait.lua does).
local WAIT_MARGIN = 0.1
-- How long a watcher's wait on one storage lasts before it asks again (and checks whether
-- anybody still waits).
local WATCH_FOR = 2

local E = F.EVENTS

-- Every set's page after `after`, and the bound the merge may go up to.
local function feed_pages(after, limit, ctx, timeout)
    local pages, bound = {}, nil
    for id, result in pairs(each_set(CALL, {'events', {after = after, limit = limit}, ctx}, timeout)) do
        if result.answer == nil then
            raise(result.err, ('replica set %s'):format(id))
        end
        local page = result.answer
        pages[#pages + 1] = page
        local upto = page.stable
        if #page.events >= limit and page.events[#page.events][E.SEQ] < upto then
            upto = page.events[#page.events][E.SEQ]
        end
        if bound == nil or upto < bound then
            bound = upto
        end
    end
    return pages, bound or 0
end

-- The highest seq a page from `after` shows now: of an event at most `bound`, or a set's
-- head when all of that set's events are (else `after`).
local function visible_head(pages, bound, after)
    local top = after
    for _, page in ipairs(pages) do
        if page.head <= bound and page.head > top then
            top = page.head
        end
        for _, event in ipairs(page.events) do
            if event[E.SEQ] <= bound and event[E.SEQ] > top then
                top = event[E.SEQ]
            end
        end
    end
    return top
end

local function check_after(after)
    errors.check(errors.is_integer(after) and after >= 0, 'after must be a seq')
end

-- `events`: at most `limit` events after `after`, merged by seq over every set.
local function feed_page(args, ctx)
    local after, limit = args.after or 0, args.limit
    check_after(after)
    errors.check(errors.is_integer(limit) and limit >= 1, 'limit must be a positive number')
    local pages, bound = feed_pages(after, limit, ctx, timeout_of(ctx))
    local merged, missed = {}, false
    for _, page in ipairs(pages) do
        missed = missed or page.missed
        for _, event in ipairs(page.events) do
            if event[E.SEQ] <= bound then
                merged[#merged + 1] = event
            end
        end
    end
    table.sort(merged, function(a, b) return a[E.SEQ] < b[E.SEQ] end)
    for i = #merged, limit + 1, -1 do
        merged[i] = nil
    end
    return {events = merged, missed = missed, head = visible_head(pages, bound, after), stable = bound}
end

-- The router's waits: while any runs, one watcher fiber per set keeps one `events_wait` open
-- on it (however many service processes wait here) and wakes them when its head moves.
local watch = {waiting = 0, ctx = nil, sets = {}, changed = fiber.cond(), generation = 0}

local function moved()
    watch.generation = watch.generation + 1
    watch.changed:broadcast()
end

local function watcher(id)
    local seen = watch.sets[id]
    while watch.waiting > 0 do
        local set = vshard.router.routeall()[id]
        if set == nil then
            break
        end
        local ctx = table.copy(watch.ctx)
        ctx.deadline = fiber.time() + WATCH_FOR
        local answer = set:callrw(CALL, {'events_wait', {after = seen.head or 0}, ctx},
            {timeout = WATCH_FOR + 1})
        if answer == nil then
            moved()
            fiber.sleep(FEED_LOOK / 2)
        elseif answer.head ~= seen.head then
            seen.head = answer.head
            moved()
        end
    end
    watch.sets[id] = nil
end

local function wait_visible(after, ctx)
    local deadline = ctx.deadline - WAIT_MARGIN
    for id in pairs(vshard.router.routeall()) do
        if watch.sets[id] == nil then
            watch.sets[id] = {}
            fiber.create(watcher, id)
        end
    end
    while true do
        local generation = watch.generation
        local pages, bound = feed_pages(after, 1, ctx, FEED_LOOK)
        local top = visible_head(pages, bound, after)
        local left = deadline - fiber.time()
        if top > after or left <= 0 then
            return top
        end
        if watch.generation == generation then
            -- An event there but above the bound: about when the bound, which moves with the
            -- lagging set's clock, passes it (an event in flight there holds it only for its
            -- WAL write: BOUND_POLL); none: until a watcher says a head moved.
            local pause = FEED_LOOK
            for _, page in ipairs(pages) do
                if #page.events > 0 then
                    local gap = tonumber(page.events[1][E.SEQ] - bound) / SEQS_PER_SECOND
                    pause = math.min(pause, math.max(gap, BOUND_POLL))
                end
            end
            watch.changed:wait(math.min(left, pause))
        end
    end
end

-- `events_wait`: until a page from `after` would show an event, or the deadline is near;
-- {head}, that event's seq or a higher visible one (else `after`).
local function feed_wait(args, ctx)
    check_after(args.after)
    watch.ctx = ctx
    watch.waiting = watch.waiting + 1
    local ok, result = pcall(wait_visible, args.after, ctx)
    watch.waiting = watch.waiting - 1
    if not ok then
        error(result)
    end
    return {head = result}
end

-- `webhook_lease`: to the storage of the lease's bucket (webhook_lease.lua), with `start`,
-- the lowest stable bound of the sets: where delivery starts if the lease is first taken
-- (every event up to it is written; asked at each call, as the router cannot know whether
-- the entry is there: one call to every set per delivered event, which its HTTP round trip
-- dwarfs).
local LEASE_BUCKET = require('sessions.operations.webhook_lease').BUCKET

local function webhook_lease(args, ctx)
    -- From above any seq (events.lua's stay below 2^53): empty pages, their bounds only.
    local _, bound = feed_pages(2^53, 1, ctx, timeout_of(ctx))
    local forwarded = table.copy(args)
    forwarded.start = bound
    local answer, err = callrw(LEASE_BUCKET, CALL, {'webhook_lease', forwarded, ctx}, ctx)
    if answer == nil then
        raise(err, ('the replica set of bucket %d'):format(LEASE_BUCKET))
    end
    return answer
end

-- The feed's operations, served over every set.
local FEED = {events = feed_page, events_wait = feed_wait, webhook_lease = webhook_lease}

-- How the answers of every replica set make one, by operation.
BY_IP = {
    list = merged_page,
    count = function(replies)
        local total = 0
        for _, reply in ipairs(replies) do
            total = total + reply.count
        end
        return {count = total}
    end,
    -- Each set ends at most its bounded number per call; the service calls again while any
    -- has more.
    delete_all = function(replies)
        local deleted, more = 0, false
        for _, reply in ipairs(replies) do
            deleted, more = deleted + reply.deleted, more or reply.more
        end
        return {deleted = deleted, more = more}
    end,
}

-- One call of another operation: by user, to the user's bucket's storage; by address, to
-- every replica set (BY_IP).
local function call(operation, args, ctx)
    errors.check(type(args) == 'table', 'arguments must be a map')
    if operation == 'token_storage' then
        return token_storage(args, ctx)
    end
    if FEED[operation] ~= nil then
        return FEED[operation](args, ctx)
    end
    if args.kind == 'ip' and BY_IP[operation] ~= nil then
        return BY_IP[operation](on_every_set(operation, args, ctx), args)
    end
    local bucket
    if args.kind == 'user' and errors.is_integer(args.key) then
        bucket = buckets.of_user(args.key)
    end
    errors.check(bucket ~= nil, ('%s is not routed by a router yet'):format(tostring(operation)))
    local answer, err = callrw(bucket, CALL, {operation, args, ctx}, ctx)
    if answer == nil then
        raise(err, ('the replica set of bucket %d'):format(bucket))
    end
    return answer
end

-- How long `info` waits for a replica set: the service's probes must not wait on a lost one.
local INFO_TIMEOUT = 0.5

-- `info` of the cluster, by the names of an instance's (monitor.lua), from every replica
-- set's master at once: counts summed (sessions, purged, memory used, bulk calls, gets
-- untouched, replication stopped), the earliest next expiry and the oldest last snapshot,
-- the lowest schema version, `writes_confirmable` when every set that answers can confirm.
-- `sets_lost` counts the replica sets whose master does not answer or cannot write: their
-- users' calls fail (503 per item), everyone else's are served. So `ro` is true only when
-- every set is lost: the service takes a router that says `ro` for one that cannot write at
-- all and fails every write at once (sessions/storage), which for one lost set of several
-- answered 503 to the users of the healthy ones too.
-- The router's own: its clock (the deadlines the service sends are on it), its Tarantool's
-- version, the role `router`, no vclock, no election and term 0 (a router holds no data,
-- and any router of the cluster serves the same).
local function info()
    local result = {
        now = fiber.time(), bulk_active = 0, bulk_waiting = 0, ro = false, role = 'router',
        vclock = setmetatable({}, {__serialize = 'map'}), schema_version = schema.VERSION,
        schema_latest = schema.VERSION, sessions = 0, next_expiry = box.NULL, purged = 0,
        memory_used = 0, tarantool_version = box.info.version, last_checkpoint = box.NULL,
        storage_full = false, touch_skipped = 0, replication_stopped = 0,
        writes_confirmable = true, election = box.NULL, term = 0, sets_lost = 0,
    }
    local function earliest(name, value)
        if value ~= nil and (result[name] == nil or value < result[name]) then
            result[name] = value
        end
    end
    local sets = 0
    for _, answered in pairs(each_set('sessions.info', {}, INFO_TIMEOUT)) do
        sets = sets + 1
        local one = answered.answer
        if one == nil or one.ro then
            result.sets_lost = result.sets_lost + 1
        end
        if one ~= nil then
            for _, name in ipairs({'bulk_active', 'bulk_waiting', 'sessions', 'purged', 'memory_used',
                    'touch_skipped', 'replication_stopped'}) do
                result[name] = result[name] + one[name]
            end
            earliest('next_expiry', one.next_expiry)
            earliest('last_checkpoint', one.last_checkpoint)
            earliest('schema_version', one.schema_version)
            result.storage_full = result.storage_full or one.storage_full
            result.writes_confirmable = result.writes_confirmable and one.writes_confirmable
        end
    end
    result.ro = result.sets_lost == sets
    return result
end

return {
    batch = batch,
    call = call,
    -- The contract is the storages': the same modules declare it.
    describe = procedures.describe,
    info = info,
    peer = procedures.peer,
}
