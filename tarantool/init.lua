-- Entry point of the sessions Tarantool instance: configuration from the environment,
-- schema migrations, the service user, the stored procedures and the expiry fiber.
--
-- Environment (box.cfg option names, as Tarantool 2.11 spells them):
--   TT_LISTEN          address for the service, e.g. 3301, 0.0.0.0:3301, unix/:/path.sock
--   TT_WORK_DIR        data directory (snapshots and WAL); default: current directory
--   TT_MEMTX_MEMORY    bytes for data and indexes; default 2 GiB
--   TT_WAL_MODE        write (default), fsync or none
--   TT_LOG, TT_LOG_LEVEL, TT_PID_FILE, TT_READ_ONLY, TT_REPLICATION (comma-separated)
--   TT_CONSOLE_SOCKET  path of an admin console unix socket (optional)
--   SESSIONS_TARANTOOL_USER, SESSIONS_TARANTOOL_PASSWORD   the service's credentials
--   SESSIONS_IDLE_TTL  idle TTL in seconds for the expiry fiber until the service sends one
--                      (and for migration v3's expiry of existing sessions)
--   SESSIONS_MAX_LIFETIME  likewise the maximum lifetime in seconds (0 or unset: none)
--   SESSIONS_REPLICATION_PASSWORD  creates the `replicator` user replicas join as; a replica
--                      then sets TT_REPLICATION=replicator:<password>@primary:3301 and
--                      TT_READ_ONLY=true
local fio = require('fio')
local log = require('log')

local script_dir = fio.dirname(fio.abspath(debug.getinfo(1, 'S').source:sub(2)))
package.path = script_dir .. '/?.lua;' .. script_dir .. '/?/init.lua;' .. package.path

local access = require('sessions.access')
local expiry = require('sessions.expiry')
local procedures = require('sessions.procedures')
local schema = require('sessions.schema')

local function fail(message)
    io.stderr:write('sessions tarantool: ', message, '\n')
    os.exit(1)
end

local function env(name, default)
    local value = os.getenv(name)
    if value == nil or value == '' then
        return default
    end
    return value
end

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

local function env_bool(name, default)
    local value = env(name)
    if value == nil then
        return default
    end
    value = value:lower()
    if value == 'true' or value == '1' or value == 'yes' then
        return true
    elseif value == 'false' or value == '0' or value == 'no' then
        return false
    end
    fail(('%s must be true or false, got %q'):format(name, value))
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

-- Secrets nobody should run with: what .env.sample ships (every value there starts with
-- `change-me`) and the first words people type; the service refuses the same ones
-- (sessions/config.py, is_sample_secret).
local WELL_KNOWN = {changeme = true, password = true, secret = true, sessions = true,
                    tarantool = true, admin = true}
local function check_secret(name, value)
    local folded = value:lower():match('^%s*(.-)%s*$')
    if folded == '' or folded:sub(1, #'change-me') == 'change-me' or WELL_KNOWN[folded] then
        fail(('%s is a sample value or a well-known word; generate your own: openssl rand -hex 24')
            :format(name))
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
local listen = env('TT_LISTEN', '127.0.0.1:3301')

-- Snapshots, WAL files and sockets are for this user only: they hold live credentials.
fio.umask(tonumber('077', 8))

-- Listening starts only after the schema and procedures exist, so a client that gets
-- a connection can use it at once.
box.cfg{
    work_dir = env('TT_WORK_DIR'),
    memtx_memory = env_number('TT_MEMTX_MEMORY', 2 * 1024 * 1024 * 1024),
    wal_mode = env('TT_WAL_MODE', 'write'),
    log = env('TT_LOG'),
    log_level = env_number('TT_LOG_LEVEL', 5),
    pid_file = env('TT_PID_FILE'),
    read_only = env_bool('TT_READ_ONLY', false),
    replication = env_list('TT_REPLICATION'),
}

local ttl = env_number('SESSIONS_IDLE_TTL')
schema.migrate({idle_ttl = ttl})
rawset(_G, 'sessions', procedures)
if not box.info.ro then
    access.ensure_user(user, password)
    if replication_password ~= nil then
        access.ensure_replication_user(replication_password)
    end
end

if ttl ~= nil then
    expiry.set_rules({ttl, env_number('SESSIONS_MAX_LIFETIME', 0), 0})
end
expiry.start()

local console_socket = env('TT_CONSOLE_SOCKET')
if console_socket ~= nil then
    require('console').listen('unix/:' .. console_socket)
end

box.cfg{listen = listen}
log.info('sessions: ready on %s, schema version %d', listen, schema.version())
