-- How the service's calls reach the operations (operations.lua): `batch`, calls of one
-- batchable operation made at once as one transaction, each item answering alone, and
-- `call`, one call of any other. Both check the call's context and each call's arguments.
local errors = require('sessions.errors')
local bulk = require('sessions.bulk')
local events = require('sessions.events')
local expiry = require('sessions.expiry')
local hashing = require('sessions.hashing')
local liveness = require('sessions.liveness')
local memory = require('sessions.memory')
local operations = require('sessions.operations')
local sync = require('sessions.sync')

local check = errors.check

-- What every call carries beside its own arguments (part of the wire contract).
-- `events`: the feed's retention {keep = seconds, most = events} when it is on (events.lua).
local CONTEXT = {'rules', 'deadline', 'extra_max', 'untouched', 'events', 'token_storage'}

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
    local feed = ctx.events
    check(feed == nil or (type(feed) == 'table' and type(feed.keep) == 'number' and feed.keep >= 1
        and type(feed.most) == 'number' and feed.most >= 1), 'events must be {keep >= 1, most >= 1}')
    check(ctx.token_storage == 'plain' or ctx.token_storage == 'hash', 'token_storage must be plain or hash')
    bulk.check_deadline(ctx.deadline)
end

local function error_item(err)
    memory.note(err)
    return errors.item(err)
end

-- Calls of one batchable operation made at once, as one transaction (one WAL write). Each
-- item is that operation's argument map and gets its own reply: the operation's, or
-- {error = {type, code, message}} (errors.ITEM), which undoes only that item's writes. An
-- error of the whole call (a failed WAL write at commit, say) undoes every item and reaches
-- the service as the call's own error.
local function batch(operation, items, ctx)
    local spec = operations[operation]
    check(spec ~= nil and spec.batch, 'unknown batch operation')
    check(type(items) == 'table', 'items must be an array')
    check_context(ctx)
    hashing.check_mode(ctx.token_storage)
    -- The purge learns the service's rules from its calls (expiry.lua), the feed its setting.
    expiry.set_rules(ctx.rules)
    events.configure(ctx.events)
    if not ctx.untouched and not sync.confirmable() then
        -- Known at once, rather than after SESSIONS_SYNC_TIMEOUT: `get`s serve their sessions
        -- as stored, the writes are refused and change nothing.
        if not spec.serves_untouched then
            return sync.refused(#items)
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
        local marked = events.mark()
        local ok, reply = pcall(run_item, operation, spec, args, ctx)
        if ok then
            replies[i] = reply
        else
            box.rollback_to_savepoint(savepoint)
            events.undo(marked)
            replies[i] = error_item(reply)
        end
    end
    if not spec.serves_untouched then
        box.commit()
        return replies
    end
    local committed, err = pcall(box.commit)
    if committed then
        return replies
    end
    if not sync.is_sync_failure(err) then
        error(err)
    end
    return sync.served_as_stored(items, replies, ctx.rules, err)
end

-- One call of an operation that is not batched; its reply, or its error raised.
local function call(operation, args, ctx)
    local spec = operations[operation]
    check(spec ~= nil and not spec.batch, 'unknown operation')
    check_context(ctx)
    if not spec.any_store then
        hashing.check_mode(ctx.token_storage)
    end
    -- The purge learns the service's rules from its calls (expiry.lua), the feed its setting.
    expiry.set_rules(ctx.rules)
    events.configure(ctx.events)
    check_args(operation, spec, args)
    if spec.writes then
        sync.check_confirmable()
    end
    if spec.bulk then
        return bulk.in_slot(ctx.deadline, spec.fn, args, ctx)
    end
    return spec.fn(args, ctx)
end

return {
    CONTEXT = CONTEXT,
    batch = batch,
    call = call,
}
