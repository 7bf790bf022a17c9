-- The service's own Tarantool user: it may only execute the procedures the service calls,
-- which run with their owner's rights (setuid), so it never needs rights on spaces or the
-- universe. The list is the procedures module's exports, so a grant cannot outlive its use.
local procedures = require('sessions.procedures')

local PREFIX = 'sessions.'

local function called()
    local names = {}
    for name in pairs(procedures) do
        names[PREFIX .. name] = true
    end
    return names
end

local function ensure_user(user, password)
    box.schema.user.create(user, {password = password, if_not_exists = true})
    box.schema.user.passwd(user, password)
    local wanted = called()
    -- Functions an older release registered and no longer calls lose their grants with them
    -- (collected first: _func must not change under its own iterator).
    local stale = {}
    for _, func in box.space._func:pairs() do
        if func.name:sub(1, #PREFIX) == PREFIX and not wanted[func.name] then
            stale[#stale + 1] = func.name
        end
    end
    for _, name in ipairs(stale) do
        box.schema.func.drop(name)
    end
    for name in pairs(wanted) do
        box.schema.func.create(name, {setuid = true, if_not_exists = true})
        box.schema.user.grant(user, 'execute', 'function', name, {if_not_exists = true})
    end
end

-- Replicas join the primary as this user; it exists only when a password is configured.
local function ensure_replication_user(password)
    box.schema.user.create('replicator', {password = password, if_not_exists = true})
    box.schema.user.passwd('replicator', password)
    box.schema.user.grant('replicator', 'replication', nil, nil, {if_not_exists = true})
    -- Before it becomes writable, an instance asks the others whether one of them is.
    box.schema.user.grant('replicator', 'execute', 'function', PREFIX .. 'peer', {if_not_exists = true})
end

return {
    ensure_user = ensure_user,
    ensure_replication_user = ensure_replication_user,
}
