-- Stored procedures behind the HTTP API, one per operation. Each runs without yielding
-- between its read and its write, so it is atomic inside the instance.
local fiber = require('fiber')
local fio = require('fio')
local msgpack = require('msgpack')
local uuid = require('uuid')

local F = require('sessions.fields')
local expiry = require('sessions.expiry')
local schema = require('sessions.schema')

local MAP = {__serialize = 'map'}
local LIST_YIELD_EVERY = 1000

local function raise(error_type, reason)
    box.error({type = error_type, reason = reason})
end

local function now()
    return math.floor(fiber.time())
end

local function check(condition, reason)
    if not condition then
        raise('InvalidArgument', reason)
    end
end

local function is_integer(value)
    local kind = type(value)
    return kind == 'number' or kind == 'cdata'
end

local function check_ttl(ttl)
    check(type(ttl) == 'number' and ttl > 0, 'ttl must be a positive number')
    expiry.set_ttl(ttl)
end

-- Results carry the token as text: Tarantool formats it in C for free, where the
-- service would pay for decoding and formatting a UUID object per session.
local function with_text_token(tuple)
    return tuple:transform(F.TOKEN, 1, tuple[F.TOKEN]:str())
end

-- A session is live while now - activity <= ttl: with whole seconds on both sides this
-- never ends a session before ttl real seconds have passed since its last activity.
local function is_live(tuple, ttl)
    return now() - tuple[F.ACTIVITY] <= ttl
end

-- JSON Merge Patch (RFC 7396) at the top level: null removes a key, anything else
-- replaces it; nested values are taken whole.
local function merge_extra(current, patch, extra_max)
    check(type(patch) == 'table', 'extra must be a map')
    check(type(extra_max) == 'number', 'extra_max must be a number')
    local merged = setmetatable({}, MAP)
    if current ~= nil then
        for key, value in pairs(current) do
            merged[key] = value
        end
    end
    for key, value in pairs(patch) do
        if value == nil then -- also true for box.NULL
            merged[key] = nil
        else
            merged[key] = value
        end
    end
    if #msgpack.encode(merged) > extra_max then
        raise('PayloadTooLarge', ('extra data would exceed %d bytes'):format(extra_max))
    end
    return merged
end

-- `token` is 16 random bytes from the service with the UUID version 4 bits set.
local function new(token, user_id, ip, patch, extra_max)
    check(type(token) == 'string' and #token == 16, 'token must be 16 bytes')
    check(is_integer(user_id), 'user_id must be an integer')
    check(type(ip) == 'string', 'ip must be a string')
    local extra = box.NULL
    if patch ~= nil then
        extra = merge_extra(nil, patch, extra_max)
    end
    local ts = now()
    return with_text_token(box.space.sessions:insert{uuid.frombin(token, 'b'), user_id, ip, ts, ts, extra})
end

-- Tokens arrive as text the service has checked for the 8-4-4-4-12 form, since
-- uuid.fromstr on its own lets some malformed strings through.
local function get(token, ip, patch, ttl, extra_max)
    check(type(token) == 'string', 'token must be a string')
    check(ip == nil or type(ip) == 'string', 'ip must be a string')
    check_ttl(ttl)
    local key = uuid.fromstr(token)
    if key == nil then
        return nil
    end
    local space = box.space.sessions
    local tuple = space:get(key)
    if tuple == nil or not is_live(tuple, ttl) then
        return nil
    end
    local ops = {}
    local ts = now()
    -- Rewriting the same second would cost a WAL write for nothing.
    if tuple[F.ACTIVITY] ~= ts then
        ops[#ops + 1] = {'=', F.ACTIVITY, ts}
    end
    if ip ~= nil and ip ~= tuple[F.IP] then
        ops[#ops + 1] = {'=', F.IP, ip}
    end
    if patch ~= nil then
        ops[#ops + 1] = {'=', F.EXTRA, merge_extra(tuple[F.EXTRA], patch, extra_max)}
    end
    if #ops == 0 then
        return with_text_token(tuple)
    end
    return with_text_token(space:update(key, ops))
end

local function delete(token, ttl)
    check(type(token) == 'string', 'token must be a string')
    check_ttl(ttl)
    local key = uuid.fromstr(token)
    if key == nil then
        return nil
    end
    local tuple = box.space.sessions:delete(key)
    if tuple == nil or not is_live(tuple, ttl) then
        return nil
    end
    return with_text_token(tuple)
end

-- Live sessions under one key of a (key, activity) index, newest activity first; the
-- walk stops at the first expired tuple since everything after it is older.
local function live_by(index_name, key, ttl)
    check_ttl(ttl)
    local cutoff = now() - ttl
    local result = {}
    local count = 0
    for _, tuple in box.space.sessions.index[index_name]:pairs({key}, {iterator = 'REQ'}) do
        if tuple[F.ACTIVITY] < cutoff then
            break
        end
        count = count + 1
        result[count] = with_text_token(tuple)
        if count % LIST_YIELD_EVERY == 0 then
            fiber.yield()
        end
    end
    return result
end

local function by_user(user_id, ttl)
    check(is_integer(user_id), 'user_id must be an integer')
    return live_by('user', user_id, ttl)
end

local function by_ip(ip, ttl)
    check(type(ip) == 'string', 'ip must be a string')
    return live_by('ip', ip, ttl)
end

-- Several operations of one kind in one call: the service coalesces concurrent requests
-- so that one round trip serves them all. Writes run in one transaction (one WAL write);
-- listings run outside one, since a long listing yields. Each item answers on its own:
-- {result}, {} for nothing, or {nil, type, code, message} for an error, which undoes
-- only that item's statement.
local batchable = {
    new = {fn = new, transaction = true},
    get = {fn = get, transaction = true},
    delete = {fn = delete, transaction = true},
    by_user = {fn = by_user, transaction = false},
    by_ip = {fn = by_ip, transaction = false},
}

local function error_item(err)
    if type(err) == 'cdata' then
        return {box.NULL, err.type, err.code, err.message}
    end
    return {box.NULL, 'LuaError', 0, tostring(err)}
end

local function batch(operation, calls)
    local spec = batchable[operation]
    check(spec ~= nil, 'unknown batch operation')
    check(type(calls) == 'table', 'calls must be an array')
    local results = {}
    -- Nothing in a write yields before commit, so the batch is atomic and isolated.
    if spec.transaction then
        box.begin()
    end
    for i, args in ipairs(calls) do
        local ok, result = pcall(spec.fn, unpack(args, 1, 5))
        if not ok then
            results[i] = error_item(result)
        elseif result == nil then
            results[i] = {}
        else
            results[i] = {result}
        end
    end
    if spec.transaction then
        box.commit()
    end
    return results
end

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

-- What a readiness probe and `sessions stats` need, without a full scan.
local function info()
    local space = box.space.sessions
    local oldest = space.index.activity:min()
    local expiry_stats = expiry.stats()
    return {
        ro = box.info.ro,
        schema_version = schema.version(),
        sessions = space:len(),
        oldest_activity = oldest and oldest[F.ACTIVITY] or box.NULL,
        purged = expiry_stats.purged,
        memory_used = box.slab.info().arena_used,
        tarantool_version = box.info.version,
        last_checkpoint = last_checkpoint() or box.NULL,
    }
end

return {
    new = new,
    get = get,
    delete = delete,
    by_user = by_user,
    by_ip = by_ip,
    batch = batch,
    info = info,
}
