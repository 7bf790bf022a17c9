-- delete: end the session; the session as it was.
local uuid = require('uuid')

local errors = require('sessions.errors')
local events = require('sessions.events')
local liveness = require('sessions.liveness')
local rows = require('sessions.rows')

-- One delete either way: a lapsed session found goes too (lapsed is final), but answers as
-- none.
local function delete(args, ctx)
    errors.check(type(args.token) == 'string', 'token must be a string')
    local key = uuid.fromstr(args.token)
    local tuple = key and box.space.sessions:delete(key)
    if tuple == nil then
        return rows.NONE
    end
    if not liveness.is_live(tuple, ctx.rules) then
        events.emit('ended', liveness.lapse_reason(tuple, ctx.rules), tuple)
        return rows.NONE
    end
    events.emit('ended', 'del', tuple)
    return {session = rows.answer(tuple)}
end

return {
    fn = delete,
    batch = true,
    -- `bucket`: the session's, for a router (router.lua); not read here.
    args = {'token', 'bucket'},
    reply = {'session'},
}
