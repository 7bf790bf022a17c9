-- When a session is live: the one definition the procedures and the purge share.
--
-- The rules travel with every call from the service as a map {ttl =, lifetime =, cap =}:
--   ttl       the service's idle TTL in seconds (SESSIONS_IDLE_TTL)
--   lifetime  the most seconds a session may live after `create` (0: no limit)
--   cap       the most live sessions one user may have (0: no limit)
-- and expiry.lua adds a fourth, `since`: when these rules took force (0: since start).
-- A session is live up to and including its deadline: idle at most its own TTL or the
-- service's, whichever is shorter, and no longer than `lifetime` after it was opened. With
-- whole seconds on both sides, no rule ever ends a session early.
--
-- Lapsed is final: a session whose stored expiry (its deadline under the rules in force when
-- it was last written, kept so by expiry.lua's sweep) passed before the present rules took
-- force lapsed under earlier ones, and no later change of settings brings it back.
local F = require('sessions.fields')
local clock = require('sessions.clock')

local TTL, LIFETIME, CAP, SINCE = 'ttl', 'lifetime', 'cap', 'since'
-- What the service sends (describe() tells it, and it checks at connect time).
local FIELDS = {TTL, LIFETIME, CAP}

local function deadline_of(create, activity, own_ttl, rules)
    local idle = rules[TTL]
    if own_ttl ~= nil and own_ttl < idle then
        idle = own_ttl
    end
    local last = activity + idle
    local lifetime = rules[LIFETIME]
    if lifetime > 0 and create + lifetime < last then
        last = create + lifetime
    end
    return last
end

local function deadline(tuple, rules)
    return deadline_of(tuple[F.CREATE], tuple[F.ACTIVITY], tuple[F.TTL], rules)
end

local function is_live(tuple, rules)
    return clock.now() <= deadline(tuple, rules) and tuple[F.EXPIRES] >= (rules[SINCE] or 0)
end

-- Why a session that is not live ended, for the event feed: `lifetime` when its lifetime is
-- the deadline that passed (it came before the idle one), else `idle` (an idle TTL, its own
-- or the service's, or rules under which it had lapsed before they changed).
local function lapse_reason(tuple, rules)
    local lifetime = rules[LIFETIME]
    if lifetime > 0 then
        local last = tuple[F.CREATE] + lifetime
        if last < clock.now() and last <= deadline_of(tuple[F.CREATE], tuple[F.ACTIVITY], tuple[F.TTL], {
                [TTL] = rules[TTL], [LIFETIME] = 0}) then
            return 'lifetime'
        end
    end
    return 'idle'
end

-- Whether `rules` has the shape above (the procedures check their arguments).
local function valid(rules)
    return type(rules) == 'table'
        and type(rules[TTL]) == 'number' and rules[TTL] > 0
        and type(rules[LIFETIME]) == 'number' and rules[LIFETIME] >= 0
        and type(rules[CAP]) == 'number' and rules[CAP] >= 0
end

return {
    TTL = TTL,
    LIFETIME = LIFETIME,
    CAP = CAP,
    SINCE = SINCE,
    FIELDS = FIELDS,
    deadline_of = deadline_of,
    deadline = deadline,
    is_live = is_live,
    lapse_reason = lapse_reason,
    valid = valid,
}
