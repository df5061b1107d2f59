# One image for every role: `broker`, `worker` and `submit` are on PATH.
#
#   docker build -t sockpool .
#   docker run --rm sockpool submit --local square 1 2 3
#
# BASE_IMAGE may be any Debian-like image with python3 (3.11 or newer) and
# its venv module; tests/compose/run.sh passes a debootstrapped one.
#
# Offline builds: if a wheels/ directory sits next to this file, pip installs
# from it alone (--no-index), so it must hold the build backend and every
# dependency for the base image's Python, e.g.
#   pip download --only-binary=:all: --python-version 3.12 -d wheels setuptools msgpack click
# Without it, pip installs from PyPI.
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
# Optional extras to install too, comma-separated: `postgres` for
# `broker start --store postgresql://...` (docker-compose.ha.yml).
ARG EXTRAS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/sockpool
WORKDIR /src
# The dependencies get a layer of their own, keyed on pyproject.toml alone, so
# a change to the code reuses it. `wheels*` matches nothing when there is no
# wheels/ directory; the classic builder accepts that because pyproject.toml
# matches. A directory's contents land in /src, so the wheels do too.
COPY pyproject.toml wheels* /src/
RUN set -eu; \
    if ls /src/*.whl >/dev/null 2>&1; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/src; fi; \
    EXTRAS="$EXTRAS" python3 -c 'import os, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; extras = [e for e in os.environ["EXTRAS"].split(",") if e]; print("\n".join(p["dependencies"] + [d for e in extras for d in p["optional-dependencies"][e]]))' \
        > /tmp/requirements.txt; \
    /opt/sockpool/bin/pip install -r /tmp/requirements.txt
COPY . /src/
RUN set -eu; \
    if ls /src/*.whl >/dev/null 2>&1; then export PIP_NO_INDEX=1 PIP_FIND_LINKS=/src; fi; \
    /opt/sockpool/bin/pip install --no-deps /src

# The final image holds the venv and nothing of the build: no sources, no wheels.
FROM ${BASE_IMAGE}
COPY --from=build /opt/sockpool /opt/sockpool
# The broker keeps its jobs under $XDG_DATA_HOME/sockpool/broker-PORT; mount
# a volume on /var/lib/sockpool to keep them across containers.
ENV PATH=/opt/sockpool/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    XDG_DATA_HOME=/var/lib/sockpool
RUN useradd --system --home-dir /var/lib/sockpool --shell /usr/sbin/nologin sockpool \
    && install -d -o sockpool -g sockpool /var/lib/sockpool
USER sockpool
# Task modules for `worker join --tasks MODULE` can be mounted here: the
# worker looks for them in its working directory.
WORKDIR /app
EXPOSE 7341
CMD ["broker", "start", "--host", "0.0.0.0", "--port", "7341"]
