# Stand-in for tarantool/tarantool:2.11.4 with its vshard rock, for the sharded deployment test
# (tests/docker/images.sh, when ../shared/vendor/vshard-0.1.26 is there): the 2.11 stand-in
# with the vendored vshard 0.1.26, unmodified, where the official image's rock puts it on
# Tarantool's default package.path. The build context is the vendor directory.
FROM sessions-test/tarantool:2.11
COPY vshard /usr/local/share/tarantool/vshard
