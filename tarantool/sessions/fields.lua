-- The tuple layout of the `sessions` space: the one place Lua names its fields. The
-- schema's format, the index parts and every procedure are built from this table. Fields
-- are only ever appended (a migration adds them), so a field's number never changes.
local FORMAT = {
    {name = 'token', type = 'uuid'},                       -- the session token, primary key
    {name = 'user_id', type = 'unsigned'},                 -- owner of the session
    {name = 'ip', type = 'string'},                        -- canonical text of the last IP seen
    {name = 'create', type = 'unsigned'},                  -- Unix seconds when opened
    {name = 'activity', type = 'unsigned'},                -- Unix seconds of the last `get`
    {name = 'extra', type = 'map', is_nullable = true},    -- merged in by `new` and `get`
    -- Since schema v3:
    {name = 'expires', type = 'unsigned'},                 -- last live second under the rules
                                                           -- at the last write; drives the purge
    {name = 'ttl', type = 'unsigned', is_nullable = true}, -- the session's own idle TTL, if any
    -- Since schema v5:
    {name = 'seq', type = 'unsigned'},                     -- when it was opened, as a number
                                                           -- that never changes and is never
                                                           -- reused: listings page by it
    -- Since schema v7:
    {name = 'id', type = 'uuid'},                          -- the session's id (UUIDv7, ids.lua):
                                                           -- not secret, unique, kept for
                                                           -- the session's life
    -- In a storage of the sharded mode only (sharded.lua), and so the last:
    {name = 'bucket_id', type = 'unsigned'},               -- vshard's bucket: its user's
                                                           -- (buckets.lua)
}

-- The `idempotency` space (schema v4): `new`'s Idempotency-Keys.
local KEYS_FORMAT = {
    {name = 'key', type = 'string'},          -- the client's Idempotency-Key
    {name = 'fingerprint', type = 'string'},  -- digest of the parameters it came with
    {name = 'token', type = 'uuid'},          -- the session it opened
    {name = 'expires', type = 'unsigned'},    -- last second the key is remembered
}
-- In a storage of the sharded mode only, after those (sharded.lua adds it to the format:
-- schema v4 created the space with KEYS_FORMAT as it is): its session's bucket.
local KEYS_BUCKET = {name = 'bucket_id', type = 'unsigned'}

-- The `events` space (schema v7): the feed of changes to sessions (events.lua). Never a token.
local EVENTS_FORMAT = {
    {name = 'seq', type = 'unsigned'},                      -- its place in the feed (events.lua)
    {name = 'time', type = 'unsigned'},                     -- Unix seconds of the change
    {name = 'kind', type = 'string'},                       -- opened, rotated, moved, ended
    {name = 'reason', type = 'string', is_nullable = true}, -- why it ended (ended only)
    {name = 'session', type = 'any', is_nullable = true},   -- the session's id, when it has one
    {name = 'user_id', type = 'unsigned'},                  -- its user
    {name = 'ip', type = 'string'},                         -- its address after the change
}

local fields = {
    FORMAT = FORMAT, KEYS_FORMAT = KEYS_FORMAT, KEYS = {}, EVENTS_FORMAT = EVENTS_FORMAT, EVENTS = {},
}
for number, field in ipairs(KEYS_FORMAT) do
    fields.KEYS[field.name:upper()] = number
end
fields.KEYS_BUCKET = KEYS_BUCKET
fields.KEYS.BUCKET_ID = #KEYS_FORMAT + 1
for number, field in ipairs(EVENTS_FORMAT) do
    fields.EVENTS[field.name:upper()] = number
end
for number, field in ipairs(FORMAT) do
    fields[field.name:upper()] = number
end
return fields
