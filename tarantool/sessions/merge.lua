-- Extra data merged into a session: JSON Merge Patch (RFC 7396) at the top level. A key
-- set to null (box.NULL) is removed, anything else replaces it; nested values are taken
-- whole. The result may take at most `extra_max` bytes of msgpack.
local msgpack = require('msgpack')

local MAP = {__serialize = 'map'}

-- The merged map, or nil, the error type and the reason it cannot be.
local function merge(current, patch, extra_max)
    if type(patch) ~= 'table' then
        return nil, 'InvalidArgument', 'extra must be a map'
    end
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
        return nil, 'PayloadTooLarge', ('extra data would exceed %d bytes'):format(extra_max)
    end
    return merged
end

return {merge = merge}
