-- Tokens kept only as hashes (the service's SESSIONS_TOKEN_STORAGE=hash): which kind of key a
-- store keeps, and the one-way conversion of a store of plain tokens (`sessions
-- convert-tokens`, through the admin console; the service user cannot call it).
--
-- A hashed store keys each session by the first 16 bytes of the SHA-256 of its token's 16
-- bytes, the RFC variant bits set so that the key stays a valid value of the `uuid` key
-- field: 126 bits of the hash. Tokens are 122 random bits, so no salt or slow KDF adds
-- anything: finding a token from its key means trying 2^122 of them. The service hashes the
-- same way (sessions/storage), so the token itself never reaches Tarantool.
local digest = require('digest')
local errors = require('sessions.errors')
local fiber = require('fiber')
local log = require('log')
local uuid = require('uuid')

local F = require('sessions.fields')
local connected = require('sessions.connected')
local schema = require('sessions.schema')

-- The row of the `sessions_state` space that says a store keeps hashes; while a conversion
-- runs, `converting` holds the id of the last session it converted.
local MARK = 'token_storage'
local PROGRESS = 'token_storage_converting'
local HASH = 'hash'
local BATCH = 1000

-- The key a token (a uuid value) is kept under in a hashed store.
local function key_of(token)
    local hashed = digest.sha256(token:bin('b'))
    return uuid.frombin(hashed:sub(1, 8) .. string.char(128 + hashed:byte(9) % 64) .. hashed:sub(10, 16), 'b')
end

-- What the store keeps: 'hash', 'plain' (sessions under their tokens), 'empty' (no session
-- and no mark: either may start on it) or 'converting' (a conversion was cut short: run it
-- again).
local function stored()
    local state = box.space[schema.STATE]
    local mark = state:get(MARK)
    if mark ~= nil then
        return mark[2]
    end
    if state:get(PROGRESS) ~= nil then
        return 'converting'
    end
    if box.space[schema.SPACE]:len() == 0 then
        return 'empty'
    end
    return 'plain'
end

-- A service that keeps hashes marks an empty store as its own, so that a service keeping
-- plain tokens never starts on it.
local function claim()
    if stored() == 'empty' and not box.info.ro then
        box.space[schema.STATE]:replace{MARK, HASH}
    end
    return stored()
end

-- Whether a call of a service keeping tokens `mode` ('plain' or 'hash', its call context's
-- `token_storage`) may use the store; else a TokenStorageMismatch naming the setting it needs.
-- Checked on every call, not only when the service connects: a conversion run while a plain
-- service still serves the store, or a hashing service claiming an empty store a plain one
-- uses, must stop that service's calls, which would otherwise take keys for tokens and write
-- plain tokens into a hashed store. Read from the space on each call (lookups of its primary
-- key), not from a cache: a replica learns the mark through replication.
local function check_mode(mode)
    local state = box.space[schema.STATE]
    if state:get(PROGRESS) ~= nil then
        errors.raise('TokenStorageMismatch', 'The tokens of the store are being converted to hashes (or a '
            .. 'conversion was cut short: run sessions convert-tokens again); then restart the service '
            .. 'with SESSIONS_TOKEN_STORAGE=hash.')
    end
    local marked = state:get(MARK) ~= nil
    if mode == HASH and not marked then
        -- An empty store is marked now if it can be (a read-only one is either's until then).
        local kept = claim()
        if kept ~= HASH and kept ~= 'empty' then
            errors.raise('TokenStorageMismatch', 'The store keeps plain tokens: restart the service with '
                .. 'SESSIONS_TOKEN_STORAGE=plain (or stop it and run sessions convert-tokens).')
        end
    elseif mode ~= HASH and marked then
        errors.raise('TokenStorageMismatch', 'The store keeps only hashes of tokens: restart the service '
            .. 'with SESSIONS_TOKEN_STORAGE=hash.')
    end
end

-- Re-key every session of a plain store, in transactions of BATCH, walking the id index
-- (ids do not change, so the walk goes on where it was, also after a cut: the last id done
-- is kept with each batch). Then the idempotency keys' sessions, and the mark. Returns how
-- many sessions it converted.
local function convert()
    -- A service still connected would have every call refused from the first batch on (see
    -- check_mode): stopped first, it is restarted in hash mode on a converted store. Refused
    -- on a converted store too: the command's checkpoint steps are not for a store in use.
    local services = connected.count()
    if services > 0 then
        error(('the service is connected to this Tarantool (%d connections as %s): stop it, then run '
            .. 'sessions convert-tokens again'):format(services, connected.user()), 0)
    end
    local kept = stored()
    if kept == HASH then
        return 0
    end
    local state, space = box.space[schema.STATE], box.space[schema.SPACE]
    local progress = state:get(PROGRESS)
    local after = progress and uuid.fromstr(progress[2]) or nil
    local converted = 0
    while true do
        local batch = {}
        local position, iterator = {}, 'GE'
        if after ~= nil then
            position, iterator = {after}, 'GT'
        end
        for _, tuple in space.index.id:pairs(position, {iterator = iterator}) do
            batch[#batch + 1] = tuple
            if #batch >= BATCH then
                break
            end
        end
        if #batch == 0 then
            break
        end
        box.begin()
        for _, tuple in ipairs(batch) do
            space:delete(tuple[F.TOKEN])
            space:insert(tuple:update({{'=', F.TOKEN, key_of(tuple[F.TOKEN])}}))
        end
        after = batch[#batch][F.ID]
        state:replace{PROGRESS, after:str()}
        box.commit()
        converted = converted + #batch
        fiber.yield()
    end
    -- The idempotency keys' sessions, in the transaction that sets the mark: converted once,
    -- however many times the sessions' walk was cut and resumed.
    local K = F.KEYS
    local keys = {}
    for _, entry in box.space[schema.IDEMPOTENCY]:pairs() do
        keys[#keys + 1] = entry[K.KEY]
    end
    box.begin()
    for _, key in ipairs(keys) do
        local entry = box.space[schema.IDEMPOTENCY]:get(key)
        box.space[schema.IDEMPOTENCY]:update(key, {{'=', K.TOKEN, key_of(entry[K.TOKEN])}})
    end
    state:delete(PROGRESS)
    state:replace{MARK, HASH}
    box.commit()
    log.info('sessions: %d sessions now kept under hashes of their tokens', converted)
    return converted
end

return {
    HASH = HASH,
    check_mode = check_mode,
    claim = claim,
    convert = convert,
    key_of = key_of,
    stored = stored,
}
