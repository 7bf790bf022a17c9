-- Whether a password is too weak to run with: the rule of sessions/weak_secrets.py (the
-- service's side), read from its generated copy, weak_secrets.lua. Folding works as it does
-- there, character by character of the UTF-8 text: spaces never count, spaces and
-- punctuation are left out of the comparison with the list, ASCII letters fold to lower case.
local W = require('sessions.weak_secrets')

local function set_of(list)
    local set = {}
    for _, item in ipairs(list) do
        set[item] = true
    end
    return set
end

local SPACES = set_of(W.SPACES)
local PUNCTUATION = set_of(W.PUNCTUATION)

-- The characters that count, and the value folded.
local function measure(value)
    local count, kept = 0, {}
    -- One UTF-8 character: a byte that does not continue one, then those that do.
    for char in value:gmatch('[^\128-\191][\128-\191]*') do
        if not SPACES[char] then
            count = count + 1
            if not PUNCTUATION[char] then
                kept[#kept + 1] = char
            end
        end
    end
    -- string.lower changes ASCII letters only (the C locale), like the service's side.
    return count, table.concat(kept):lower()
end

local function is_weak(value)
    local count, folded = measure(value)
    return count < W.MIN_LENGTH or folded:sub(1, #W.SAMPLE_PREFIX) == W.SAMPLE_PREFIX
        or W.COMMON[folded] == true
end

return {
    RULE = W.RULE,
    is_weak = is_weak,
}
