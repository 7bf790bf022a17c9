-- The role this instance plays, kept in a file of its own data dir so that it survives every
-- restart: `primary` (writable), `replica` (read-only, following `primary_at`) or `fenced`
-- (read-only, following nobody, until an operator acts: a primary restored from a backup
-- older than its replica's data, or one of two promoted in the same generation). The
-- environment gives only the role of the very first start; from then on the file rules,
-- changed by `promote`, `rejoin`, and by an old primary that finds a peer promoted after it
-- (it becomes that peer's replica: see open and watch).
local fiber = require('fiber')
local fio = require('fio')
local json = require('json')
local log = require('log')
local net_box = require('net.box')

local FILE = 'sessions-role.json'
local ROLES = {primary = true, replica = true, fenced = true}
-- How long a starting or promoted primary waits for each peer's answer.
local PEER_TIMEOUT = 2

local state = {
    role = nil,
    primary_at = nil,        -- host:port of the primary a replica follows
    -- Which promotion this instance last took part in: a promote makes it one more than any
    -- it knows of (its own, its answering peers'). The service prefers the writable instance
    -- of the latest, so it follows a promoted replica even one that lagged.
    generation = 0,
    path = nil,
    replication_password = nil,
    peers = {},              -- host:port of the other instances
    -- A storage of the sharded mode reaches its set's peers as vshard's user, by the uri of
    -- the cluster's configuration: a function from host:port to that uri (nil: `replicator`).
    uri_of = nil,
}

local function write(role, primary_at, generation)
    generation = generation or state.generation
    local data = json.encode({role = role, primary_at = primary_at, generation = generation})
    local temporary = state.path .. '.new'
    -- Failures say which file and why (a data dir this user cannot write, say).
    local function check(ok, err)
        if not ok then
            error(('cannot write the role file %s: %s'):format(temporary, tostring(err)), 0)
        end
        return ok
    end
    local file = check(fio.open(temporary, {'O_WRONLY', 'O_CREAT', 'O_TRUNC'}, tonumber('600', 8)))
    check(file:write(data))
    check(file:fsync())
    file:close()
    check(fio.rename(temporary, state.path))
    state.role, state.primary_at, state.generation = role, primary_at, generation
end

local function read()
    local file = fio.open(state.path, {'O_RDONLY'})
    if file == nil then
        return nil
    end
    local data = file:read()
    file:close()
    local ok, decoded = pcall(json.decode, data)
    -- A file with a generation and no role is a restore's (sessions restore into a data dir
    -- that never ran): the role comes from the environment, the generation from the file.
    local restored = ok and type(decoded) == 'table' and decoded.role == nil
        and type(decoded.generation) == 'number'
    if not ok or type(decoded) ~= 'table' or not (ROLES[decoded.role] or restored) then
        error(('%s is not a role file; move it away to start from the environment'):format(state.path), 0)
    end
    return decoded
end

-- The replication URI of an instance at host:port, as the `replicator` user.
local function uri(address)
    if state.uri_of ~= nil then
        return state.uri_of(address)
    end
    return ('replicator:%s@%s'):format(state.replication_password or '', address)
end

-- What this instance has: the replicated components of its vclock, as a map (id -> lsn).
local function vclock()
    local result = setmetatable({}, {__serialize = 'map'})
    for id, lsn in pairs(box.info.vclock or {}) do
        if id ~= 0 then
            result[id] = lsn
        end
    end
    return result
end

-- The peers that answer, each as {address, ro, vclock} (peers that do not answer are left
-- out: an instance alone on its side of a partition cannot know better).
-- The instance at `address` as a peer {address, ro, vclock, term, role, uuid}, or nil when it
-- does not answer as one.
local function ask(address)
    local ok, conn = pcall(net_box.connect, uri(address),
        {connect_timeout = PEER_TIMEOUT, wait_connected = true})
    if not ok or not conn:is_connected() then
        return nil
    end
    local called, answer = pcall(conn.call, conn, 'sessions.peer', {}, {timeout = PEER_TIMEOUT})
    conn:close()
    if not called or type(answer) ~= 'table' then
        return nil
    end
    return {address = address, ro = answer.ro, vclock = answer.vclock or {}, term = answer.term,
            role = answer.role, uuid = answer.uuid}
end

local function answering_peers()
    local found = {}
    for _, address in ipairs(state.peers) do
        found[#found + 1] = ask(address)
    end
    return found
end

local function writable_peer()
    for _, peer in ipairs(answering_peers()) do
        if peer.ro == false then
            return peer
        end
    end
    return nil
end

-- The promotion a peer (from answering_peers) writes under, and whether it is later than
-- this instance's last.
local function generation_of(peer)
    return tonumber(peer.term) or 0
end

local function later(peer)
    return generation_of(peer) > state.generation
end

-- Rows a peer has that this instance lacks, summed over the vclock's components.
local function behind(peer_vclock)
    local mine, missing = box.info.vclock, 0
    for id, lsn in pairs(peer_vclock) do
        local have = mine[tonumber(id)] or 0
        if tonumber(id) ~= 0 and lsn > have then
            missing = missing + (lsn - have)
        end
    end
    return missing
end

-- Reads the role file in `work_dir`, or writes the first one from `initial` ({role,
-- primary_at}); a primary with a writable peer promoted after it becomes its replica, one
-- with a writable peer of its own generation is fenced. Returns box.cfg options
-- for the role: read_only and replication.
local function open(work_dir, initial, options)
    state.path = fio.pathjoin(work_dir, FILE)
    state.replication_password = options.replication_password
    state.peers = options.peers or {}
    state.uri_of = options.uri_of
    local stored = read()
    if stored == nil then
        write(initial.role, initial.primary_at)
    elseif stored.role == nil then
        write(initial.role, initial.primary_at, stored.generation)
    else
        state.role, state.primary_at = stored.role, stored.primary_at
        state.generation = tonumber(stored.generation) or 0
    end
    if state.role == 'primary' or state.role == 'fenced' then
        -- An old primary back after a failover: the peer promoted after it is the primary
        -- now, and this one its replica, as the operator would make it (`sessions rejoin`).
        -- Sessions only this one has (acknowledged before the failover, never replicated)
        -- stay in its data, and reach the other if the roles are swapped back.
        local other = writable_peer()
        if other ~= nil and later(other) then
            log.warn('sessions: %s is writable and was promoted after this instance (generation %s, '
                .. 'this one %d): this instance follows it as a replica', other.address,
                tostring(other.term), state.generation)
            write('replica', other.address)
        elseif other ~= nil and state.role == 'primary' and generation_of(other) == state.generation then
            -- (One promoted before it yields to it instead, within a second: see watch.)
            log.error('sessions: %s is writable, promoted no earlier than this primary: this instance '
                .. 'stays read-only (fenced) until an operator rejoins it as a replica (sessions rejoin '
                .. '%s) or promotes it', other.address, other.address)
            write('fenced', nil)
        end
    end
    if state.role == 'replica' then
        -- One that has its data already starts at once, its primary up or not (it is
        -- read-only either way and catches up when the primary is back); only an empty one
        -- must wait to join.
        local joined = #fio.glob(fio.pathjoin(work_dir, '*.snap')) > 0
        return {
            read_only = true,
            replication = {uri(state.primary_at)},
            -- An empty one joins its primary alone: 1, not every member the primary knows
            -- of (a replica it had before, whose data was emptied to be seeded again, is one).
            replication_connect_quorum = joined and 0 or 1,
        }
    end
    return {read_only = state.role ~= 'primary', replication = {}}
end

-- After box.cfg: a primary that finds an answering peer with rows it lacks has lost data of
-- its own (restored from an older backup, a disk replaced) while that peer kept them; the peer
-- would take none of what it writes next (replication goes by vclock), so the two would part
-- in silence. It stays read-only (fenced) and says how to go on: the peer's address, or nil.
local function fence_if_behind()
    if state.role ~= 'primary' then
        return nil
    end
    for _, peer in ipairs(answering_peers()) do
        local missing = behind(peer.vclock)
        if missing > 0 then
            log.error('sessions: %s has %d rows this primary lacks (restored from an older backup?): '
                .. 'it stays read-only (fenced). Stop %s and empty its data (it is seeded again from '
                .. 'this instance when it starts), then `sessions promote` here; or, to keep its data, '
                .. '`sessions rejoin %s` here', peer.address, missing, peer.address, peer.address)
            box.cfg{read_only = true}
            write('fenced', nil)
            return peer.address
        end
    end
    return nil
end

local function get()
    return {role = state.role, primary_at = state.primary_at, generation = state.generation}
end

-- The generation alone, without a table: read for every event (events.lua).
local function current_generation()
    return state.generation
end

-- Tarantool 2.10 and later give the queue of synchronous writes an owner, which
-- box.ctl.promote() claims: only the owner may write to a synchronous space, an instance whose
-- queue another one owns is read-only, and an owner that restarts finds its queue frozen
-- (read-only) until it claims it again. Tarantool 2.6 has no owner (nil here).
local function queue_owner()
    local synchro = box.info.synchro
    return synchro ~= nil and synchro.queue.owner or nil
end

-- A writable primary owns the queue while its writes are synchronous (`sync`), and whenever
-- it is frozen or another instance owns it (else this one stays read-only). Asynchronous
-- writes need no owner, so a deployment that never turned synchronous replication on never
-- has one, as on 2.6.
local function settle_queue(sync)
    local owner = queue_owner()
    if owner == nil then
        return
    end
    local frozen = owner == box.info.id and box.info.ro_reason == 'synchro'
    if (owner ~= box.info.id or frozen) and (sync or owner ~= 0) then
        box.ctl.promote()
    end
end

-- At the start of a primary: the queue settled now or, when that fails (a primary restarted
-- with writes its replicas have not confirmed, and they connect only once it listens), again
-- every second until it works or the role changes.
local function start_queue(sync)
    local ok, err = pcall(settle_queue, sync)
    if ok then
        return
    end
    log.warn('sessions: this primary cannot take its queue of synchronous writes yet (%s): '
        .. 'read-only until it can; trying again every second', tostring(err))
    fiber.create(function()
        fiber.name('sessions_queue')
        while state.role == 'primary' do
            fiber.sleep(1)
            if state.role == 'primary' and pcall(settle_queue, sync) then
                log.info('sessions: the queue of synchronous writes is this primary\'s: writable')
                return
            end
        end
    end)
end

-- With synchronous replication, the writes the lost primary left waiting for their quorum
-- are this instance's to settle: on 2.10 and later by owning the queue (the spaces' flag says
-- whether writes are synchronous), on 2.6 by clearing it. Those that reached this instance
-- are confirmed, with a quorum of this instance alone for the while: the lost primary may
-- have acknowledged them (it confirmed them, and its confirmation was lost with it), and it
-- confirms nothing any more.
local function take_over_queue()
    local quorum = box.cfg.replication_synchro_quorum
    box.cfg{replication_synchro_quorum = 1}
    local ok, err = true, nil
    if queue_owner() ~= nil then
        ok, err = pcall(settle_queue, box.space.sessions.is_sync or false)
    elseif box.ctl.clear_synchro_queue ~= nil then
        ok, err = pcall(box.ctl.clear_synchro_queue)
    end
    box.cfg{replication_synchro_quorum = quorum}
    if not ok then
        error(('the queue of synchronous writes could not be taken over: %s'):format(err), 0)
    end
end

-- Failover: this instance becomes the primary, writable, following nobody. Refused while
-- another instance is writable (two writers would each lose the other's sessions).
-- It waits (up to CATCH_UP seconds) until it has every row the peers that answer have, and
-- is refused if it does not: sessions the others acknowledged would vanish.
local CATCH_UP = 10
local function promote()
    local peers = answering_peers()
    for _, peer in ipairs(peers) do
        if peer.ro == false then
            error(('%s is writable: make it a replica first (sessions rejoin), then promote')
                :format(peer.address), 0)
        end
    end
    local deadline = fiber.clock() + CATCH_UP
    for _, peer in ipairs(peers) do
        while behind(peer.vclock) > 0 and fiber.clock() < deadline do
            fiber.sleep(0.1)
        end
        if behind(peer.vclock) > 0 then
            error(('%s has %d rows this instance lacks: let it catch up (sessions rejoin %s), then promote')
                :format(peer.address, behind(peer.vclock), peer.address), 0)
        end
    end
    local generation = state.generation
    for _, peer in ipairs(peers) do
        generation = math.max(generation, tonumber(peer.term) or 0)
    end
    -- A peer that does not answer (the lost primary) may have acknowledged sessions this
    -- instance never received (asynchronous replication): nobody can count them now, so the
    -- promote names it rather than pretend nothing is missing. Those sessions stay in its
    -- data, and are served again if the roles are swapped back.
    local answered, unanswered = {}, {}
    for _, peer in ipairs(peers) do
        answered[peer.address] = true
    end
    for _, address in ipairs(state.peers) do
        if not answered[address] then
            unanswered[#unanswered + 1] = address
        end
    end
    box.cfg{replication = {}}
    box.cfg{read_only = false}
    take_over_queue()
    write('primary', nil, generation + 1)
    local result = get()
    if #unanswered > 0 then
        result.unanswered = unanswered
        result.vclock = vclock()
        log.warn('sessions: promoted while %s did not answer: sessions it acknowledged after the rows '
            .. 'this instance has (vclock %s) are only in its data, served again if the roles are '
            .. 'swapped back', table.concat(unanswered, ', '), json.encode(result.vclock))
    end
    return result
end

-- This instance becomes a replica of the instance at `address` (host:port): read-only at
-- once, then following it. Sessions only this one has (written after the other stopped
-- following it) stay here and reach the other if the roles are swapped back.
local function rejoin(address)
    if type(address) ~= 'string' or address == '' then
        error('rejoin needs the primary as host:port (or unix/:/path)', 0)
    end
    local upstream = uri(address)
    box.cfg{read_only = true}
    box.cfg{replication = {upstream}}
    write('replica', address)
    return get()
end

-- The operator's rejoin (`sessions rejoin`): the address must be another instance that answers
-- as a peer, with the replication password; otherwise nothing changes. Unchecked, a mistyped
-- port made a live primary read-only for good, following nobody.
local function operator_rejoin(address)
    if type(address) ~= 'string' or address == '' then
        error('rejoin needs the primary as host:port (or unix/:/path)', 0)
    end
    local peer = ask(address)
    if peer == nil then
        error(('%s does not answer as an instance of this service (with the replication password): '
            .. 'nothing changed'):format(address), 0)
    end
    if peer.uuid == box.info.uuid then
        error(('%s is this instance: nothing changed'):format(address), 0)
    end
    return rejoin(address)
end

-- A network split: an operator who saw the primary unreachable promoted the replica, while
-- this primary went on, cut off from it. Once this instance reaches a writable peer promoted
-- after it, it follows that peer as a replica (writes here stop at once; sessions opened
-- here meanwhile stay in this data and reach the other if the roles are swapped back). A
-- writable peer of its own generation (two promotes, one on each side of a split) makes
-- both stop writing (fenced) until an operator promotes the one to keep. A fenced instance
-- follows a peer promoted after it the same way. Looked at every WATCH_INTERVAL seconds.
local WATCH_INTERVAL = 1

local function look()
    if state.role == 'replica' then
        -- A replica learns the generation its peers write under, so that a promote made
        -- while they are out of reach (the primary lost, or cut off) is later than theirs
        -- even when they were promoted since this instance last was.
        local known = state.generation
        for _, peer in ipairs(answering_peers()) do
            known = math.max(known, generation_of(peer))
        end
        if known > state.generation then
            write('replica', state.primary_at, known)
        end
        return
    end
    for _, peer in ipairs(answering_peers()) do
        if peer.ro == false and later(peer) then
            log.warn('sessions: %s is writable and was promoted after this instance (generation %s, this '
                .. 'one %d): this instance stops writing and follows it as a replica', peer.address,
                tostring(peer.term), state.generation)
            rejoin(peer.address)
            return
        end
        -- The other may have stopped first: a fenced peer of this generation is the same split.
        local rival = peer.ro == false or peer.role == 'fenced'
        if state.role == 'primary' and rival and generation_of(peer) == state.generation then
            box.cfg{read_only = true}
            write('fenced', nil)
            log.error('sessions: %s was promoted in the same generation as this primary (%d): this '
                .. 'instance stops writing (fenced). Promote the one whose sessions to keep (sessions '
                .. 'promote), and the other follows it', peer.address, state.generation)
            return
        end
    end
end

local function watch()
    fiber.create(function()
        fiber.name('sessions.role.watch')
        while true do
            fiber.sleep(WATCH_INTERVAL)
            if #state.peers > 0 then
                local ok, err = pcall(look)
                if not ok then
                    log.warn('sessions: looking at the peers failed: %s', tostring(err))
                end
            end
        end
    end)
end

return {
    open = open,
    fence_if_behind = fence_if_behind,
    watch = watch,
    get = get,
    generation = current_generation,
    vclock = vclock,
    promote = promote,
    rejoin = operator_rejoin,
    start_queue = start_queue,
}
