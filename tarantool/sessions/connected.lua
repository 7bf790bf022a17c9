-- The service's connections to this instance: sessions authenticated as its Tarantool user,
-- counted by box.session triggers (on_auth and on_disconnect, on Tarantool 2.6 as on 2.11),
-- so that `sessions convert-tokens` can refuse to run under a service still serving the store.
local user = nil
local open = {}

local function on_auth(name, ok)
    if ok and name == user then
        open[box.session.id()] = true
    end
end

local function on_disconnect()
    open[box.session.id()] = nil
end

-- Count the connections of the service user `name` from now on (init.lua, once).
local function watch(name)
    if user == nil then
        box.session.on_auth(on_auth)
        box.session.on_disconnect(on_disconnect)
    end
    user = name
end

-- How many connections the service user has.
local function count()
    local n = 0
    for _ in pairs(open) do
        n = n + 1
    end
    return n
end

return {
    count = count,
    user = function() return user end,
    watch = watch,
}
