-- delete_all: end the live sessions under one key of a kind (kinds.lua): a user's, or an
-- address's.
local fiber = require('fiber')
local uuid = require('uuid')

local F = require('sessions.fields')
local errors = require('sessions.errors')
local events = require('sessions.events')
local ids = require('sessions.ids')
local kinds = require('sessions.kinds')
local liveness = require('sessions.liveness')

local is_live = liveness.is_live

-- A call ends at most this many sessions per transaction, and at most CALL_MOST per call:
-- the service calls again while more remain, so that neither a transaction nor a call holds
-- anybody up for long (about 5 ms and 50 ms here).
local TRANSACTION = 500
local CALL_MOST = 5000

-- All but the session `except_token` or `except_id` names (which must then be a live session
-- under that key, or nothing is ended; `checked` says an earlier call of the same request
-- checked it already), in transactions of TRANSACTION that yield between them, at most
-- CALL_MOST per call and none begun after the deadline. Lapsed sessions met on the way go
-- too, uncounted. Replies {deleted, more}.
local function delete_all(args, ctx)
    local spec = kinds.of(args.kind, args.key)
    local key, except_token, except_id, rules = args.key, args.except_token, args.except_id, ctx.rules
    local space = box.space.sessions
    local except, kept = nil, nil
    errors.check(except_token == nil or except_id == nil, 'except a token or an id, not both')
    if except_token ~= nil then
        errors.check(type(except_token) == 'string', 'except must be a string')
        except = uuid.fromstr(except_token)
        kept = except and space:get(except)
    elseif except_id ~= nil then
        errors.check(type(except_id) == 'string', 'except_id must be a string')
        local id = ids.parse(except_id)
        kept = id and space.index.id:get(id)
        -- Nothing to keep is kept by nothing: a key no session has.
        except = kept and kept[F.TOKEN] or uuid.new()
    end
    if except ~= nil and not args.checked
        and (not kept or kept[spec.field] ~= key or not is_live(kept, rules)) then
        errors.raise('TokenNotFound', ('%s is not a live session of this user.')
            :format(except_id ~= nil and 'except_id' or 'except'))
    end
    local index = space.index[spec.index]
    local ended, removed = 0, 0
    while removed < CALL_MOST do
        local doomed, live = {}, 0
        for _, tuple in index:pairs({key}, {iterator = 'EQ'}) do
            if except == nil or tuple[F.TOKEN] ~= except then
                doomed[#doomed + 1] = tuple
                if is_live(tuple, rules) then
                    live = live + 1
                end
                if #doomed >= TRANSACTION then
                    break
                end
            end
        end
        if #doomed == 0 then
            return {deleted = ended, more = false}
        end
        if fiber.time() > ctx.deadline then
            -- What is done stays done; the service calls again for the rest.
            return {deleted = ended, more = true}
        end
        box.begin()
        for _, tuple in ipairs(doomed) do
            space:delete(tuple[F.TOKEN])
            -- Why each ended: this call (`user/del`, `ip/del`), or a lapse it only noticed.
            if is_live(tuple, rules) then
                events.emit('ended', spec.reason, tuple)
            else
                events.emit('ended', liveness.lapse_reason(tuple, rules), tuple)
            end
        end
        box.commit()
        ended = ended + live
        removed = removed + #doomed
        fiber.yield()
    end
    return {deleted = ended, more = true}
end

return {
    fn = delete_all,
    bulk = true,
    -- It ends sessions: refused at once when the write cannot be confirmed (sync.lua).
    writes = true,
    args = {'kind', 'key', 'except_token', 'except_id', 'checked'},
    reply = {'deleted', 'more'},
}
