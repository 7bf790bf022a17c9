-- What an instance says about itself: `info`, for the service (which instance to use, its
-- clock), readiness probes, /metrics and `sessions stats`, without a full scan; and `peer`,
-- what another instance asks before it becomes writable (role.lua). info's fields are part
-- of the wire contract (describe() reports them; the service reads them by these names).
local fiber = require('fiber')
local fio = require('fio')

local F = require('sessions.fields')
local bulk = require('sessions.bulk')
local election = require('sessions.election')
local expiry = require('sessions.expiry')
local memory = require('sessions.memory')
local role = require('sessions.role')
local schema = require('sessions.schema')
local sharded = require('sessions.sharded')
local sync = require('sessions.sync')

-- Modification time of the newest snapshot, or nil before the first one.
local function last_checkpoint()
    local checkpoints = box.info.gc().checkpoints
    local newest = checkpoints[#checkpoints]
    if newest == nil then
        return nil
    end
    local path = fio.pathjoin(box.cfg.memtx_dir, ('%020d.snap'):format(newest.signature))
    local stat = fio.stat(path)
    return stat and stat.mtime
end

-- Which promotion this instance's writes belong to: the election term, else the generation
-- of its last `promote` (role.lua). The service prefers the writable instance of the latest
-- one (sessions/storage).
local function term()
    local raft = election.state()
    if raft ~= nil then
        return raft.term
    end
    return role.get().generation or 0
end

local function next_expiry()
    local next_due = box.space.sessions.index.expires:min()
    return next_due and next_due[F.EXPIRES]
end

-- info's fields, in order, each with how it is found now (nil is sent as null).
local FIELDS = {
    {'now', fiber.time},                    -- this instance's real clock, for deadlines
    {'bulk_active', bulk.active},           -- bulk calls in a slot
    {'bulk_waiting', bulk.waiting},         -- and waiting for one
    {'ro', function() return box.info.ro end},
    {'role', function() return role.get().role end},
    {'vclock', role.vclock},
    {'schema_version', schema.version},
    {'schema_latest', function() return schema.VERSION end},
    {'sessions', sharded.stored_sessions},  -- a storage's: of the buckets its set owns
    {'next_expiry', next_expiry},           -- the earliest stored expiry
    {'purged', function() return expiry.stats().purged end},
    {'memory_used', function() return box.slab.info().arena_used end},
    {'tarantool_version', function() return box.info.version end},
    {'last_checkpoint', last_checkpoint},
    {'storage_full', function() return memory.full end},
    {'touch_skipped', function() return memory.touch_skipped end},
    -- How many of this instance's upstreams stopped on an error (a conflict, say): it no
    -- longer follows them, and says so rather than drop a row in silence.
    {'replication_stopped', function() return sync.count_peers('upstream', 'stopped') end},
    -- Whether a write can be confirmed now (synchronous replication with too few replicas
    -- following: no).
    {'writes_confirmable', sync.confirmable},
    -- With elections (election.lua): this instance's state, the term, the leader's id.
    {'election', election.state},
    {'term', term},
    -- A router's count of the replica sets whose master does not answer or cannot write
    -- (router.lua); an instance is its own store, and counts none.
    {'sets_lost', function() return 0 end},
}
local NAMES = {}
for i, field in ipairs(FIELDS) do
    NAMES[i] = field[1]
end

local function info()
    local result = {}
    for _, field in ipairs(FIELDS) do
        local value = field[2]()
        if value == nil then
            value = box.NULL
        end
        result[field[1]] = value
    end
    return result
end

-- Whether this instance is writable, and what it has.
local function peer()
    return {ro = box.info.ro, role = role.get().role or box.NULL, vclock = role.vclock(), term = term(),
            uuid = box.info.uuid}
end

return {
    FIELDS = NAMES,
    info = info,
    peer = peer,
}
