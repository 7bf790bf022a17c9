-- Background purge of lapsed sessions: a named fiber walks the `expires` index from the
-- earliest, in bounded batches that yield, then sleeps until the next session falls due.
local fiber = require('fiber')
local log = require('log')

local F = require('sessions.fields')
local clock = require('sessions.clock')
local events = require('sessions.events')
local liveness = require('sessions.liveness')

local BATCH = 100       -- tuples handled in one transaction (one WAL write); see bench/README.md
-- Seconds between looks at the earliest expiry when nothing is due yet: one index lookup,
-- so cheap enough that changed rules or restored old data never wait long.
local MAX_SLEEP = 1

local state = {
    rules = nil,        -- liveness.lua's rules; nil until the service or the environment says
    since = 0,          -- when the rules last changed (clock.now()); 0: not since start
    sync = false,       -- whether stored expiries may not follow the rules yet (sweep below)
    sync_from = nil,    -- where the sweep goes on: a (user_id, seq) key
    purged = 0,         -- sessions deleted since start, for stats
    collected_at = 0,   -- `purged` when Lua's garbage was last collected
    passes = 0,         -- purge steps taken, so that a test can wait for the next one
    worker = nil,
    wakeup = fiber.cond(),  -- signalled by wake(): the next step now rather than after a pause
}

-- A tuple is due once its stored expiry has passed (a session is live up to and including
-- it). The stored expiry follows the rules of the tuple's last write; under the rules in
-- force now the session may still be live (the service's TTL was raised since, say): then
-- only its expiry moves on, and the purge never ends a live session. Collecting first and
-- writing after keeps the index iterator out of the way; nothing yields in between.
-- Returns the sessions deleted and the tuples handled.
local function purge_batch(space, rules, limit)
    limit = limit or BATCH
    local now = clock.now()
    local idle = rules[liveness.TTL]
    local doomed, renewed = {}, {}
    for _, tuple in space.index.expires:pairs() do
        if tuple[F.EXPIRES] >= now or #doomed + #renewed >= limit then
            break
        end
        -- Past the service's TTL since its activity no session is live, whatever else: one
        -- field read settles the usual case (the full check reads three).
        if tuple[F.ACTIVITY] + idle >= now and liveness.is_live(tuple, rules) then
            renewed[#renewed + 1] = {tuple[F.TOKEN], liveness.deadline(tuple, rules)}
        else
            doomed[#doomed + 1] = tuple
        end
    end
    if #doomed + #renewed == 0 then
        return 0, 0
    end
    box.begin()
    for _, tuple in ipairs(doomed) do
        space:delete(tuple[F.TOKEN])
        events.emit('ended', liveness.lapse_reason(tuple, rules), tuple)
    end
    for _, item in ipairs(renewed) do
        space:update(item[1], {{'=', F.EXPIRES, item[2]}})
    end
    box.commit()
    return #doomed, #doomed + #renewed
end

-- When the rules change, every session not yet expired gets its stored expiry set to its
-- deadline under the new rules (earlier or later), a bounded part per step: so the purge
-- ends at their new deadline the sessions that a shorter TTL ended, and a session that
-- lapsed stays lapsed when the TTL goes up again. It walks (user_id, seq), where a session
-- never moves; one written meanwhile already has its expiry under the new rules.
local SWEEP_VISITS = 1000
local function sweep_batch(space, rules)
    local now = clock.now()
    local position, iterator = {}, 'ALL'
    if state.sync_from ~= nil then
        position, iterator = state.sync_from, 'GT'
    end
    local changed, visited, last = {}, 0, nil
    for _, tuple in space.index.user_seq:pairs(position, {iterator = iterator}) do
        visited = visited + 1
        last = tuple
        if tuple[F.EXPIRES] >= now then
            local due = liveness.deadline(tuple, rules)
            if due ~= tuple[F.EXPIRES] then
                changed[#changed + 1] = {tuple[F.TOKEN], due}
            end
        end
        if visited >= SWEEP_VISITS or #changed >= BATCH then
            break
        end
    end
    if #changed > 0 then
        box.begin()
        for _, item in ipairs(changed) do
            space:update(item[1], {{'=', F.EXPIRES, item[2]}})
        end
        box.commit()
    end
    if last == nil or (visited < SWEEP_VISITS and #changed < BATCH) then
        state.sync, state.sync_from = false, nil
    else
        state.sync_from = {last[F.USER_ID], last[F.SEQ]}
    end
    return #changed
end

-- Idempotency keys past their window (schema.lua, v4), at most `limit`; how many.
local function purge_keys(space, limit)
    local now = clock.now()
    local doomed = {}
    for _, entry in space.index.expires:pairs() do
        if entry[F.KEYS.EXPIRES] >= now or #doomed >= limit then
            break
        end
        doomed[#doomed + 1] = entry[F.KEYS.KEY]
    end
    if #doomed > 0 then
        box.begin()
        for _, key in ipairs(doomed) do
            space:delete(key)
        end
        box.commit()
    end
    return #doomed
end

-- One step of the loop: purge a batch and say how long to sleep before the next one.
local function step(rules)
    local space = box.space.sessions
    local purged, handled = purge_batch(space, rules)
    state.purged = state.purged + purged
    local keys = box.space.idempotency
    if keys ~= nil then
        handled = math.max(handled, purge_keys(keys, BATCH))
    end
    if state.sync and space.index.user_seq ~= nil then
        sweep_batch(space, rules)
        if state.sync then
            return 0
        end
    end
    if handled >= BATCH then
        return 0
    end
    local earliest = space.index.expires:min()
    if earliest == nil then
        return MAX_SLEEP
    end
    -- It is due at the first whole second after its expiry.
    local due = earliest[F.EXPIRES] + 1 - clock.time()
    return math.min(MAX_SLEEP, math.max(due, 0.01))
end

local function loop()
    fiber.self():name('sessions_expiry')
    while true do
        local pause = MAX_SLEEP
        -- Replicas receive the deletes from their master; never purge without a TTL
        -- from the service, since a guess could delete live sessions.
        if state.rules ~= nil and not box.info.ro and box.space.sessions ~= nil then
            local ok, result = pcall(step, state.rules)
            state.passes = state.passes + 1
            if ok then
                pause = result
            else
                if box.is_in_txn() then
                    box.rollback()
                end
                log.error('sessions: expiry step failed: %s', tostring(result))
                pause = 1
            end
        end
        -- A deleted tuple's memory is freed only once no Lua value refers to it, and the
        -- iterators here and the procedures' locals do until the collector runs: with memory
        -- full, purged sessions would not make room. So a round that purged anything ends
        -- with a full collection (about 1 ms measured with this code loaded).
        if pause > 0 and state.purged ~= state.collected_at then
            state.collected_at = state.purged
            collectgarbage('collect')
        end
        if pause > 0 then
            state.wakeup:wait(pause)
        else
            fiber.yield()
        end
    end
end

local function start()
    if state.worker == nil or state.worker:status() == 'dead' then
        state.worker = fiber.create(loop)
    end
end

-- The rules in force and when they took force, as the instance last wrote them (they
-- replicate, and survive restarts): {ttl, lifetime, since}, or nil.
local STATE_KEY = 'rules'

local function saved_rules()
    local space = box.space.sessions_state
    local entry = space and space:get(STATE_KEY)
    return entry and entry[2]
end

local function save_rules(rules)
    local space = box.space.sessions_state
    -- A replica learns them from its primary; nothing here writes there.
    if space ~= nil and not box.info.ro then
        space:replace({STATE_KEY, {ttl = rules[liveness.TTL], lifetime = rules[liveness.LIFETIME],
                                   since = state.since}})
    end
end

-- Called with the rules of every request, so it must stay cheap. A change of the TTL or
-- the lifetime starts a sweep; after a change, sessions whose stored expiry passed before
-- it are lapsed for good (liveness.lua). The rules and the moment they changed are kept in
-- the store, so a change across a restart counts too: a session whose stored expiry passed
-- while nothing ran never comes back under the rules of the next start. The first rules
-- after a start sweep in any case (a sweep may have been cut short by the stop).
local function set_rules(rules)
    local current = state.rules
    if current == nil then
        local saved = saved_rules()
        if saved ~= nil then
            current = {[liveness.TTL] = saved.ttl, [liveness.LIFETIME] = saved.lifetime}
            state.since = saved.since or 0
        end
        state.sync, state.sync_from = true, nil
    end
    if current == nil or current[liveness.TTL] ~= rules[liveness.TTL]
            or current[liveness.LIFETIME] ~= rules[liveness.LIFETIME] then
        if current ~= nil then
            state.since = clock.now()
        end
        state.sync, state.sync_from = true, nil
        save_rules(rules)
    end
    rules[liveness.SINCE] = state.since
    state.rules = rules
end

-- Take the next step now: for tests that move the clock and want the purge to see it
-- without waiting out a pause (the loop looks at least once a second anyway).
local function wake()
    state.wakeup:signal()
end

local function stats()
    local rules = state.rules
    return {
        ttl = rules and rules[liveness.TTL], purged = state.purged, passes = state.passes,
        since = state.since, syncing = state.sync,
    }
end

return {
    purge_batch = purge_batch,
    sweep_batch = sweep_batch,
    purge_keys = purge_keys,
    start = start,
    set_rules = set_rules,
    stats = stats,
    wake = wake,
}
