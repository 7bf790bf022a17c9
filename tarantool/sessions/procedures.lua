-- The procedures the service calls, and so all that its Tarantool user may execute
-- (access.lua grants exactly this module's functions; `peer` is for the other instances'
-- `replicator` too): `batch` and `call` (dispatch.lua, over the operations of
-- operations.lua), `info` and `peer` (monitor.lua), and `describe`, the wire contract.
--
-- The service compares describe()'s answer with its own declaration (sessions/contract.py)
-- when it connects, and refuses an instance that differs on any of it.
local F = require('sessions.fields')
local buckets = require('sessions.buckets')
local dispatch = require('sessions.dispatch')
local errors = require('sessions.errors')
local kinds = require('sessions.kinds')
local liveness = require('sessions.liveness')
local monitor = require('sessions.monitor')
local operations = require('sessions.operations')

local procedures = {
    batch = dispatch.batch,
    call = dispatch.call,
    info = monitor.info,
    peer = monitor.peer,
}

-- The contract this Lua speaks, built from the declarations it names.
function procedures.describe()
    local described = {}
    for name, spec in pairs(operations) do
        described[name] = {
            args = spec.args, reply = spec.reply, batch = spec.batch == true, bulk = spec.bulk == true,
        }
    end
    local names, fields = {}, {}
    for name in pairs(procedures) do
        names[#names + 1] = name
    end
    table.sort(names)
    for _, field in ipairs(F.FORMAT) do
        fields[#fields + 1] = field.name
    end
    local event_fields = {}
    for _, field in ipairs(F.EVENTS_FORMAT) do
        event_fields[#event_fields + 1] = field.name
    end
    return {
        procedures = names,
        operations = described,
        context = dispatch.CONTEXT,
        rules = liveness.FIELDS,
        errors = errors.TYPES,
        error_item = errors.ITEM,
        fields = fields,
        kinds = kinds.NAMES,
        info = monitor.FIELDS,
        idem = operations.new.IDEM,
        events = event_fields,
        buckets = buckets.described(),
    }
end

return procedures
