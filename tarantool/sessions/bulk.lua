-- Bulk work (listings, counts, bulk deletes): the slots it runs in, the pace of its walks,
-- and the deadline every call carries.
local fiber = require('fiber')

local errors = require('sessions.errors')

-- Listings and bulk deletes run at most this many at once in this instance, whoever calls:
-- the transaction thread is one core, so more would only interleave, and each one holds
-- its page in memory until it is sent. Beyond it a call waits for its turn until its
-- deadline, then is refused as `Overloaded`: the memory all bulk work takes here is at
-- most SLOTS pages, and the `get`s beside it wait behind at most one step of each.
local SLOTS = 4
-- A walk yields every this many tuples, so that a long one never holds up other requests.
local YIELD_EVERY = 1000

local state = {
    slots = fiber.channel(SLOTS),
    waiting = 0,
}

-- Deadlines are absolute times on this instance's real clock (fiber.time(), never the
-- frozen test clock): the service sends the moment after which its caller no longer waits,
-- measured against this clock (sessions/storage), and work past it is not started.
local function check_deadline(deadline)
    if deadline ~= nil and fiber.time() > deadline then
        errors.raise('Overloaded', 'the deadline of this call passed before its work was done')
    end
end

-- Called with the count of tuples a walk has met: every YIELD_EVERY of them it yields, then
-- gives up if the deadline passed meanwhile.
local function pace(seen, deadline)
    if seen % YIELD_EVERY == 0 then
        fiber.yield()
        check_deadline(deadline)
    end
end

-- Runs fn(...) in a bulk slot, waiting for one until `deadline`; the slot is given back
-- however fn ends.
local function in_slot(deadline, fn, ...)
    local wait = deadline - fiber.time()
    state.waiting = state.waiting + 1
    local admitted = wait > 0 and state.slots:put(true, wait)
    state.waiting = state.waiting - 1
    if not admitted then
        errors.raise('Overloaded', 'too much bulk work: no slot was free before the deadline')
    end
    local result = {pcall(fn, ...)}
    state.slots:get(0)
    if not result[1] then
        error(result[2], 0)
    end
    return unpack(result, 2, table.maxn(result))
end

-- How many calls hold a slot, and how many wait for one.
local function active()
    return state.slots:count()
end

local function waiting()
    return state.waiting
end

return {
    check_deadline = check_deadline,
    pace = pace,
    in_slot = in_slot,
    active = active,
    waiting = waiting,
}
