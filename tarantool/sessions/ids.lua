-- Session ids: UUIDv7 (RFC 9562), made here since Tarantool 2.6's uuid module has no v7.
-- An id is 48 bits of Unix milliseconds, then 74 random bits (version and variant bits set):
-- ids sort by when their sessions were opened, and any instance makes them without asking
-- another, so a replica promoted after a failover never hands out an id the old primary did.
local digest = require('digest')
local fiber = require('fiber')
local uuid = require('uuid')

local VERSION = 7

-- The 16 bytes of an id made at `ms` (Unix milliseconds) with `random` (10 bytes).
local function bytes_of(ms, random)
    local head = {}
    for i = 6, 1, -1 do
        head[i] = ms % 256
        ms = math.floor(ms / 256)
    end
    local r = {random:byte(1, 10)}
    -- Version in the high nibble of byte 7, RFC variant (10) in the top bits of byte 9.
    r[1] = VERSION * 16 + r[1] % 16
    r[3] = 128 + r[3] % 64
    return string.char(head[1], head[2], head[3], head[4], head[5], head[6], unpack(r))
end

-- An id for a session opened at `ms` Unix milliseconds (now when nil), as a uuid value.
local function make(ms)
    if ms == nil then
        ms = math.floor(fiber.time() * 1000)
    end
    return uuid.frombin(bytes_of(ms, digest.urandom(10)), 'b')
end

-- The milliseconds an id was made at.
local function ms_of(id)
    local raw = id:bin('b')
    local ms = 0
    for i = 1, 6 do
        ms = ms * 256 + raw:byte(i)
    end
    return ms
end

-- An id as the service sends it: text it has checked for the 8-4-4-4-12 form; nil when it
-- is not one.
local function parse(text)
    if type(text) ~= 'string' then
        return nil
    end
    return uuid.fromstr(text)
end

return {
    VERSION = VERSION,
    make = make,
    ms_of = ms_of,
    parse = parse,
}
