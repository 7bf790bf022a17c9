-- luacheck settings for the Tarantool Lua in tarantool/ and bench/.
std = 'luajit'
-- Tarantool's globals: box, and its additions to the standard table library.
read_globals = {'box', table = {fields = {'copy', 'deepcopy'}}}
max_line_length = 110
