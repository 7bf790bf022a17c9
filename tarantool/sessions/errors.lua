-- The errors the operations raise on purpose, and the one shape an error takes as an item of
-- a batch's reply. Both are part of the wire contract (describe() reports them): the service
-- maps each type to its answer (sessions/storage/faults.py).
local log = require('log')

-- The error types raised on purpose.
local TYPES = {'InvalidArgument', 'PayloadTooLarge', 'TokenNotFound', 'Overloaded', 'IdempotencyConflict',
               'ReplicasUnavailable', 'TokenStorageMismatch'}
local KNOWN = {}
for _, name in ipairs(TYPES) do
    KNOWN[name] = true
end

-- The fields of a failed item of a batch, {error = {type, code, message}}, taken by these
-- names from Tarantool's error object.
local ITEM = {'type', 'code', 'message'}

local function raise(error_type, reason)
    assert(KNOWN[error_type], error_type)
    box.error({type = error_type, reason = reason})
end

-- Each procedure checks its arguments at entry: what the service never sends is refused.
local function check(condition, reason)
    if not condition then
        raise('InvalidArgument', reason)
    end
end

local function is_integer(value)
    local kind = type(value)
    return kind == 'number' or kind == 'cdata'
end

-- A failure as an item of a batch's reply.
local function item(err)
    local fields = {}
    if type(err) == 'cdata' then
        for _, name in ipairs(ITEM) do
            fields[name] = err[name]
        end
        return {error = fields}
    end
    -- A plain Lua error is a bug here, not bad input: log it where an operator looks.
    log.error('sessions: procedure failed: %s', tostring(err))
    return {error = {type = 'LuaError', code = 0, message = tostring(err)}}
end

return {
    TYPES = TYPES,
    ITEM = ITEM,
    raise = raise,
    check = check,
    is_integer = is_integer,
    item = item,
}
