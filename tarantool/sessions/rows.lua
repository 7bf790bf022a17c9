-- What the operations share about a session row: finding a live one by its token, and
-- answering one.
local uuid = require('uuid')

local F = require('sessions.fields')
local ids = require('sessions.ids')
local errors = require('sessions.errors')
local events = require('sessions.events')
local liveness = require('sessions.liveness')
local merge = require('sessions.merge')

-- The reply of an operation that found nothing (an unknown or lapsed token): an empty map.
local NONE = setmetatable({}, {__serialize = 'map'})

-- Results carry the token and the id as text: Tarantool formats them in C for free, where
-- the service would pay for decoding and formatting a UUID object per session.
local function answer(tuple)
    return tuple:transform(F.ID, 1, tuple[F.ID]:str()):transform(F.TOKEN, 1, tuple[F.TOKEN]:str())
end

-- The live session a token names, as its key and tuple, or nil. A lapsed one found is
-- deleted (unless `untouched`: nothing may be written): lapsed is final, whatever the rules
-- say later. Tokens arrive as text the service has checked for the 8-4-4-4-12 form, since
-- uuid.fromstr on its own lets some malformed strings through.
local function find_live(token, rules, untouched)
    local key = uuid.fromstr(token)
    if key == nil then
        return nil
    end
    local space = box.space.sessions
    local tuple = space:get(key)
    if tuple == nil then
        return nil
    end
    if not liveness.is_live(tuple, rules) then
        if not untouched then
            space:delete(key)
            events.emit('ended', liveness.lapse_reason(tuple, rules), tuple)
        end
        return nil
    end
    return key, tuple
end

-- The live session an id names (text the service has checked for the 8-4-4-4-12 form), as
-- its tuple, or nil. Nothing is written: a lapsed one found is left to the purge.
local function find_live_by_id(text, rules)
    local id = ids.parse(text)
    local tuple = id and box.space.sessions.index.id:get(id)
    if tuple == nil or not liveness.is_live(tuple, rules) then
        return nil
    end
    return tuple
end

-- Extra data `current` with `patch` merged in, or the merge's error raised.
local function merged_extra(current, patch, extra_max)
    local merged, error_type, reason = merge.merge(current, patch, extra_max)
    if merged == nil then
        errors.raise(error_type, reason)
    end
    return merged
end

return {
    NONE = NONE,
    answer = answer,
    find_live = find_live,
    find_live_by_id = find_live_by_id,
    merged_extra = merged_extra,
}
