-- Entry point of a router of the sharded mode: vshard's router, and the procedures the
-- service calls (sessions/router.lua), which route each call to the storage of its bucket.
-- A router keeps no sessions, so any number of them may serve one cluster.
--
-- Environment: SESSIONS_TT_LISTEN, _WORK_DIR, _LOG, _PID_FILE, _CONSOLE_SOCKET,
-- SESSIONS_TARANTOOL_USER and _PASSWORD (the service's user, as on an instance), and
-- SESSIONS_VSHARD_CONFIG, the cluster's configuration (storage.lua says what it holds), and
-- SESSIONS_VSHARD_BOOTSTRAP=true on one router of the cluster: it spreads the buckets over
-- the replica sets once they answer, unless that was done (dc.sharded.yml sets it).
-- vshard itself is found on LUA_PATH.
local fio = require('fio')
local log = require('log')

local script_dir = fio.dirname(fio.abspath(debug.getinfo(1, 'S').source:sub(2)))
package.path = script_dir .. '/?.lua;' .. script_dir .. '/?/init.lua;' .. package.path

local access = require('sessions.access')
local entry = require('sessions.entry')
local sharded = require('sessions.sharded')

local env, fail = entry.env, entry.failing('router')

local password, cluster = entry.vshard_settings(fail)

fio.umask(tonumber('077', 8))
box.cfg{
    work_dir = env('SESSIONS_TT_WORK_DIR', fio.cwd()),
    log = env('SESSIONS_TT_LOG'),
    pid_file = env('SESSIONS_TT_PID_FILE'),
    -- A router holds the service's user and nothing else.
    memtx_memory = 64 * 1024 * 1024,
}
sharded.start_router(cluster)
local router = require('sessions.router')
rawset(_G, 'sessions', router)
if env('SESSIONS_VSHARD_BOOTSTRAP') == 'true' then
    -- Retried until every replica set answers: the storages may start after the router.
    require('fiber').create(function()
        while true do
            local done, err = require('vshard').router.bootstrap({if_not_bootstrapped = true})
            if done then
                log.info('sessions router: the buckets are spread over the replica sets')
                return
            end
            log.info('sessions router: bootstrap waits: %s', tostring(err and err.message or err))
            require('fiber').sleep(1)
        end
    end)
end
-- The grants follow procedures.lua's exports, which are the router's names too.
access.ensure_user(env('SESSIONS_TARANTOOL_USER', 'sessions'), password)

local console_socket = env('SESSIONS_TT_CONSOLE_SOCKET')
if console_socket ~= nil then
    require('console').listen('unix/:' .. console_socket)
end
local listen = env('SESSIONS_TT_LISTEN', '127.0.0.1:3301')
box.cfg{listen = listen}
log.info('sessions router: ready on %s', listen)
