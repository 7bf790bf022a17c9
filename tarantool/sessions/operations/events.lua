-- events: a page of the event feed (sessions/events.lua), oldest first, after a seq.
local errors = require('sessions.errors')
local events = require('sessions.events')

local check, is_integer = errors.check, errors.is_integer

-- At most `limit` events whose seq is above `after` (0: from the oldest kept), none that
-- the WAL does not hold yet. Replies {events, missed: whether the retention removed events
-- after `after`, head: the highest seq there is, stable: events.stable(), taken before the
-- page (nothing yields between), so the page holds every event up to it}.
local function feed(args, ctx) -- luacheck: no unused args
    local after, limit = args.after, args.limit
    check(after == nil or (is_integer(after) and after >= 0), 'after must be a seq')
    check(is_integer(limit) and limit >= 1, 'limit must be a positive number')
    local stable = events.stable()
    local page, missed, head = events.page(after or 0, limit)
    return {events = page, missed = missed, head = head, stable = stable}
end

return {
    fn = feed,
    bulk = true,
    args = {'after', 'limit'},
    reply = {'events', 'missed', 'head', 'stable'},
}
