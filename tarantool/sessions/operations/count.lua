-- count: how many live sessions a user has.
local bulk = require('sessions.bulk')
local errors = require('sessions.errors')
local liveness = require('sessions.liveness')

-- The walk keeps bulk work's pace. Replies {count}.
local function count(args, ctx)
    local user_id = args.user_id
    errors.check(errors.is_integer(user_id), 'user_id must be an integer')
    local live, seen = 0, 0
    for _, tuple in box.space.sessions.index.user_seq:pairs({user_id}, {iterator = 'EQ'}) do
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
    args = {'user_id'},
    reply = {'count'},
}
