-- The service's own Tarantool user: it may only execute the procedures, which run with
-- their owner's rights (setuid), so it never needs rights on spaces or the universe.
local PROCEDURES = {'new', 'get', 'delete', 'batch', 'by_user', 'by_ip', 'info'}

local function function_names()
    local names = {}
    for i, name in ipairs(PROCEDURES) do
        names[i] = 'sessions.' .. name
    end
    return names
end

local function ensure_user(user, password)
    box.schema.user.create(user, {password = password, if_not_exists = true})
    box.schema.user.passwd(user, password)
    for _, name in ipairs(function_names()) do
        box.schema.func.create(name, {setuid = true, if_not_exists = true})
        box.schema.user.grant(user, 'execute', 'function', name, {if_not_exists = true})
    end
end

-- Replicas join the primary as this user; it exists only when a password is configured.
local function ensure_replication_user(password)
    box.schema.user.create('replicator', {password = password, if_not_exists = true})
    box.schema.user.passwd('replicator', password)
    box.schema.user.grant('replicator', 'replication', nil, nil, {if_not_exists = true})
end

return {
    PROCEDURES = PROCEDURES,
    ensure_user = ensure_user,
    ensure_replication_user = ensure_replication_user,
}
