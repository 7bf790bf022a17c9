# Stand-in for python:3.11-slim-bookworm in the deployment tests (tests/docker/images.sh).
FROM sessions-test/debian:bookworm
RUN apt-get update -q \
    && apt-get install -y -q --no-install-recommends python3 python3-venv python-is-python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# pip brings its own CA list; the host's authorities (copied into the rootfs) must be used.
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
