-- Failover without an operator (SESSIONS_FAILOVER=election): Tarantool's own Raft elects
-- one writable leader among three or more instances, the data spaces are synchronous with a
-- majority quorum (a write is acknowledged once most instances have it, so a new leader has
-- every acknowledged session), and strict fencing makes a leader cut off from the majority
-- stop writing before anybody else can be elected. No role file, no promote: a killed
-- leader, restarted, rejoins as a follower by itself. Needs Tarantool 2.10 or newer (2.6
-- has elections, but not a synchronous queue owned by the leader, nor fencing).
local fiber = require('fiber')
local log = require('log')

local MIN_VERSION = {2, 10}

-- Whether this Tarantool has what the mode needs; and its version, to say why not.
local function supported()
    local major, minor = require('tarantool').version:match('^(%d+)%.(%d+)')
    major, minor = tonumber(major), tonumber(minor)
    local ok = major ~= nil
        and (major > MIN_VERSION[1] or (major == MIN_VERSION[1] and minor >= MIN_VERSION[2]))
    return ok, require('tarantool').version
end

-- The box.cfg options of an instance of the cluster: `peers` are the other instances
-- (host:port), `password` the replication user's, `timeout` the election timeout in seconds
-- (a dead leader is noticed within about that long, and replaced soon after),
-- `sync_timeout` how long a write waits for the quorum. Raises an error that says what is
-- missing.
local function options(config)
    local ok, version = supported()
    if not ok then
        error(('SESSIONS_FAILOVER=election needs Tarantool %d.%d or newer (Raft elections with '
            .. 'a synchronous queue the leader owns, and fencing); this is %s'):format(
            MIN_VERSION[1], MIN_VERSION[2], version), 0)
    end
    local peers = config.peers or {}
    if #peers < 2 then
        error(('SESSIONS_FAILOVER=election needs SESSIONS_PEERS to name the two or more other '
            .. 'instances (%d given): fewer than three instances cannot elect a leader once one is '
            .. 'lost'):format(#peers), 0)
    end
    if config.password == nil then
        error('SESSIONS_FAILOVER=election needs SESSIONS_REPLICATION_PASSWORD', 0)
    end
    local replication = {}
    for i, address in ipairs(peers) do
        replication[i] = ('replicator:%s@%s'):format(config.password, address)
    end
    local instances = #peers + 1
    return {
        replication = replication,
        -- Raft alone decides who writes.
        read_only = false,
        election_mode = 'candidate',
        election_fencing_mode = 'strict',
        election_timeout = config.timeout,
        -- A peer silent for 4 of these is taken as gone: the leader's death is noticed within
        -- the election timeout.
        replication_timeout = config.timeout / 4,
        replication_synchro_quorum = math.floor(instances / 2) + 1,
        replication_synchro_timeout = config.sync_timeout,
        -- An instance that reaches one peer has a majority with itself.
        replication_connect_quorum = math.floor(instances / 2),
    }
end

-- The first primary of a new cluster: once every instance of `cfg.replication` has joined
-- (they join it while it is writable, before any election), it becomes a candidate and
-- claims the leadership; until then it logs every ten seconds what it waits for.
local function start_when_joined(cfg)
    local instances = #cfg.replication + 1
    fiber.create(function()
        fiber.name('sessions.election.start')
        local waited = 0
        while box.space._cluster:count() < instances do
            fiber.sleep(0.1)
            waited = waited + 0.1
            if waited >= 10 then
                waited = 0
                log.info('sessions: waiting for %d more instances to join before elections start',
                    instances - box.space._cluster:count())
            end
        end
        box.cfg(cfg)
        local ok, err = pcall(box.ctl.promote)
        if not ok then
            log.warn('sessions: could not claim the first leadership (%s): the elections decide', err)
        end
    end)
end

-- What the service and the metrics report: this instance's view of the election.
local function state()
    local election = box.info.election
    if election == nil or box.cfg.election_mode == nil or box.cfg.election_mode == 'off' then
        return nil
    end
    return {state = election.state, term = election.term, leader = election.leader}
end

return {
    supported = supported,
    options = options,
    start_when_joined = start_when_joined,
    state = state,
}
