-- Background purge of idle sessions: a named fiber deletes expired tuples oldest first,
-- in bounded batches that yield, then sleeps until the next session falls due.
local fiber = require('fiber')
local log = require('log')

local F = require('sessions.fields')
local clock = require('sessions.clock')

local BATCH = 100       -- tuples deleted in one transaction (one WAL write); see bench/README.md
-- Seconds between looks at the oldest session when nothing is due yet: one index lookup,
-- so cheap enough that a changed TTL or restored old data never waits long.
local MAX_SLEEP = 1

local state = {
    ttl = nil,          -- seconds; nil until the service or the environment says
    purged = 0,         -- sessions deleted since start, for stats
    collected_at = 0,   -- `purged` when Lua's garbage was last collected
    passes = 0,         -- purge steps taken, so that a test can wait for the next one
    worker = nil,
}

-- Expired tuples are those with activity < cutoff (see procedures.lua: a session lives
-- while now - activity <= ttl). Collecting first and deleting after keeps the index
-- iterator out of the way of the deletes; nothing yields in between.
local function purge_batch(space, cutoff, limit)
    limit = limit or BATCH
    local tokens = {}
    for _, tuple in space.index.activity:pairs() do
        if tuple[F.ACTIVITY] >= cutoff then
            break
        end
        tokens[#tokens + 1] = tuple[F.TOKEN]
        if #tokens >= limit then
            break
        end
    end
    if #tokens == 0 then
        return 0
    end
    box.begin()
    for _, token in ipairs(tokens) do
        space:delete(token)
    end
    box.commit()
    return #tokens
end

-- One step of the loop: purge a batch and say how long to sleep before the next one.
local function step(ttl)
    local space = box.space.sessions
    local purged = purge_batch(space, clock.now() - ttl)
    state.purged = state.purged + purged
    if purged >= BATCH then
        return 0
    end
    local oldest = space.index.activity:min()
    if oldest == nil then
        return MAX_SLEEP
    end
    -- The oldest session expires at the first whole second where now - activity > ttl.
    local due = oldest[F.ACTIVITY] + ttl + 1 - clock.time()
    return math.min(MAX_SLEEP, math.max(due, 0.01))
end

local function loop()
    fiber.self():name('sessions_expiry')
    while true do
        local pause = MAX_SLEEP
        -- Replicas receive the deletes from their master; never purge without a TTL
        -- from the service, since a guess could delete live sessions.
        if state.ttl ~= nil and not box.info.ro and box.space.sessions ~= nil then
            local ok, result = pcall(step, state.ttl)
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
            fiber.sleep(pause)
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

-- Called with the TTL of every request, so it must stay cheap.
local function set_ttl(ttl)
    state.ttl = ttl
end

local function stats()
    return {ttl = state.ttl, purged = state.purged, passes = state.passes}
end

return {
    purge_batch = purge_batch,
    start = start,
    set_ttl = set_ttl,
    stats = stats,
}
