-- The sharded mode's placement, as the Lua computes it (the service's sessions/buckets.py
-- computes the same, and the contract compares the constants: describe's `buckets`): a
-- user's bucket, and the bucket a token carries in 12 of its bits, so that a router sends
-- `get`, `delete` and `rotate` to the one replica set that holds the session.
local bit = require('bit')
local digest = require('digest')
local uuid = require('uuid')

-- vshard's bucket count and the bits of a token's 128 that hold the bucket id minus one,
-- counted in the UUID's integer from the least significant (0): why these, in the
-- service's contract.py (Buckets).
local COUNT = 4096
local SHIFT = 64
local BITS = 12

-- The decimal digits of a user id: a Lua number, or a 64-bit integer (cdata) as msgpack
-- decodes the largest ones, whose tostring ends in ULL or LL.
local function digits(user_id)
    if type(user_id) == 'number' then
        return ('%.0f'):format(user_id)
    end
    return (tostring(user_id):match('^%-?%d+'))
end

-- The bucket of a user's sessions, 1 to COUNT: the first four bytes of the SHA-256 of the
-- id's decimal digits, big-endian, modulo COUNT, plus one.
local function of_user(user_id)
    local b1, b2, b3, b4 = digest.sha256(digits(user_id)):byte(1, 4)
    return ((b1 * 2 ^ 24) + b2 * 2 ^ 16 + b3 * 2 ^ 8 + b4) % COUNT + 1
end

-- The 16 bytes of a token: given as those bytes, as a uuid, or as its text (nil when the
-- text is not one).
local function raw_of(token)
    if type(token) == 'string' and #token == 16 then
        return token
    end
    if type(token) == 'string' then
        token = uuid.fromstr(token)
    elseif type(token) ~= 'cdata' then
        return nil
    end
    -- 2.6's uuid module has no is_uuid: another cdata has no `bin`.
    local ok, raw = pcall(function() return token:bin('b') end)
    return ok and raw or nil
end

-- The bucket a token names; nil for what is not a token.
local function of_token(token)
    local raw = raw_of(token)
    if raw == nil then
        return nil
    end
    local value = 0
    for i = BITS - 1, 0, -1 do
        local position = SHIFT + i
        local byte = raw:byte(16 - math.floor(position / 8))
        value = value * 2 + bit.band(bit.rshift(byte, position % 8), 1)
    end
    return value + 1
end

return {
    COUNT = COUNT,
    SHIFT = SHIFT,
    BITS = BITS,
    of_token = of_token,
    of_user = of_user,
    digits = digits,
    -- As describe() reports them, for the service to compare with its own.
    described = function()
        return {count = COUNT, shift = SHIFT, bits = BITS}
    end,
}
