-- events_wait: until the event feed has an event after a seq, or the call's deadline is near.
local fiber = require('fiber')

local errors = require('sessions.errors')
local events = require('sessions.events')

local check, is_integer = errors.check, errors.is_integer

-- Answers this much before the deadline, so that the answer is in time.
local MARGIN = 0.1

-- Waits on a fiber condition, not a bulk slot: the service makes one such call per process
-- at a time, however many clients long-poll it (sessions/feed.py). Replies {head}.
local function events_wait(args, ctx)
    local after = args.after
    check(is_integer(after) and after >= 0, 'after must be a seq')
    return {head = events.wait(after, math.max(0, ctx.deadline - fiber.time() - MARGIN))}
end

return {
    fn = events_wait,
    args = {'after'},
    reply = {'head'},
}
