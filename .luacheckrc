-- luacheck settings for the Tarantool Lua in tarantool/ and bench/.
std = 'luajit'
read_globals = {'box'}
max_line_length = 110
