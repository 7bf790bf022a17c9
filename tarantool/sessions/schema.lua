-- Schema of the `sessions` space: ordered, idempotent migrations and a check that an
-- existing space has what the procedures rely on.
local log = require('log')

local SPACE = 'sessions'

-- Each migration runs once per database (box.once keeps its name in _schema), in this
-- order, so a newer release can start on a snapshot written by an older one.
-- Append new steps; never edit or reorder a step that has shipped.
local migrations = {
    {'sessions_v1', function()
        local space = box.schema.space.create(SPACE, {
            if_not_exists = true,
            format = {
                {name = 'token', type = 'uuid'},
                {name = 'user_id', type = 'unsigned'},
                {name = 'ip', type = 'string'},
                {name = 'create', type = 'unsigned'},
                {name = 'activity', type = 'unsigned'},
                {name = 'extra', type = 'map', is_nullable = true},
            },
        })
        space:create_index('token', {
            type = 'hash', parts = {{field = 'token'}}, if_not_exists = true,
        })
        -- (key, activity) so that listings come out newest first straight from the
        -- index and stop at the first expired tuple.
        space:create_index('user', {
            type = 'tree', unique = false, if_not_exists = true,
            parts = {{field = 'user_id'}, {field = 'activity'}},
        })
        space:create_index('ip', {
            type = 'tree', unique = false, if_not_exists = true,
            parts = {{field = 'ip'}, {field = 'activity'}},
        })
        space:create_index('activity', {
            type = 'tree', unique = false, if_not_exists = true,
            parts = {{field = 'activity'}},
        })
    end},
    -- Nobody may use the instance without a password: the service has its own user, and
    -- guest would otherwise keep its default right to connect and call public functions.
    {'sessions_v2', function()
        box.schema.user.revoke('guest', 'session,usage', 'universe', nil, {if_exists = true})
    end},
}

local VERSION = #migrations

-- What the procedures need: index name -> field numbers of its parts, in order.
local required_indexes = {
    token = {1},
    user = {2, 5},
    ip = {3, 5},
    activity = {5},
}

local function validate()
    local space = box.space[SPACE]
    if space == nil then
        error(('space %q is missing after migrations'):format(SPACE))
    end
    for name, fields in pairs(required_indexes) do
        local index = space.index[name]
        if index == nil then
            error(('space %q has no index %q'):format(SPACE, name))
        end
        for i, fieldno in ipairs(fields) do
            local part = index.parts[i]
            if part == nil or part.fieldno ~= fieldno then
                error(('index %q of space %q does not have the expected parts'):format(name, SPACE))
            end
        end
    end
end

-- box.once waits for the instance to become writable, so a replica simply picks the
-- schema up through replication.
local function migrate()
    for _, step in ipairs(migrations) do
        local name, up = step[1], step[2]
        box.once(name, function()
            log.info('sessions: applying schema migration %s', name)
            up()
        end)
    end
    validate()
end

local function version()
    local applied = 0
    for i, step in ipairs(migrations) do
        if box.space._schema:get{'once' .. step[1]} ~= nil then
            applied = i
        end
    end
    return applied
end

return {
    SPACE = SPACE,
    VERSION = VERSION,
    migrate = migrate,
    version = version,
}
