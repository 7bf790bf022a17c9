-- list: a page of the live sessions under one key of a kind (kinds.lua), newest opened first.
local F = require('sessions.fields')
local bulk = require('sessions.bulk')
local errors = require('sessions.errors')
local kinds = require('sessions.kinds')
local liveness = require('sessions.liveness')
local rows = require('sessions.rows')

local check = errors.check

-- At most `limit` sessions and at most `page_bytes` bytes of tuples (but at least one
-- session, whatever it holds), starting after the session whose seq is `after` when given.
-- A session's seq never changes (rotate keeps it), so a walk page by page meets every
-- session that stays under the key and live exactly once, whatever happens to the others
-- meanwhile; sessions opened during the walk come before its start and are not met. Replies
-- {sessions, more, last: the seq of the last one}. The walk keeps bulk work's pace.
local function list(args, ctx)
    local spec = kinds.of(args.kind, args.key)
    local key, limit, page_bytes, after = args.key, args.limit, args.page_bytes, args.after
    check(type(limit) == 'number' and limit >= 1, 'limit must be a positive number')
    check(type(page_bytes) == 'number' and page_bytes >= 1, 'page_bytes must be positive')
    check(after == nil or errors.is_integer(after), 'after must be a seq')
    local rules = ctx.rules
    local position, iterator = {key}, 'REQ'
    if after ~= nil then
        position, iterator = {key, after}, 'LT'
    end
    local result = {}
    local count, bytes, seen, last = 0, 0, 0, box.NULL
    local more = false
    for _, tuple in box.space.sessions.index[spec.index]:pairs(position, {iterator = iterator}) do
        if tuple[spec.field] ~= key then
            break
        end
        seen = seen + 1
        bulk.pace(seen, ctx.deadline)
        if liveness.is_live(tuple, rules) then
            local size = tuple:bsize()
            if count >= limit or (count > 0 and bytes + size > page_bytes) then
                more = true
                break
            end
            count = count + 1
            bytes = bytes + size
            result[count] = rows.answer(tuple)
            last = tuple[F.SEQ]
        end
    end
    return {sessions = result, more = more, last = last}
end

return {
    fn = list,
    bulk = true,
    args = {'kind', 'key', 'limit', 'page_bytes', 'after'},
    reply = {'sessions', 'more', 'last'},
}
