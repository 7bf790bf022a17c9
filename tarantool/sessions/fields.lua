-- Field numbers of a tuple in the `sessions` space, shared by every module.
return {
    TOKEN = 1,     -- uuid: the session token, primary key
    USER_ID = 2,   -- unsigned: owner of the session
    IP = 3,        -- string: canonical text form of the last IP address seen
    CREATE = 4,    -- unsigned: Unix seconds when the session was opened
    ACTIVITY = 5,  -- unsigned: Unix seconds of the last `get`; drives expiry
    EXTRA = 6,     -- map or nil: free-form data merged in by `new` and `get`
}
