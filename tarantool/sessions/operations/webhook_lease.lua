-- webhook_lease: the one webhook delivery worker among the service's processes, and how far
-- it has delivered; both kept in sessions_state, so they survive restarts and failovers.
local fiber = require('fiber')

local errors = require('sessions.errors')
local events = require('sessions.events')

local check, is_integer = errors.check, errors.is_integer

local KEY = 'webhook'

-- `holder` (a process' random name) takes the lease when it is free, expired, or its own,
-- for `ttl` seconds of this instance's real clock; `delivered`, from the holder, is the seq
-- of the last event its receiver acknowledged (it only moves forward). Replies {held,
-- delivered}; delivery starts after the feed's head when the lease is first taken.
local function webhook_lease(args, ctx) -- luacheck: no unused args
    local holder, ttl, delivered = args.holder, args.ttl, args.delivered
    check(type(holder) == 'string' and #holder >= 1 and #holder <= 64, 'holder must be 1 to 64 bytes')
    check(type(ttl) == 'number' and ttl > 0, 'ttl must be positive')
    check(delivered == nil or (is_integer(delivered) and delivered >= 0), 'delivered must be a seq')
    local space = box.space.sessions_state
    local now = fiber.time()
    local entry = space:get(KEY)
    local lease = entry and entry[2] or {}
    local done = lease.delivered
    if lease.holder ~= nil and lease.holder ~= holder and (lease.expires or 0) >= now then
        return {held = false, delivered = done or 0}
    end
    if done == nil then
        done = events.head()
    end
    if delivered ~= nil and delivered > done then
        done = delivered
    end
    space:replace({KEY, {holder = holder, expires = now + ttl, delivered = done}})
    return {held = true, delivered = done}
end

return {
    fn = webhook_lease,
    -- A write: refused at once when it cannot be confirmed (sync.lua).
    writes = true,
    args = {'holder', 'ttl', 'delivered'},
    reply = {'held', 'delivered'},
}
