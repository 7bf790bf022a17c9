-- webhook_lease: the one webhook delivery worker among the service's processes, and how far
-- it has delivered; both kept in sessions_state, so they survive restarts and failovers.
local fiber = require('fiber')

local errors = require('sessions.errors')
local events = require('sessions.events')

local check, is_integer = errors.check, errors.is_integer

local KEY = 'webhook'
-- In the sharded mode the lease is one entry for the whole cluster: a row of the storages'
-- `cluster_state` (sharded.lua), kept with bucket BUCKET, which vshard moves with that bucket
-- (sessions_state is per replica set and stays put). The router sends the call to BUCKET's
-- storage (router.lua).
local BUCKET = 1

-- The lease entry as stored ({} when none), and how to store it.
local function read()
    local cluster = box.space.cluster_state
    if cluster ~= nil then
        local entry = cluster:get(KEY)
        return entry and entry[3] or {}
    end
    local entry = box.space.sessions_state:get(KEY)
    return entry and entry[2] or {}
end

local function write(lease)
    local cluster = box.space.cluster_state
    if cluster ~= nil then
        cluster:replace({KEY, BUCKET, lease})
    else
        box.space.sessions_state:replace({KEY, lease})
    end
end

-- `holder` (a process' random name) takes the lease when it is free, expired, or its own,
-- for `ttl` seconds of this instance's real clock; `delivered`, from the holder, is the seq
-- of the last event its receiver acknowledged (it only moves forward). Replies {held,
-- delivered}; delivery starts after the feed's head when the lease is first taken (after
-- `start`, when given: the router's, the cluster's feed head).
local function webhook_lease(args, ctx) -- luacheck: no unused args
    local holder, ttl, delivered, start = args.holder, args.ttl, args.delivered, args.start
    check(type(holder) == 'string' and #holder >= 1 and #holder <= 64, 'holder must be 1 to 64 bytes')
    check(type(ttl) == 'number' and ttl > 0, 'ttl must be positive')
    check(delivered == nil or (is_integer(delivered) and delivered >= 0), 'delivered must be a seq')
    check(start == nil or (is_integer(start) and start >= 0), 'start must be a seq')
    local now = fiber.time()
    local lease = read()
    local done = lease.delivered
    if lease.holder ~= nil and lease.holder ~= holder and (lease.expires or 0) >= now then
        return {held = false, delivered = done or 0}
    end
    if done == nil then
        done = start or events.head()
    end
    if delivered ~= nil and delivered > done then
        done = delivered
    end
    write({holder = holder, expires = now + ttl, delivered = done})
    return {held = true, delivered = done}
end

return {
    BUCKET = BUCKET,
    fn = webhook_lease,
    -- A write: refused at once when it cannot be confirmed (sync.lua).
    writes = true,
    args = {'holder', 'ttl', 'delivered', 'start'},
    reply = {'held', 'delivered'},
}
