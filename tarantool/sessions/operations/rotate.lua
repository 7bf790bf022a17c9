-- rotate: the same session under a new token, the old one ended in the same transaction.
local uuid = require('uuid')

local F = require('sessions.fields')
local clock = require('sessions.clock')
local errors = require('sessions.errors')
local events = require('sessions.events')
local liveness = require('sessions.liveness')
local rows = require('sessions.rows')

local check = errors.check

-- `new_token` is 16 bytes, as for `new`: user, ip, extra, create, its own TTL and its place
-- in listings (seq) kept, activity now.
local function rotate(args, ctx)
    local token, new_token = args.token, args.new_token
    check(type(token) == 'string', 'token must be a string')
    check(type(new_token) == 'string' and #new_token == 16, 'new token must be 16 bytes')
    local rules = ctx.rules
    local key, tuple = rows.find_live(token, rules)
    if key == nil then
        return rows.NONE
    end
    local space = box.space.sessions
    local ts = clock.now()
    -- The old one goes first: the new one takes its place (seq) in the listings' unique
    -- indexes. A failure of the insert undoes the delete too (batch's savepoint).
    space:delete(key)
    local fresh = space:insert(tuple:update({
        {'=', F.TOKEN, uuid.frombin(new_token, 'b')},
        {'=', F.ACTIVITY, ts},
        {'=', F.EXPIRES, liveness.deadline_of(tuple[F.CREATE], ts, tuple[F.TTL], rules)},
    }))
    events.emit('rotated', nil, fresh)
    return {session = rows.answer(fresh)}
end

return {
    fn = rotate,
    batch = true,
    -- `bucket`: the session's, for a router (router.lua); not read here.
    args = {'token', 'new_token', 'bucket'},
    reply = {'session'},
}
