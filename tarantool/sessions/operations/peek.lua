-- peek: the live session an id names, as stored: its activity is not recorded (reading a
-- session by id, say for a devices page, is not the user being active).
local errors = require('sessions.errors')
local rows = require('sessions.rows')

local function peek(args, ctx)
    errors.check(type(args.id) == 'string', 'id must be a string')
    local tuple = rows.find_live_by_id(args.id, ctx.rules)
    if tuple == nil then
        return rows.NONE
    end
    return {session = rows.answer(tuple)}
end

return {
    fn = peek,
    batch = true,
    args = {'id'},
    reply = {'session'},
    -- It writes nothing: served as stored when no write can be made now (dispatch.lua).
    serves_untouched = true,
}
