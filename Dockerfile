# The sessions service. Build: docker build -t sessions .
# Tarantool runs in its own container (docker-compose.yml); this image holds only the app.
# PYTHON_IMAGE is the official image; the deployment tests build on a local stand-in of it
# (tests/docker/images.sh) on machines that cannot pull from Docker Hub.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
# The dependencies first, from the lock: a change of the code alone rebuilds from here on, in
# seconds, and every build installs the same versions.
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY sessions ./sessions
RUN /opt/venv/bin/pip install --no-deps .

FROM ${PYTHON_IMAGE}
ARG VERSION=unknown
ARG REVISION=unknown
LABEL org.opencontainers.image.title="sessions" \
      org.opencontainers.image.description="Login sessions of web and mobile users over HTTP" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# /var/lib/tarantool belongs to the Tarantool image's uid (10002, tarantool/Dockerfile): the
# `tools` containers mount Tarantool's volume there, and a new, empty volume mounted here first
# (a restore into a fresh volume) takes this directory's owner, so the files restored into it
# are the Tarantool image's to read.
RUN groupadd --system --gid 10001 sessions \
    && useradd --system --uid 10001 --gid sessions --no-create-home --shell /usr/sbin/nologin sessions \
    && mkdir -p /var/lib/tarantool && chown 10002:10002 /var/lib/tarantool && chmod 700 /var/lib/tarantool
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SESSIONS_HOST=0.0.0.0 \
    SESSIONS_PORT=8080 \
    SESSIONS_REVISION=${REVISION}
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["sessions", "health"]
# Exec form: signals reach the service itself, which stops in order on SIGTERM.
ENTRYPOINT ["sessions"]
CMD ["serve"]
