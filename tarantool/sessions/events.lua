-- The event feed: every change to a session (opened, rotated, moved to another address,
-- ended and why) written by the operation or the purge that makes it, in the same
-- transaction, into the `events` space; never a token. Pages of it are served only up to
-- what the WAL holds, waiters are woken when more is there, and a fiber trims it to the
-- retention the service sets.
local ffi = require('ffi')
local fiber = require('fiber')
local log = require('log')

local F = require('sessions.fields')
local clock = require('sessions.clock')
local memory = require('sessions.memory')
local role = require('sessions.role')

local E = F.EVENTS
local SPACE = 'events'
-- In sessions_state: the feed's settings {on, keep, most}, and the highest seq the retention
-- removed (a consumer behind it has missed events).
local CONFIG_KEY = 'events'
local TRIMMED_KEY = 'events_trimmed'

-- A seq is the term of the promotion its instance writes under (the election term, else the
-- generation of its last promote: monitor.lua) times SPAN, plus one more than the feed's
-- last seq within that term. Within a term the numbers follow each other without gaps; a
-- newly promoted instance, which may lack the old primary's last events, starts above every
-- number of the terms before, so no seq is ever handed out twice for different events and
-- a consumer's `after` never skips an event of the new term. Exact in a Lua number up to
-- term 2^21 (2^53 in all).
local SPAN = 2^32
-- Events the retention removes in one transaction.
local TRIM_BATCH = 1000
-- A storage of the sharded mode numbers its events otherwise (use_set): the counter of
-- TICK_US ticks since TICKS_FROM times SETS, plus its replica set's number less one. Every
-- set's seqs then are unique across the cluster, and one integer orders the events of all
-- of them by when they were written (to within the sets' clock difference), which the
-- router's merge relies on (router.lua, feed_page). 100 µs ticks keep seqs below 2^53 (exact
-- in JavaScript) until 2136, and a set runs ahead of its clock only above 10,000 events a
-- second.
local SETS = 256
local TICKS_FROM_US = 1735689600 * 1000000 -- 2025-01-01T00:00:00Z
local TICK_US = 100
local MAX_SLEEP = 1

-- The id of the open transaction (Tarantool's C API; box's own Lua declares it too).
pcall(ffi.cdef, 'int64_t box_txn_id();')

local state = {
    config = nil,           -- {on, keep = seconds, most = events}; nil until known
    loaded = false,         -- whether the saved settings were read
    durable = nil,          -- the highest seq in the WAL: pages stop there
    was_ro = nil,
    -- The open transaction that wrote events, {id, last: its last seq}: its commit trigger
    -- is set and reads `last` when it fires.
    txn = nil,
    changed = fiber.cond(), -- broadcast when events reach the WAL
    wakeup = fiber.cond(),  -- the retention fiber's next step now
    worker = nil,
    trimmed = 0,            -- events the retention removed since start
    waiting = 0,            -- calls in wait() now (one per service process)
    -- Changes made without their event, memory being full (emit): how many since start, and
    -- the feed's last seq when the latest was, for `missed` (kept in memory only: a restart
    -- forgets it).
    lost = 0,
    lost_after = nil,
    losing = false,
    passes = 0,
    -- Sharded mode: this replica set's number (nil on a single instance), the open
    -- transactions that wrote events and wait for their commit {[txn] = their first seq},
    -- and the counter below which this instance promised (stable) to write no more.
    set = nil,
    inflight = {},
    promised = 0,
}

local function load()
    if state.loaded then
        return
    end
    local space = box.space.sessions_state
    if space == nil then
        return
    end
    state.loaded = true
    local saved = space:get(CONFIG_KEY)
    if saved ~= nil then
        local value = saved[2]
        state.config = {on = value.on == true, keep = value.keep, most = value.most}
    end
end

-- The service's setting, sent with every call (dispatch.lua): {keep = seconds, most =
-- events} when the feed is on, nil when off. Kept in the store, so that the purge writes
-- (or not) the events of what it ends before the service's first call after a restart.
-- Called with every call, so it must stay cheap.
local function configure(wanted)
    load()
    local current = state.config
    local on = wanted ~= nil
    if current ~= nil and current.on == on
            and (not on or (current.keep == wanted.keep and current.most == wanted.most)) then
        return
    end
    local config = {on = on}
    if on then
        config.keep, config.most = wanted.keep, wanted.most
    elseif current ~= nil then
        -- Off: what was written stays bounded by the last retention.
        config.keep, config.most = current.keep, current.most
    end
    state.config = config
    local space = box.space.sessions_state
    if space ~= nil and not box.info.ro then
        space:replace({CONFIG_KEY, config})
    end
    state.wakeup:signal()
end

local function is_on()
    local config = state.config
    return config ~= nil and config.on
end

local function term()
    local mode = box.cfg.election_mode
    if mode ~= nil and mode ~= 'off' then
        return box.info.election.term
    end
    return role.generation() or 0
end

-- The tick counter now, on the real clock (never sessions.clock's frozen one: an idle set's
-- stable bound moves with it).
local function ticks()
    return math.floor(tonumber(fiber.time64() - TICKS_FROM_US) / TICK_US)
end

-- The least counter the next event may take: above the newest event's, not behind the
-- clock, and not below what stable() promised.
local function counter_floor()
    local last = box.space[SPACE].index.seq:max()
    local floor = math.max(ticks(), state.promised)
    if last ~= nil then
        -- A seq from 2^32 on is read back as a 64-bit cdata: exact as a number below 2^53.
        floor = math.max(floor, math.floor(tonumber(last[E.SEQ]) / SETS) + 1)
    end
    return floor
end

local function next_seq()
    if state.set ~= nil then
        return counter_floor() * SETS + state.set - 1
    end
    local base = term() * SPAN
    local last = box.space[SPACE].index.seq:max()
    local seq = last and last[E.SEQ] + 1 or 1
    if seq <= base then
        seq = base + 1
    end
    return seq
end

-- Note `seq`, written in the open transaction: one commit trigger per transaction records
-- its last seq as in the WAL (and, with synchronous replication, on the replicas it waits
-- for) once it is. (The trigger does not read the transaction's statements: Tarantool 2.6
-- can crash doing that after a rollback to a savepoint.)
local function track(seq)
    local id = ffi.C.box_txn_id()
    local txn = state.txn
    if txn ~= nil and txn.id == id then
        txn.last = seq
        return
    end
    txn = {id = id, last = seq}
    state.txn = txn
    local inflight = state.inflight
    inflight[txn] = seq
    box.on_commit(function()
        inflight[txn] = nil
        if txn.last > (state.durable or 0) then
            state.durable = txn.last
        end
        state.changed:broadcast()
    end)
    box.on_rollback(function()
        inflight[txn] = nil
    end)
end

-- Where the open transaction's events stand, before an item of a batch that may be undone
-- (dispatch.lua); undo(mark) after a rollback to the savepoint taken with it.
local function mark()
    local txn = state.txn
    if txn ~= nil and txn.id == ffi.C.box_txn_id() then
        return txn.last
    end
    return nil
end

local function undo(marked)
    local txn = state.txn
    if txn ~= nil and txn.id == ffi.C.box_txn_id() then
        -- Nothing written by this transaction remains: its trigger then moves nothing.
        txn.last = marked or 0
    end
end

-- Write the event of a change to the session `tuple` (as it is after the change; as it was
-- for an end): `kind` opened, rotated, moved or ended, `reason` why it ended. Inside the
-- transaction of the change, which it shares; nothing when the feed is off.
--
-- With memory full, an end or a move is made without its event rather than refused: ending
-- sessions is how memory comes back (the purge, `del`), and a signed-in user's `get` keeps
-- working (get.lua). Pages then say `missed` to consumers behind the loss. An opening or a
-- rotation fails with its own write, as it would without the feed.
local function emit(kind, reason, tuple)
    local config = state.config
    if config == nil or not config.on then
        return
    end
    local seq = next_seq()
    local space = box.space[SPACE]
    local ok, err = pcall(space.insert, space, {
        seq, clock.now(), kind, reason or box.NULL, tuple[F.ID], tuple[F.USER_ID], tuple[F.IP],
    })
    if ok then
        state.losing = false
        track(seq)
        return
    end
    if (kind ~= 'ended' and kind ~= 'moved') or not memory.is_out_of_memory(err) then
        error(err)
    end
    memory.note(err)
    state.lost = state.lost + 1
    state.lost_after = math.max(state.lost_after or 0, seq - 1)
    if not state.losing then
        state.losing = true
        log.error('sessions: memory is full: sessions end without their events; consumers behind '
            .. 'seq %s are told `missed`', tostring(seq - 1))
    end
end

-- The highest seq a page may show: what the WAL holds. A write waiting for its WAL write is
-- visible to other fibers already (memtx reads are not isolated), and a crash before it
-- lands would hand its numbers out again: never shown before the commit trigger. Read-only,
-- the rows come from the primary's WAL; after a change of role, what is stored.
local function head()
    local ro = box.info.ro
    if ro or state.durable == nil or ro ~= state.was_ro then
        state.was_ro = ro
        local last = box.space[SPACE].index.seq:max()
        state.durable = last and last[E.SEQ] or 0
    end
    return state.durable
end

-- Sharded mode: the highest seq up to which this instance has written every event it ever
-- will (all in the WAL; none in flight below it, and every later one above it), which the
-- router's pages stop at, so that an event a set commits later never sorts before a cursor
-- already handed out from another set. With a transaction in flight, just below its first
-- seq (commits follow seq order: a memtx transaction does not yield before its commit, and
-- every seq is above the newest row, in flight or not); else just below the next seq's
-- floor, which is then promised, so that a clock set back does not break the promise. On a
-- single instance, head().
local function stable()
    if state.set == nil then
        return head()
    end
    local lowest
    for _, first in pairs(state.inflight) do
        if lowest == nil or first < lowest then
            lowest = first
        end
    end
    if lowest ~= nil then
        return lowest - 1
    end
    local floor = counter_floor()
    state.promised = floor
    return floor * SETS - 1
end

-- Sharded mode: this storage's replica set number (1 to SETS, sharded.lua) goes into every
-- seq from now on.
local function use_set(number)
    assert(number % 1 == 0 and number >= 1 and number <= SETS, 'a replica set number is 1 to ' .. SETS)
    state.set = number
end

local function trimmed_seq()
    local entry = box.space.sessions_state:get(TRIMMED_KEY)
    return entry and entry[2] or 0
end

-- At most `limit` events after `after`, oldest first, none beyond head(); whether events
-- after `after` were removed by the retention (the consumer missed them); head().
local function page(after, limit)
    local top = head()
    local result = {}
    for _, event in box.space[SPACE].index.seq:pairs({after}, {iterator = 'GT'}) do
        if event[E.SEQ] > top or #result >= limit then
            break
        end
        result[#result + 1] = event
    end
    local lost = state.lost_after ~= nil and after <= state.lost_after
    return result, lost or after < trimmed_seq(), top
end

-- Until head() passes `after`, at most `timeout` seconds; head().
local function wait(after, timeout)
    local deadline = fiber.clock() + timeout
    state.waiting = state.waiting + 1
    while head() <= after do
        local left = deadline - fiber.clock()
        if left <= 0 then
            break
        end
        -- Read-only nobody broadcasts: look again at least every second.
        state.changed:wait(math.min(left, MAX_SLEEP))
    end
    state.waiting = state.waiting - 1
    return head()
end

-- One step of the retention: the oldest events beyond `most`, and those older than `keep`
-- seconds (an event exactly `keep` old stays), at most TRIM_BATCH in one transaction; never
-- the newest, so that numbering goes on from it. How many.
local function trim_batch(config)
    local space = box.space[SPACE]
    local newest = space.index.seq:max()
    if newest == nil then
        return 0
    end
    local cutoff = clock.now() - (config.keep or math.huge)
    local excess = space:len() - (config.most or math.huge)
    local doomed = {}
    for _, event in space.index.seq:pairs() do
        if event[E.SEQ] == newest[E.SEQ] or #doomed >= TRIM_BATCH then
            break
        end
        if #doomed < excess or event[E.TIME] < cutoff then
            doomed[#doomed + 1] = event[E.SEQ]
        else
            break
        end
    end
    if #doomed == 0 then
        return 0
    end
    box.begin()
    for _, seq in ipairs(doomed) do
        space:delete(seq)
    end
    box.space.sessions_state:replace({TRIMMED_KEY, doomed[#doomed]})
    box.commit()
    return #doomed
end

local function loop()
    fiber.self():name('sessions_events')
    while true do
        local pause = MAX_SLEEP
        load()
        local config = state.config
        if config ~= nil and config.keep ~= nil and not box.info.ro and box.space[SPACE] ~= nil then
            local ok, result = pcall(trim_batch, config)
            state.passes = state.passes + 1
            if ok then
                state.trimmed = state.trimmed + result
                if result >= TRIM_BATCH then
                    pause = 0
                end
            else
                if box.is_in_txn() then
                    box.rollback()
                end
                log.error('sessions: events retention step failed: %s', tostring(result))
            end
        end
        if pause > 0 then
            state.wakeup:wait(pause)
        else
            fiber.yield()
        end
    end
end

local function start()
    load()
    -- Before anything writes: what the instance recovered is all in the WAL.
    if box.space[SPACE] ~= nil then
        head()
    end
    if state.worker == nil or state.worker:status() == 'dead' then
        state.worker = fiber.create(loop)
    end
end

-- The next retention step now (tests that move the clock).
local function wake()
    state.wakeup:signal()
end

local function stats()
    return {
        on = is_on(), trimmed = state.trimmed, passes = state.passes, head = head(), waiting = state.waiting,
        lost = state.lost,
    }
end

return {
    SPAN = SPAN,
    SETS = SETS,
    TICK_US = TICK_US,
    configure = configure,
    is_on = is_on,
    emit = emit,
    mark = mark,
    undo = undo,
    head = head,
    stable = stable,
    use_set = use_set,
    page = page,
    wait = wait,
    trim_batch = trim_batch,
    start = start,
    wake = wake,
    stats = stats,
}
