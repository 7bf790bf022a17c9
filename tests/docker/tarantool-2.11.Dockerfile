# Stand-in for tarantool/tarantool:2.11.4 in the deployment tests (tests/docker/images.sh) when
# the suite has a Tarantool 2.11 built for Debian 12 (../shared/vendor/tarantool-2.11, whose
# BUILD.txt lists the libraries below): that binary, run as root, without the official image's
# entrypoint. The build context holds the binary alone.
FROM sessions-test/debian:bookworm
RUN apt-get update -q \
    && apt-get install -y -q --no-install-recommends \
        libicu72 libreadline8 libssl3 libzstd1 libunwind8 libgomp1 zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/tarantool
COPY tarantool /usr/local/bin/tarantool
WORKDIR /var/lib/tarantool
