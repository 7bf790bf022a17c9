-- Entry point of the sessions Tarantool instance: configuration from the environment,
-- schema migrations, the service user, the stored procedures and the expiry fiber.
--
-- Environment. Tarantool 2.11 applies TT_* variables to box.cfg by itself (the listening
-- port would open before the schema and grants exist), so the project's names are its own
-- and a TT_* variable stops the start:
--   SESSIONS_TT_LISTEN      address for the service, e.g. 3301, 0.0.0.0:3301, unix/:/path.sock
--   SESSIONS_TT_WORK_DIR    data directory (snapshots, WAL, the role file); default: current
--   SESSIONS_TT_MEMTX_MEMORY  bytes for data and indexes; default 2 GiB
--   SESSIONS_TT_WAL_MODE    write (default), fsync or none
--   SESSIONS_TT_LOG, SESSIONS_TT_LOG_LEVEL, SESSIONS_TT_PID_FILE
--   SESSIONS_TT_CONSOLE_SOCKET  path of an admin console unix socket (optional)
--   SESSIONS_TARANTOOL_USER, SESSIONS_TARANTOOL_PASSWORD   the service's credentials (the
--                      password at least 16 characters and not a sample or common one)
--   SESSIONS_IDLE_TTL  idle TTL in seconds for the expiry fiber until the service sends one
--                      (and for migration v3's expiry of existing sessions)
--   SESSIONS_MAX_LIFETIME  likewise the maximum lifetime in seconds (0 or unset: none)
--   SESSIONS_REPLICATION_PASSWORD  creates the `replicator` user replicas join as
--   SESSIONS_ROLE      primary (default) or replica: the role of the very first start only;
--                      later the role file in the data dir rules (sessions/role.lua)
--   SESSIONS_PRIMARY   host:port of the primary a replica follows at its first start
--   SESSIONS_PEERS     host:port of the other instances, comma-separated: a primary that
--                      finds one of them writable stays read-only (fenced)
--   SESSIONS_SYNC_REPLICAS  on the primary: acknowledge a write only once this many replicas
--                      have it too (synchronous replication; 0, the default: asynchronous);
--                      on 2.10 and later the primary then owns the synchronous queue
--   SESSIONS_SYNC_TIMEOUT   seconds a write waits for them before it is undone and refused
--                      (storage_write_failed); 0.5 by default, well below the service's 1 s
local fio = require('fio')
local log = require('log')

local script_dir = fio.dirname(fio.abspath(debug.getinfo(1, 'S').source:sub(2)))
package.path = script_dir .. '/?.lua;' .. script_dir .. '/?/init.lua;' .. package.path

local access = require('sessions.access')
local entry = require('sessions.entry')
local events = require('sessions.events')
local expiry = require('sessions.expiry')
local election = require('sessions.election')
local procedures = require('sessions.procedures')
local role = require('sessions.role')
local schema = require('sessions.schema')
local secrets = require('sessions.secrets')

local env, fail = entry.env, entry.failing('tarantool')

local function env_number(name, default)
    local value = env(name)
    if value == nil then
        return default
    end
    local number = tonumber(value)
    if number == nil then
        fail(('%s must be a number, got %q'):format(name, value))
    end
    return number
end

local function env_list(name)
    local value = env(name)
    if value == nil then
        return nil
    end
    local items = {}
    for item in value:gmatch('[^,%s]+') do
        items[#items + 1] = item
    end
    return items
end

-- Passwords nobody should run with: short ones, what .env.sample ships (every value there
-- starts with `change-me`) and common ones. The service refuses the same API keys and
-- passwords by the same rule (sessions/weak_secrets.py, generated into weak_secrets.lua).
local function check_secret(name, value)
    if secrets.is_weak(value) then
        fail(('%s is weak: it needs %s; generate your own: openssl rand -hex 24'):format(name, secrets.RULE))
    end
end

local user = env('SESSIONS_TARANTOOL_USER', 'sessions')
local password = env('SESSIONS_TARANTOOL_PASSWORD')
if password == nil then
    fail('SESSIONS_TARANTOOL_PASSWORD is not set; the service user needs a password')
end
check_secret('SESSIONS_TARANTOOL_PASSWORD', password)
-- The replication user exists only when this is set on purpose (never by a sample file).
local replication_password = env('SESSIONS_REPLICATION_PASSWORD')
if replication_password ~= nil then
    check_secret('SESSIONS_REPLICATION_PASSWORD', replication_password)
end
for name in pairs(os.environ()) do
    if name:sub(1, 3) == 'TT_' then
        fail(('%s would be applied by Tarantool itself, before the schema exists; use SESSIONS_%s')
            :format(name, name))
    end
end

local function tt(name, default)
    return env('SESSIONS_TT_' .. name, default)
end

local listen = tt('LISTEN', '127.0.0.1:3301')
local work_dir = tt('WORK_DIR', fio.cwd())
-- `manual`: a primary and replicas, failover by an operator (role.lua); `election`: three or
-- more instances elect their leader themselves (election.lua).
local failover = env('SESSIONS_FAILOVER', 'manual')
if failover ~= 'manual' and failover ~= 'election' then
    fail(('SESSIONS_FAILOVER must be manual or election, got %q'):format(failover))
end
local initial = {role = env('SESSIONS_ROLE', 'primary'), primary_at = env('SESSIONS_PRIMARY')}
if initial.role ~= 'primary' and initial.role ~= 'replica' then
    fail(('SESSIONS_ROLE must be primary or replica, got %q'):format(initial.role))
end
if initial.role == 'replica' and (initial.primary_at == nil or replication_password == nil) then
    fail('a replica needs SESSIONS_PRIMARY (host:port) and SESSIONS_REPLICATION_PASSWORD')
end

-- Snapshots, WAL files and sockets are for this user only: they hold live credentials.
fio.umask(tonumber('077', 8))

-- Listening starts only after the schema and procedures exist, so a client that gets
-- a connection can use it at once.
-- The role of this start: from the role file in the data dir, else the environment's.
local sync_replicas = env_number('SESSIONS_SYNC_REPLICAS', 0)
if sync_replicas < 0 or sync_replicas ~= math.floor(sync_replicas) then
    fail('SESSIONS_SYNC_REPLICAS must be a whole number of replicas, 0 or more')
end
local ok, cfg
if failover == 'election' then
    ok, cfg = pcall(election.options, {
        peers = env_list('SESSIONS_PEERS'),
        password = replication_password,
        timeout = env_number('SESSIONS_ELECTION_TIMEOUT', 2),
        sync_timeout = env_number('SESSIONS_SYNC_TIMEOUT', 2),
    })
else
    ok, cfg = pcall(role.open, work_dir, initial, {
        replication_password = replication_password,
        peers = env_list('SESSIONS_PEERS'),
    })
end
if not ok then
    fail(tostring(cfg))
end
local base = {
    work_dir = work_dir,
    -- This instance and the replicas a write must reach before it is acknowledged.
    replication_synchro_quorum = sync_replicas + 1,
    replication_synchro_timeout = env_number('SESSIONS_SYNC_TIMEOUT', 0.5),
    memtx_memory = env_number('SESSIONS_TT_MEMTX_MEMORY', 2 * 1024 * 1024 * 1024),
    wal_mode = tt('WAL_MODE', 'write'),
    log = tt('LOG'),
    log_level = env_number('SESSIONS_TT_LOG_LEVEL', 5),
    pid_file = tt('PID_FILE'),
    -- No replication_skip_conflict: two writers never make rows that collide (a seq carries
    -- its instance, schema.next_seq), so a conflict is a fault that stops the replication
    -- and says so (log, `sessions.info`, the healthcheck, a metric), never a row dropped.
}
-- convert-tokens refuses to run while the service is connected (sessions/hashing.lua): its
-- connections are counted from the first, before box.cfg may listen.
require('sessions.connected').watch(user)
if failover == 'election' then
    -- The peers elect among themselves from the start, so they reach each other at once;
    -- the procedures answer as soon as the service user exists.
    rawset(_G, 'sessions', procedures)
    base.listen = listen
    if #fio.glob(fio.pathjoin(work_dir, '*.snap')) == 0 then
        -- The very first start: the environment's `primary` makes the cluster alone (and
        -- its users below), the others join it; from then on the elections decide.
        if initial.role == 'primary' then
            base.read_only = false
        else
            -- Every peer listed (one that joined before is a member to know of), of which
            -- only the first primary is writable: the one joined.
            base.read_only = true
            base.replication = cfg.replication
        end
        box.cfg(base)
    else
        for name, value in pairs(cfg) do
            base[name] = value
        end
        box.cfg(base)
    end
else
    base.read_only = cfg.read_only
    base.replication = cfg.replication
    base.replication_connect_quorum = cfg.replication_connect_quorum
    box.cfg(base)
    if role.fence_if_behind() ~= nil then
        cfg.read_only = true
    end
end

-- On Tarantool 2.10 and later a primary makes the queue of synchronous writes its own before
-- anything writes, when its writes are synchronous or the queue is frozen (sessions/role.lua).
-- Under elections the leader owns it, by Raft.
if failover ~= 'election' and not cfg.read_only then
    role.start_queue(sync_replicas > 0)
end

local ttl = env_number('SESSIONS_IDLE_TTL')
schema.migrate({idle_ttl = ttl})
rawset(_G, 'sessions', procedures)
if not box.info.ro then
    access.ensure_user(user, password)
    if replication_password ~= nil then
        access.ensure_replication_user(replication_password)
    end
    -- Whether writes wait for replicas is the spaces' own flag (it replicates with them).
    schema.set_sync(failover == 'election' or sync_replicas > 0)
end
if failover == 'election' and box.cfg.election_mode ~= 'candidate' then
    if box.info.ro then
        -- Joined the first primary: now one of the candidates.
        box.cfg(cfg)
    else
        -- The first primary takes the others in (a join is a write, which a candidate that
        -- is not the leader cannot make), then stands as a candidate and asks to lead.
        election.start_when_joined(cfg)
    end
end

if ttl ~= nil then
    expiry.set_rules({ttl = ttl, lifetime = env_number('SESSIONS_MAX_LIFETIME', 0), cap = 0})
end
expiry.start()
events.start()
if failover ~= 'election' then
    role.watch()
end

local console_socket = tt('CONSOLE_SOCKET')
if console_socket ~= nil then
    require('console').listen('unix/:' .. console_socket)
end

box.cfg{listen = listen}
log.info('sessions: ready on %s, schema version %d, %s', listen, schema.version(),
    failover == 'election' and 'elections' or ('role ' .. tostring(role.get().role)))
