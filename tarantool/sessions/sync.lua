-- Synchronous replication's fallback: with too few replicas following to confirm a write,
-- writes are refused at once (rather than after SESSIONS_SYNC_TIMEOUT) and change nothing,
-- while `get`s serve their sessions as stored, untouched (as with memory full).
local uuid = require('uuid')

local errors = require('sessions.errors')
local liveness = require('sessions.liveness')
local rows = require('sessions.rows')

local UNCONFIRMED = 'too few replicas answer to confirm this write (synchronous replication); '
    .. 'nothing was changed, try again later'

-- How many peers' replication `side` ('upstream': this instance following them,
-- 'downstream': them following this one) has `status`.
local function count_peers(side, status)
    local found = 0
    for _, peer_info in pairs(box.info.replication) do
        if peer_info[side] ~= nil and peer_info[side].status == status then
            found = found + 1
        end
    end
    return found
end

-- Whether a write can be confirmed now: always without synchronous replication; with it,
-- while enough replicas follow this instance to make the quorum.
local function confirmable()
    if not box.space.sessions.is_sync then
        return true
    end
    local quorum = box.cfg.replication_synchro_quorum
    if type(quorum) ~= 'number' then
        return true
    end
    -- This instance, and each replica following it.
    return 1 + count_peers('downstream', 'follow') >= quorum
end

-- Refuses a write that cannot be confirmed now.
local function check_confirmable()
    if not confirmable() then
        errors.raise('ReplicasUnavailable', UNCONFIRMED)
    end
end

-- The reply of each of `count` items of a batch of writes that cannot be confirmed.
local function refused(count)
    local replies = {}
    for i = 1, count do
        replies[i] = errors.item(box.error.new({type = 'ReplicasUnavailable', reason = UNCONFIRMED}))
    end
    return replies
end

-- Whether a commit failed because the replicas synchronous replication waits for did not
-- confirm it in time (SESSIONS_SYNC_REPLICAS): nothing of it was written.
local function is_sync_failure(err)
    return type(err) == 'cdata'
        and (err.code == box.error.SYNC_QUORUM_TIMEOUT or err.code == box.error.SYNC_ROLLBACK)
end

-- With its replicas out of reach, a signed-in user stays signed in: the `get`s of a batch
-- whose touches could not be confirmed serve their sessions as stored, untouched; one that
-- sent extra data asked for a write, and fails with `err`.
local function served_as_stored(items, replies, rules, err)
    local space = box.space.sessions
    for i, args in ipairs(items) do
        if replies[i].session ~= nil then
            local key = uuid.fromstr(args.token)
            local tuple = key and space:get(key)
            if args.patch ~= nil then
                replies[i] = errors.item(err)
            elseif tuple ~= nil and liveness.is_live(tuple, rules) then
                replies[i] = {session = rows.answer(tuple), untouched = true}
            else
                replies[i] = rows.NONE
            end
        end
    end
    return replies
end

return {
    count_peers = count_peers,
    confirmable = confirmable,
    check_confirmable = check_confirmable,
    refused = refused,
    is_sync_failure = is_sync_failure,
    served_as_stored = served_as_stored,
}
