-- wrk script for the sessions benchmark. BENCH_MODE picks the load:
--   get, get_ip, new, del (each token of BENCH_DEL_TOKENS once), user, ip, mixed (90% get,
--   5% new, 5% del),
--   rotate (each token of BENCH_ROTATE_TOKENS once), user_del (users BENCH_DEL_USER on, one
--   each request, with 10 sessions each)
-- BENCH_TOKENS is a file of live tokens for get; BENCH_DEL_TOKENS one of tokens to delete,
-- used from line BENCH_DEL_OFFSET + 1 on (so that rounds of a longer run use fresh ones).
-- BENCH_API_KEY, if set, goes in every request's Authorization header.
-- At the end it prints one JSON line with the figures the harness reads.
local mode = os.getenv('BENCH_MODE') or 'get'
local tokens, doomed, rotating = {}, {}, {}
local next_rotating, next_user = 0, tonumber(os.getenv('BENCH_DEL_USER') or '0')
local next_doomed = tonumber(os.getenv('BENCH_DEL_OFFSET') or '0')

local function load(path, into)
    if path == nil or path == '' then
        return
    end
    for line in io.lines(path) do
        into[#into + 1] = line
    end
end

function init(args)
    -- With BENCH_API_KEY, every request carries it (wrk.format's default headers).
    local key = os.getenv('BENCH_API_KEY')
    if key ~= nil and key ~= '' then
        wrk.headers['Authorization'] = 'Bearer ' .. key
    end
    load(os.getenv('BENCH_TOKENS'), tokens)
    load(os.getenv('BENCH_DEL_TOKENS'), doomed)
    load(os.getenv('BENCH_ROTATE_TOKENS'), rotating)
    if #tokens == 0 then
        -- The baseline answers any token alike; it just needs a URL of the same shape.
        tokens[1] = '61494096-9af7-49ba-9fb4-e89c0811e6d3'
    end
    math.randomseed(os.time())
end

local function get()
    return wrk.format('GET', '/get?token=' .. tokens[math.random(#tokens)])
end

local function new()
    return wrk.format('GET', '/new?user_id=' .. math.random(1, 1000000000) .. '&ip=192.0.2.1')
end

local function del()
    next_doomed = next_doomed + 1
    -- Once the list runs out the token is unknown, so the exhaustion shows up as 404s.
    return wrk.format('GET', '/del?token=' .. (doomed[next_doomed] or '00000000-0000-4000-8000-000000000000'))
end

local loads = {
    get = get,
    new = new,
    del = del,
    get_ip = function()
        local ip = ('10.%d.%d.%d'):format(math.random(0, 255), math.random(0, 255), math.random(1, 254))
        return wrk.format('GET', '/get?token=' .. tokens[math.random(#tokens)] .. '&ip=' .. ip)
    end,
    user = function()
        return wrk.format('GET', '/user?id=' .. os.getenv('BENCH_USER'))
    end,
    ip = function()
        return wrk.format('GET', '/ip?ip=' .. os.getenv('BENCH_IP'))
    end,
    rotate = function()
        next_rotating = next_rotating + 1
        return wrk.format('GET', '/rotate?token=' .. (rotating[next_rotating] or '00000000-0000-4000-8000-000000000000'))
    end,
    user_del = function()
        next_user = next_user + 1
        return wrk.format('GET', '/user/del?id=' .. next_user)
    end,
    mixed = function()
        local roll = math.random(100)
        if roll <= 90 then
            return get()
        elseif roll <= 95 then
            return new()
        end
        return del()
    end,
}

request = loads[mode]

function done(summary, latency, requests)
    local errors = summary.errors
    io.write(('BENCH {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
        .. '"errors": %d, "non_2xx": %d}\n'):format(
        summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
        errors.connect + errors.read + errors.write + errors.timeout, errors.status))
end
