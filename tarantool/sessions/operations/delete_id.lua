-- delete_id: end the session an id names; the session as it was.
local F = require('sessions.fields')
local errors = require('sessions.errors')
local events = require('sessions.events')
local ids = require('sessions.ids')
local liveness = require('sessions.liveness')
local rows = require('sessions.rows')

-- A lapsed session found goes too (lapsed is final), but answers as none, as `delete`.
local function delete_id(args, ctx)
    errors.check(type(args.id) == 'string', 'id must be a string')
    local id = ids.parse(args.id)
    local found = id and box.space.sessions.index.id:get(id)
    if found == nil then
        return rows.NONE
    end
    local tuple = box.space.sessions:delete(found[F.TOKEN])
    if not liveness.is_live(tuple, ctx.rules) then
        events.emit('ended', liveness.lapse_reason(tuple, ctx.rules), tuple)
        return rows.NONE
    end
    events.emit('ended', 'session/del', tuple)
    return {session = rows.answer(tuple)}
end

return {
    fn = delete_id,
    batch = true,
    args = {'id'},
    reply = {'session'},
}
