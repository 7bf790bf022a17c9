-- count: how many live sessions there are under one key of a kind (kinds.lua): a user's, or
-- an address's.
local bulk = require('sessions.bulk')
local kinds = require('sessions.kinds')
local liveness = require('sessions.liveness')

-- The walk keeps bulk work's pace. Replies {count}.
local function count(args, ctx)
    local spec = kinds.of(args.kind, args.key)
    local live, seen = 0, 0
    for _, tuple in box.space.sessions.index[spec.index]:pairs({args.key}, {iterator = 'EQ'}) do
        seen = seen + 1
        bulk.pace(seen, ctx.deadline)
        if liveness.is_live(tuple, ctx.rules) then
            live = live + 1
        end
    end
    return {count = live}
end

return {
    fn = count,
    bulk = true,
    args = {'kind', 'key'},
    reply = {'count'},
}
