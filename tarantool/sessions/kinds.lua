-- The kinds of key sessions are listed, counted and ended by: a user, or an address. Each
-- is a (key, seq) index, the field it keys and the check of a key. The names are part of the
-- wire contract (describe() reports them; the service's routes take them from there).
local F = require('sessions.fields')
local errors = require('sessions.errors')

local function is_string(value)
    return type(value) == 'string'
end

local KINDS = {
    -- `reason`: why delete_all's sessions ended, in the event feed (its route's path).
    user = {index = 'user_seq', field = F.USER_ID, check = errors.is_integer,
            what = 'user_id must be an integer', reason = 'user/del'},
    ip = {index = 'ip_seq', field = F.IP, check = is_string, what = 'ip must be a string', reason = 'ip/del'},
}
local NAMES = {}
for name in pairs(KINDS) do
    NAMES[#NAMES + 1] = name
end
table.sort(NAMES)

-- The kind named `kind`, once `key` is checked to be one of its keys.
local function of(kind, key)
    local spec = KINDS[kind]
    errors.check(spec ~= nil, 'unknown kind of key')
    errors.check(spec.check(key), spec.what)
    return spec
end

return {
    NAMES = NAMES,
    of = of,
}
