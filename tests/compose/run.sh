#!/usr/bin/env bash
# Bring the docker-compose cluster up for real, check it, tear it down.
#
# For machines with no container engine and no registry to pull from (see
# CONTAINERS.md): installs Debian's docker.io and docker-compose if missing,
# starts a private dockerd under a temporary directory, builds a base image
# by debootstrap, builds the project image offline from wheels prepared on
# this host, then checks that
#   a) `submit square 1 2 3 4 5` through the cluster prints 1 4 9 16 25;
#   b) killing a worker container in the middle of a job loses no result;
#   c) `docker-compose down` leaves no container and no network behind.
# Exits 0 when every check passed, 77 when this machine cannot run it (not
# root, no apt, dockerd will not start), anything else on a failure. Always
# stops the dockerd it started and removes its temporary directory.
#
# Slow parts are cached under $SOCKPOOL_COMPOSE_CACHE (default
# ~/.cache/sockpool-compose): the debootstrapped rootfs tarball and the wheels.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${SOCKPOOL_COMPOSE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sockpool-compose}
SUITE=bookworm
INCLUDE=python3,python3-venv
ROOTFS_TAR=$CACHE/rootfs-$SUITE-minbase-${INCLUDE//,/-}.tar
BASE_IMAGE=localhost/localbase:latest
WORKERS=3
SLEEP_JOBS=150  # each 0.2 s: 30 s of work, 5 s for 3 workers of 2 processes
# The CLI that ships with this dockerd: another one on PATH may be too new
# for it, or want BuildKit.
DOCKER=/usr/bin/docker

export COMPOSE_PROJECT_NAME=sockpoolcompose
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0
export BASE_IMAGE

started=$SECONDS
step() { printf '\n== %s (at %d s)\n' "$*" $((SECONDS - started)); }
skip() { printf 'SKIP: %s\n' "$*"; exit 77; }
fail() {
    [ -z "${compose_up:-}" ] || compose 30 logs --no-color --tail=40 || true
    printf 'FAIL: %s\n' "$*"
    exit 1
}

[ "$(id -u)" = 0 ] || skip "needs root to install and start dockerd"

# -- engine ---------------------------------------------------------------

step "engine packages"
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
[ -x "$DOCKER" ] || missing+=(docker.io)
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || skip "no apt-get to install ${missing[*]}"
    echo "installing ${missing[*]}"
    { timeout 120 apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
        >/dev/null || skip "apt-get could not install ${missing[*]}"
fi

W=$(mktemp -d /tmp/sockpool-compose.XXXXXX)
echo "workdir $W"
export DOCKER_HOST="unix://$W/docker.sock"
dockerd_pid=""
host_net=""
made_wheels_dir=""
compose_up=""

compose() { timeout "$1" docker-compose -f "$REPO/docker-compose.yml" "${@:2}"; }

cleanup() {
    local rc=$?
    set +e
    cleanup_started=$SECONDS
    if [ -n "$compose_up" ]; then
        echo "cleanup: docker-compose down"
        compose 60 down --timeout 5 >/dev/null 2>&1
    fi
    if [ -n "$dockerd_pid" ] && kill -0 "$dockerd_pid" 2>/dev/null; then
        echo "cleanup: stopping dockerd $dockerd_pid"
        stop_started=$SECONDS
        kill -TERM "$dockerd_pid"
        for _ in $(seq 100); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$dockerd_pid" 2>/dev/null; then
            echo "cleanup: dockerd ignored SIGTERM; killing it and its containerd"
            kill -KILL "$dockerd_pid"
            [ -f "$W/exec/containerd/containerd.pid" ] && kill -KILL "$(cat "$W/exec/containerd/containerd.pid")"
        fi
        wait "$dockerd_pid" 2>/dev/null
        echo "cleanup: dockerd gone after $((SECONDS - stop_started)) s"
        [ $((SECONDS - stop_started)) -lt 5 ] || tail -n 15 "$W/dockerd.log"
    fi
    if [ "$host_net" = saved ] && ! kill -0 "$dockerd_pid" 2>/dev/null; then
        echo "cleanup: restoring the firewall, IP forwarding and links as they were"
        ip link delete docker0 2>/dev/null
        # iptables-restore puts back the tables the dump holds; any other
        # table is dockerd's alone.
        for table in filter nat; do
            grep -q "^\*$table$" <<<"$iptables_before" || { iptables -t "$table" -F; iptables -t "$table" -X; }
        done
        grep -q '^\*filter$' <<<"$iptables_before" || iptables -P FORWARD ACCEPT
        [ -z "$iptables_before" ] || iptables-restore <<<"$iptables_before"
        sysctl -qw net.ipv4.ip_forward="$forward_before"
    fi
    [ -n "$made_wheels_dir" ] && rm -rf "$REPO/wheels"
    # dockerd unmounts its overlays on the way out; anything left would make
    # rm fail on a busy mount, so try once more.
    grep -o " $W/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null
    rm -rf "$W"
    printf 'cleanup took %d s\ntotal %d s\n' $((SECONDS - cleanup_started)) $((SECONDS - started))
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

step "dockerd"
# dockerd rewrites the host's firewall, turns on IP forwarding and adds
# docker0. Where no docker has done so before, put all of it back afterwards.
if ! iptables -S DOCKER >/dev/null 2>&1 && ! ip link show docker0 >/dev/null 2>&1; then
    iptables_before=$(iptables-save)
    forward_before=$(sysctl -n net.ipv4.ip_forward)
    host_net=saved
fi
dockerd --data-root "$W/data" --exec-root "$W/exec" --pidfile "$W/dockerd.pid" \
    -H "$DOCKER_HOST" >"$W/dockerd.log" 2>&1 &
dockerd_pid=$!
for _ in $(seq 150); do
    timeout 5 "$DOCKER" info >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || break
    sleep 0.2
done
if ! timeout 5 "$DOCKER" info >/dev/null 2>&1; then
    tail -n 20 "$W/dockerd.log"
    skip "dockerd did not start (its log is above)"
fi
timeout 5 "$DOCKER" version --format 'dockerd {{.Server.Version}}, storage {{.Server.Os}}'

# -- base image and wheels ----------------------------------------------------

mkdir -p "$CACHE"
if [ ! -s "$ROOTFS_TAR" ]; then
    step "debootstrap $SUITE (cached in $ROOTFS_TAR afterwards)"
    mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    timeout 600 debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$W/rootfs" "$mirror" \
        >"$W/debootstrap.log" 2>&1 || { tail -n 20 "$W/debootstrap.log"; fail "debootstrap failed"; }
    # apt's package lists and caches are of no use in the image.
    rm -rf "$W"/rootfs/var/cache/apt/archives/*.deb "$W"/rootfs/var/lib/apt/lists/*
    timeout 120 tar -C "$W/rootfs" -cf "$ROOTFS_TAR.part" . && mv "$ROOTFS_TAR.part" "$ROOTFS_TAR"
    rm -rf "$W/rootfs"
fi

step "import base image"
timeout 120 "$DOCKER" import - "$BASE_IMAGE" <"$ROOTFS_TAR" >/dev/null
pyver=$(timeout 60 "$DOCKER" run --rm "$BASE_IMAGE" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
echo "base image python $pyver"

# The build has no route to PyPI it can trust (the proxy's CA is on the host
# only), so it installs from wheels fetched here for the image's Python.
step "wheels for python $pyver"
wheels=$CACHE/wheels-py$pyver
requirements=$(python3 - "$REPO/pyproject.toml" <<'EOF'
import sys, tomllib
meta = tomllib.load(open(sys.argv[1], "rb"))
print("\n".join(meta["build-system"]["requires"] + meta["project"]["dependencies"]))
EOF
)
mapfile -t requirements <<<"$requirements"
timeout 300 python3 -m pip download --quiet --dest "$wheels" --only-binary=:all: \
    --python-version "$pyver" --implementation cp --platform "manylinux2014_$(uname -m)" \
    "${requirements[@]}" || fail "pip download of ${requirements[*]} failed"
[ ! -e "$REPO/wheels" ] || fail "$REPO/wheels exists already; move it away, this script makes its own"
made_wheels_dir=1
mkdir "$REPO/wheels"
echo '*' >"$REPO/wheels/.gitignore"  # so git never picks it up while it exists
cp "$wheels"/*.whl "$REPO/wheels/"
ls "$REPO/wheels"

# -- the cluster ------------------------------------------------------------

step "validate docker-compose.yml"
compose 30 config -q

step "build"
compose 300 build >"$W/build.log" 2>&1 || { tail -n 30 "$W/build.log"; fail "docker-compose build failed"; }
rm -rf "$REPO/wheels"
made_wheels_dir=""
timeout 10 "$DOCKER" image ls sockpool
out=$(timeout 60 "$DOCKER" run --rm sockpool:latest submit --local square 1 2 3) || fail "submit --local in the image failed: $out"
echo "image alone, submit --local: $(echo $out)"

step "up with $WORKERS workers"
# A free host port for the broker, so a broker already on 7341 is no obstacle.
SOCKPOOL_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export SOCKPOOL_PORT
compose_up=1
compose 120 up -d --scale worker="$WORKERS" || fail "docker-compose up failed"

broker=$(compose 20 ps -q broker)
broker_log() { timeout 10 "$DOCKER" logs "$broker" 2>&1; }
count() { broker_log | grep -c "$1" || true; }
deadline=$((SECONDS + 60))
until [ "$(count ' worker .* joined from ')" -ge "$WORKERS" ]; do
    [ $SECONDS -lt $deadline ] || fail "not all $WORKERS workers joined the broker"
    sleep 0.5
done
compose 20 ps

step "a) submit square 1 2 3 4 5"
out=$(compose 60 run --rm -T worker submit square 1 2 3 4 5) || fail "submit square failed: $out"
out=$(echo $out)
echo "square: $out"
[ "$out" = "1 4 9 16 25" ] || fail "expected 1 4 9 16 25, got: $out"

step "b) kill a worker in the middle of $SLEEP_JOBS sleep jobs"
args=()
for ((i = 0; i < SLEEP_JOBS; i++)); do args+=(0.2); done
# The service's own containers, not the one-off `run` ones.
victim=$(timeout 10 "$DOCKER" ps -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" \
    --filter label=com.docker.compose.service=worker --filter label=com.docker.compose.oneoff=False | head -n 1)
clients_before=$(count ' client .* connected from ')
left_before=$(count ' worker .* left')
submit_started=$SECONDS
compose 120 run --rm -T worker submit sleep "${args[@]}" >"$W/sleep.out" 2>"$W/sleep.err" &
submit_pid=$!
# Once the client is in, give the jobs a second to spread over the workers.
deadline=$((SECONDS + 30))
until [ "$(count ' client .* connected from ')" -gt "$clients_before" ]; do
    [ $SECONDS -lt $deadline ] || fail "the submit never reached the broker"
    sleep 0.2
done
sleep 1
kill -0 "$submit_pid" 2>/dev/null || fail "the submit finished before a worker could be killed; make the job bigger"
echo "killing worker container ${victim:0:12} at $(date -u +%T.%3N)"
timeout 30 "$DOCKER" kill "$victim" >/dev/null
echo "killed worker container ${victim:0:12} while the submit was running ($((SECONDS - submit_started)) s in)"
rc=0
wait "$submit_pid" || rc=$?
echo "the submit took $((SECONDS - submit_started)) s"
grep -v -E '^(Creating|Starting) ' "$W/sleep.err" || true
[ "$rc" = 0 ] || fail "submit sleep exited $rc"
got=$(grep -c '^0\.2$' "$W/sleep.out" || true)
lines=$(wc -l <"$W/sleep.out")
echo "sleep: $got of $SLEEP_JOBS results (0.2 each), $lines lines"
[ "$got" = "$SLEEP_JOBS" ] && [ "$lines" = "$SLEEP_JOBS" ] || fail "expected $SLEEP_JOBS results of 0.2"
broker_log | grep -E ' worker .* left|heartbeat' || true
left=$(( $(count ' worker .* left') - left_before ))
echo "broker saw $left worker(s) leave"
[ "$left" -ge 1 ] || fail "the broker never noticed the killed worker leave"
echo "killed worker afterwards: $(timeout 10 "$DOCKER" inspect -f '{{.State.Status}}, restarted {{.RestartCount}} times' "$victim")"

step "the broker's published port, from this host"
if PYTHONPATH=$REPO timeout 30 python3 -c 'import client.cli' 2>/dev/null; then
    out=$(PYTHONPATH=$REPO timeout 60 python3 -m sockpool.client --broker "127.0.0.1:$SOCKPOOL_PORT" echo hello) ||
        fail "submit from the host to 127.0.0.1:$SOCKPOOL_PORT failed: $out"
    echo "host submit: $out"
    [ "$out" = hello ] || fail "expected hello, got: $out"
else
    echo "skipped: this host's python3 cannot import the client"
fi

step "c) down"
compose 60 down --timeout 10
compose_up=""
leftover=$(timeout 10 "$DOCKER" ps -aq)
[ -z "$leftover" ] || fail "containers left after down: $leftover"
networks=$(timeout 10 "$DOCKER" network ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")
[ -z "$networks" ] || fail "networks left after down: $networks"
echo "nothing left running"

step "ALL CHECKS PASSED"
