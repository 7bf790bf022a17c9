-- Entry point of a storage of the sharded mode: the project's schema and procedures under
-- vshard's storage role. vshard holds the buckets, moves them and says which instance of the
-- replica set is its master; init.lua's roles and elections (role.lua, election.lua) are
-- the single-instance mode's and are not used here.
--
-- Environment, beside init.lua's SESSIONS_TT_LISTEN, _WORK_DIR, _MEMTX_MEMORY, _WAL_MODE,
-- _LOG, _PID_FILE, _CONSOLE_SOCKET, SESSIONS_TARANTOOL_USER, _PASSWORD and SESSIONS_IDLE_TTL:
--   SESSIONS_VSHARD_CONFIG    a JSON file: vshard's `sharding` table (replica sets by uuid,
--                             their instances by uuid, each with its `uri`, holding the
--                             vshard user's login and password, and `master`); the same
--                             file for every storage and router of the cluster; and
--                             `numbers`, each replica set's number (1 to 256, none twice,
--                             never reused), which its sessions' seqs carry (schema.lua)
--   SESSIONS_VSHARD_INSTANCE  the uuid of this instance in it
-- A replica set of two or more instances has `"master": "auto"` in the file and no instance
-- flagged master: which one writes is role.lua's, as for a single instance with a replica
-- (its role file in the data dir, `sessions promote`, `sessions rejoin`), and vshard's
-- routers and storages follow whichever is writable. For such a set, the first start only:
--   SESSIONS_ROLE             primary (default) or replica
--   SESSIONS_PRIMARY          the primary a replica follows, as the file's uri without its
--                             credentials (host:port, unix/:path); default: the set's other
--                             instance when it has two
-- The instances of a set replicate as vshard's user, by the file's uris.
-- vshard itself is found on LUA_PATH (the official image ships it as a rock).
local fio = require('fio')
local log = require('log')

local script_dir = fio.dirname(fio.abspath(debug.getinfo(1, 'S').source:sub(2)))
package.path = script_dir .. '/?.lua;' .. script_dir .. '/?/init.lua;' .. package.path

local access = require('sessions.access')
local entry = require('sessions.entry')
local events = require('sessions.events')
local expiry = require('sessions.expiry')
local procedures = require('sessions.procedures')
local role = require('sessions.role')
local schema = require('sessions.schema')
local sharded = require('sessions.sharded')

local env, fail = entry.env, entry.failing('storage')

local password, cluster = entry.vshard_settings(fail)
local instance = env('SESSIONS_VSHARD_INSTANCE')
local this = sharded.find(cluster, instance)
if this == nil then
    fail(('SESSIONS_VSHARD_INSTANCE %s is not an instance of SESSIONS_VSHARD_CONFIG')
        :format(tostring(instance)))
end

local work_dir = env('SESSIONS_TT_WORK_DIR', fio.cwd())
-- A set of one instance, or with its master named in the file: as the file says. A set
-- that fails over: as its role file says (role.lua), first from the environment.
local replication = {read_only = not this.master, replication = this.peers}
if this.failover then
    local initial = {role = env('SESSIONS_ROLE', 'primary')}
    if initial.role == 'replica' then
        initial.primary_at = env('SESSIONS_PRIMARY', #this.addresses == 1 and this.addresses[1] or nil)
    end
    if initial.role ~= 'primary' and initial.role ~= 'replica' then
        fail(('SESSIONS_ROLE must be primary or replica, got %q'):format(initial.role))
    end
    if initial.role == 'replica' and this.uris[initial.primary_at or ''] == nil then
        fail(('a replica needs SESSIONS_PRIMARY, one of its set\'s other instances: %s')
            :format(table.concat(this.addresses, ', ')))
    end
    local opened
    opened, replication = pcall(role.open, work_dir, initial, {
        peers = this.addresses,
        uri_of = function(address)
            local uri = this.uris[address]
            if uri == nil then
                error(('%s is not another instance of this replica set (%s)')
                    :format(tostring(address), table.concat(this.addresses, ', ')), 0)
            end
            return uri
        end,
    })
    if not opened then
        fail(tostring(replication))
    end
end

fio.umask(tonumber('077', 8))
-- Listening waits for the schema and procedures, as in init.lua; vshard's cfg is given the
-- configured box (box_cfg_mode = 'manual'), so these options are ours alone.
box.cfg{
    work_dir = work_dir,
    memtx_memory = tonumber(env('SESSIONS_TT_MEMTX_MEMORY', tostring(2 * 1024 * 1024 * 1024))),
    wal_mode = env('SESSIONS_TT_WAL_MODE', 'write'),
    log = env('SESSIONS_TT_LOG'),
    pid_file = env('SESSIONS_TT_PID_FILE'),
    instance_uuid = instance,
    replicaset_uuid = this.replicaset,
    replication = replication.replication,
    replication_connect_quorum = replication.replication_connect_quorum,
    read_only = replication.read_only,
}
if this.failover then
    -- A primary that finds its peer ahead of it stays read-only and says why (role.lua).
    role.fence_if_behind()
end

local ttl = tonumber(env('SESSIONS_IDLE_TTL', ''))
schema.migrate({idle_ttl = ttl})
rawset(_G, 'sessions', procedures)
if not box.info.ro then
    access.ensure_user(env('SESSIONS_TARANTOOL_USER', 'sessions'), password)
end
local started, err = pcall(sharded.start_storage, cluster, instance)
if not started then
    fail(tostring(err))
end
if ttl ~= nil then
    expiry.set_rules({ttl = ttl, lifetime = tonumber(env('SESSIONS_MAX_LIFETIME', '0')), cap = 0})
end
expiry.start()
events.start()
if this.failover then
    role.watch()
end

local console_socket = env('SESSIONS_TT_CONSOLE_SOCKET')
if console_socket ~= nil then
    require('console').listen('unix/:' .. console_socket)
end
local listen = env('SESSIONS_TT_LISTEN', '127.0.0.1:3301')
box.cfg{listen = listen}
log.info('sessions storage: ready on %s, replica set %s, %s', listen, this.replicaset,
    box.info.ro and 'read-only' or 'writable')
