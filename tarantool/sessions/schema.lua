-- Schema of the `sessions` space: ordered, idempotent migrations and a check that an
-- existing space has what the procedures rely on.
local log = require('log')

local F = require('sessions.fields')

local SPACE = 'sessions'

-- The indexes the procedures rely on, by field number: created by the first migration
-- and checked on every start.
local INDEXES = {
    -- Tokens are only ever looked up whole.
    {name = 'token', type = 'hash', unique = true, parts = {F.TOKEN}},
    -- (key, activity) so that listings come out newest first straight from the index and
    -- stop at the first expired tuple.
    {name = 'user', type = 'tree', unique = false, parts = {F.USER_ID, F.ACTIVITY}},
    {name = 'ip', type = 'tree', unique = false, parts = {F.IP, F.ACTIVITY}},
    -- The purge walks this one from the oldest activity.
    {name = 'activity', type = 'tree', unique = false, parts = {F.ACTIVITY}},
}

local function create_indexes(space)
    for _, index in ipairs(INDEXES) do
        local parts = {}
        for i, fieldno in ipairs(index.parts) do
            parts[i] = {field = fieldno}
        end
        space:create_index(index.name, {
            type = index.type, unique = index.unique, parts = parts, if_not_exists = true,
        })
    end
end

-- Each migration runs once per database (box.once keeps its name in _schema), in this
-- order, so a newer release can start on a snapshot written by an older one.
-- Append new steps; never change what a shipped step does.
local migrations = {
    {'sessions_v1', function()
        local space = box.schema.space.create(SPACE, {if_not_exists = true, format = F.FORMAT})
        create_indexes(space)
    end},
    -- Nobody may use the instance without a password: the service has its own user, and
    -- guest would otherwise keep its default right to connect and call public functions.
    {'sessions_v2', function()
        box.schema.user.revoke('guest', 'session,usage', 'universe', nil, {if_exists = true})
    end},
}

local VERSION = #migrations

local function validate()
    local space = box.space[SPACE]
    if space == nil then
        error(('space %q is missing after migrations'):format(SPACE))
    end
    for _, wanted in ipairs(INDEXES) do
        local name = wanted.name
        local index = space.index[name]
        if index == nil then
            error(('space %q has no index %q'):format(SPACE, name))
        end
        for i, fieldno in ipairs(wanted.parts) do
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
