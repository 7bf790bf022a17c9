-- Whether memtx memory ran out: set by a write that failed for lack of it, cleared by the
-- next write that fits. Reads and deletes go on meanwhile (operations/get.lua serves a
-- session as stored when its touch does not fit). `info` reports both figures.
local memory = {
    full = false,
    touch_skipped = 0,  -- `get`s served without rewriting activity, since start
}

function memory.is_out_of_memory(err)
    return type(err) == 'cdata' and (err.type == 'OutOfMemory' or err.code == box.error.MEMORY_ISSUE)
end

-- Called with every error an operation raised: one for lack of memory sets the flag.
function memory.note(err)
    if memory.is_out_of_memory(err) then
        memory.full = true
    end
end

function memory.wrote()
    memory.full = false
end

function memory.touch_skipped_now()
    memory.full = true
    memory.touch_skipped = memory.touch_skipped + 1
end

return memory
