-- luacheck settings for the Tarantool Lua in tarantool/ and bench/.
std = 'luajit'
-- Tarantool's globals: box, and its additions to the standard table and os libraries.
read_globals = {'box', table = {fields = {'copy', 'deepcopy'}}, os = {fields = {'environ', 'setenv'}}}
max_line_length = 110
