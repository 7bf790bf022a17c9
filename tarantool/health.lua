-- The Tarantool container's healthcheck: healthy when the instance answers, its schema is
-- current, and it is writable exactly as its role says (a primary writable, a replica
-- read-only); a fenced old primary, an orphaned replica promoted by nobody, or a primary
-- stuck read-only is unhealthy. Exit code 0 or 1, and one line saying why.
local net_box = require('net.box')

local function env(name, default)
    local value = os.getenv(name)
    return (value ~= nil and value ~= '') and value or default
end

local listen = env('SESSIONS_TT_LISTEN', '3301')
if listen:match('^%d+$') then
    listen = '127.0.0.1:' .. listen
end
local user = env('SESSIONS_TARANTOOL_USER', 'sessions')
local password = env('SESSIONS_TARANTOOL_PASSWORD', '')

local function finish(healthy, message)
    io.stdout:write(message, '\n')
    os.exit(healthy and 0 or 1)
end

local conn = net_box.connect(listen, {user = user, password = password, connect_timeout = 2,
                                      wait_connected = true})
if not conn:is_connected() then
    finish(false, 'not answering on ' .. listen)
end
local ok, info = pcall(conn.call, conn, 'sessions.info', {}, {timeout = 2})
conn:close()
if not ok then
    finish(false, 'sessions.info failed: ' .. tostring(info))
end
if info.schema_version ~= info.schema_latest then
    finish(false, ('schema version %s, expected %s'):format(info.schema_version, info.schema_latest))
end
if (info.replication_stopped or 0) > 0 then
    finish(false, ('replication from %d peer(s) stopped on an error: see its log'):format(
        info.replication_stopped))
end
if info.role == 'router' then
    -- A router of the sharded mode: healthy while every replica set's master answers it
    -- writable (its info is read-only while one is lost or read-only).
    finish(not info.ro, info.ro and 'router: a replica set is lost or read-only' or 'router, writable')
end
if os.getenv('SESSIONS_VSHARD_INSTANCE') ~= nil and info.role == nil then
    -- A storage of a replica set whose master the configuration names: vshard says which
    -- instance writes. One of a set with `"master": "auto"` has a role file (role.lua) and
    -- is checked against it below, as a single instance with a replica is.
    finish(true, ('storage, %s, schema %d'):format(info.ro and 'read-only' or 'writable',
        info.schema_version))
end
if type(info.election) == 'table' then
    -- Elections decide: writable exactly while the leader, and some leader known.
    local raft = info.election
    if (raft.state == 'leader') == info.ro then
        finish(false, ('%s, but %s'):format(raft.state, info.ro and 'read-only' or 'writable'))
    elseif raft.leader == 0 then
        finish(false, ('no leader in term %d: an election is under way, or no majority answers')
            :format(raft.term))
    end
    finish(true, ('%s, term %d, leader %d, schema %d'):format(raft.state, raft.term, raft.leader,
        info.schema_version))
end
if info.writes_confirmable == false and not info.ro then
    finish(false, 'writable, but too few replicas follow to confirm a write (synchronous replication)')
end
if info.role == 'primary' and info.ro then
    finish(false, 'primary, but read-only')
elseif info.role == 'replica' and not info.ro then
    finish(false, 'replica, but writable')
elseif info.role ~= 'primary' and info.role ~= 'replica' then
    finish(false, ('role %s: needs an operator (see the failover runbook)'):format(tostring(info.role)))
end
finish(true, ('%s, %s, schema %d'):format(info.role, info.ro and 'read-only' or 'writable',
    info.schema_version))
