-- What the entry scripts (init.lua, storage.lua, router.lua) share: their settings from the
-- environment, and how they stop on a bad one.
local function env(name, default)
    local value = os.getenv(name)
    if value == nil or value == '' then
        return default
    end
    return value
end

-- A function that writes `sessions <who>: <message>` to stderr and exits 1.
local function failing(who)
    return function(message)
        io.stderr:write('sessions ', who, ': ', message, '\n')
        os.exit(1)
    end
end

-- The service user's password and the cluster file (sharded.lua) of a storage or a router;
-- `fail` stops the start when either is missing or wrong.
local function vshard_settings(fail)
    local password = env('SESSIONS_TARANTOOL_PASSWORD')
    if password == nil then
        fail('SESSIONS_TARANTOOL_PASSWORD is not set; the service user needs a password')
    end
    local ok, cluster = pcall(require('sessions.sharded').read_config, env('SESSIONS_VSHARD_CONFIG'))
    if not ok then
        fail(tostring(cluster))
    end
    return password, cluster
end

return {
    env = env,
    failing = failing,
    vshard_settings = vshard_settings,
}
