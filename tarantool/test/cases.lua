-- A test file's checks as named cases on Tarantool's built-in `tap` (the same on 2.6 and
-- 2.11): the file's plan is its number of cases, and each case, a subtest, plans the checks
-- it made once it has made them. No plan is counted by hand, and a file that stops early
-- (a case that raises) exits non-zero; a case that checks nothing fails.
local tap = require('tap')

local function suite(name)
    local cases = {}
    local self = {}

    -- Adds a case: fn(test) makes its checks on `test`, in order with the other cases.
    function self.case(title, fn)
        cases[#cases + 1] = {title = title, fn = fn}
    end

    -- Runs the cases in order; the exit code of the file.
    function self.run()
        local test = tap.test(name)
        test:plan(#cases)
        for _, case in ipairs(cases) do
            test:test(case.title, function(checks)
                case.fn(checks)
                if checks.total == 0 then
                    checks:fail('the case made no check')
                end
                checks:plan(checks.total)
            end)
        end
        return test:check() and 0 or 1
    end

    return self
end

return {suite = suite}
