-- The one clock of the procedures and the purge, in whole Unix seconds. Tests freeze it
-- through the admin console (`require('sessions.clock').freeze(ts)`) to pin exact
-- boundaries such as "idle exactly ttl seconds"; nothing on the service's path sets it.
local fiber = require('fiber')

local frozen = nil

local function now()
    return frozen or math.floor(fiber.time())
end

-- Fractional seconds, for the purge fiber's sleeps.
local function time()
    return frozen or fiber.time()
end

local function freeze(ts)
    frozen = ts
end

return {
    now = now,
    time = time,
    freeze = freeze,
}
