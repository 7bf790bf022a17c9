# Stand-in for tarantool/tarantool:2.11 in the deployment tests (tests/docker/images.sh) where
# the suite has no Tarantool 2.11 (tarantool-2.11.Dockerfile otherwise): Debian's Tarantool 2.6,
# run as root, without the official image's entrypoint.
FROM sessions-test/debian:bookworm
RUN apt-get update -q \
    && apt-get install -y -q --no-install-recommends tarantool \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/tarantool
WORKDIR /var/lib/tarantool
