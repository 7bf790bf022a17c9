-- token_storage: what kind of key the store keeps (hashing.lua): `hash`, `plain`, `empty` or
-- `converting`. With `mode` 'hash', an empty store is marked as a hashed one first.
local errors = require('sessions.errors')
local hashing = require('sessions.hashing')

local function token_storage(args)
    local mode = args.mode
    errors.check(mode == 'plain' or mode == 'hash', 'mode must be plain or hash')
    if mode == 'hash' then
        return {stored = hashing.claim()}
    end
    return {stored = hashing.stored()}
end

return {
    fn = token_storage,
    args = {'mode'},
    reply = {'stored'},
    -- It says what the store keeps, so it answers a service of either kind (dispatch.lua).
    any_store = true,
}
