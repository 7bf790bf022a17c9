-- get: the session, marked active now; with `ip`, moved to that address; with `patch`, its
-- extra data merged.
local F = require('sessions.fields')
local clock = require('sessions.clock')
local errors = require('sessions.errors')
local events = require('sessions.events')
local liveness = require('sessions.liveness')
local memory = require('sessions.memory')
local rows = require('sessions.rows')

local check = errors.check

-- `ctx.untouched`: served as stored, its activity not recorded (no write can be made now).
local function get(args, ctx)
    local token, ip, patch = args.token, args.ip, args.patch
    check(type(token) == 'string', 'token must be a string')
    check(ip == nil or type(ip) == 'string', 'ip must be a string')
    local rules = ctx.rules
    local key, tuple = rows.find_live(token, rules, ctx.untouched)
    if key == nil then
        return rows.NONE
    end
    if ctx.untouched then
        -- Asked of an instance that may not write (no leader elected yet, too few replicas
        -- to confirm a write): the session as stored, its activity not recorded this time;
        -- extra data is a write, refused.
        if patch ~= nil then
            errors.raise('ReplicasUnavailable', 'extra data is a write, and no write can be made now')
        end
        return {session = rows.answer(tuple), untouched = true}
    end
    local space = box.space.sessions
    local ops = {}
    local ts = clock.now()
    -- Rewriting the same second would cost a WAL write for nothing.
    if tuple[F.ACTIVITY] ~= ts then
        ops[#ops + 1] = {'=', F.ACTIVITY, ts}
        ops[#ops + 1] = {'=', F.EXPIRES, liveness.deadline_of(tuple[F.CREATE], ts, tuple[F.TTL], rules)}
    end
    if ip ~= nil and ip ~= tuple[F.IP] then
        ops[#ops + 1] = {'=', F.IP, ip}
    end
    if patch ~= nil then
        ops[#ops + 1] = {'=', F.EXTRA, rows.merged_extra(tuple[F.EXTRA], patch, ctx.extra_max)}
    end
    if #ops == 0 then
        return {session = rows.answer(tuple)}
    end
    local ok, updated = pcall(space.update, space, key, ops)
    if ok then
        if updated[F.IP] ~= tuple[F.IP] then
            events.emit('moved', nil, updated)
        end
        return {session = rows.answer(updated)}
    end
    -- With memory full, a signed-in user stays signed in: the session is served as stored,
    -- its activity (and last ip) not rewritten this time. Extra data the caller sent is a
    -- write it asked for, so that still fails.
    if patch ~= nil or not memory.is_out_of_memory(updated) then
        error(updated)
    end
    memory.touch_skipped_now()
    return {session = rows.answer(tuple), untouched = true}
end

return {
    fn = get,
    batch = true,
    -- `bucket`: the session's, for a router (router.lua); not read here.
    args = {'token', 'ip', 'patch', 'bucket'},
    reply = {'session', 'untouched'},
    -- Its only write is the touch: with no write possible now, it serves the session as
    -- stored (ctx.untouched) where another operation is refused (dispatch.lua, sync.lua).
    serves_untouched = true,
}
