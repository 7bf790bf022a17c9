-- The operations, one module each in operations/ (their name is the file's), each declaring
-- its function `fn(args, ctx)`, the names of its arguments (`args`) and of its reply's
-- fields (`reply`), and how it runs: `batch` (calls made at once are coalesced into one
-- `sessions.batch` call, one transaction, each answering on its own) or `bulk` (it walks
-- many sessions: one of bulk.lua's slots, the service's bulk connection), and `writes` (a
-- bulk one that ends sessions). dispatch.lua calls them by these declarations and
-- describe() reports them, so adding an operation is its file and its name below.
local NAMES = {'new', 'get', 'delete', 'rotate', 'list', 'delete_all', 'count', 'peek', 'delete_id', 'events',
               'events_wait', 'webhook_lease', 'token_storage'}

local function is_names(value)
    if type(value) ~= 'table' then
        return false
    end
    for _, name in ipairs(value) do
        if type(name) ~= 'string' then
            return false
        end
    end
    return #value == table.maxn(value)
end

local operations = {}
for _, name in ipairs(NAMES) do
    local spec = require('sessions.operations.' .. name)
    -- A declaration that cannot be right stops the start, naming the file.
    assert(type(spec.fn) == 'function', name .. ': fn must be a function')
    assert(is_names(spec.args) and is_names(spec.reply), name .. ': args and reply must be lists of names')
    assert(not (spec.batch and spec.bulk), name .. ': batch or bulk, not both')
    spec.name = name
    spec.accepts = {}
    for _, arg in ipairs(spec.args) do
        spec.accepts[arg] = true
    end
    operations[name] = spec
end

return operations
