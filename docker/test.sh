#!/usr/bin/env bash
# docker/test.sh: build the images and run docker/compose.yaml for real, with podman.
#
#   bash docker/test.sh [--rebuild-base] [--no-cache] [--records N]
#
# On a Debian 12 machine, as root (rootful podman). The host-side client runs from .venv, set up
# (this tree installed) as scripts/test does it; PYTHON=... uses another interpreter with annal.
#
#  1. installs podman, podman-compose, debootstrap and runc when missing (apt-get);
#  2. makes the base image localhost/annal-base:bookworm with debootstrap from this machine's
#     Debian mirror, when missing (no registry image is pulled: there may be no registry);
#  3. builds the Annal image (docker/Dockerfile on that base) and the ZooKeeper image
#     (docker/zookeeper/Dockerfile), with this machine's pip settings and CA bundle mounted at
#     build time only;
#  4. starts ZooKeeper and the three brokers of docker/compose.yaml (project annal-test, so a
#     user's own `annal` project is left alone) and waits for every health check;
#  5. from the host, through the advertised addresses (broker-N:2N092): creates a topic, produces
#     100,000 records and consumes them (each once, in order per key); then produces another
#     100,000 at a steady rate while broker-2 is SIGKILLed and started again, and checks that
#     every acknowledged record is read;
#  6. runs the bench service (annal-bench produce, its JSON and --plot chart in a volume);
#  7. tears everything down, and checks no container, volume or network of the project is left.
#
# Teardown runs on any exit (failure and Ctrl-C too); on failure the tail of each container's
# log is printed first (ANNAL_TEST_LOGS=DIR keeps them all). Prints a `timing:` line per stage
# and `result: ok` at the end.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COMPOSE_FILE="$ROOT/docker/compose.yaml"
PROJECT="${ANNAL_TEST_PROJECT:-annal-test}"
PYTHON_GIVEN="${PYTHON:-}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
BASE_IMAGE=localhost/annal-base:bookworm
ANNAL_IMAGE=localhost/annal:latest
BUILD_STAGE_IMAGE=localhost/annal-build:latest
ZOOKEEPER_IMAGE=localhost/annal-zookeeper:latest
RECORDS=100000
REBUILD_BASE=0
BUILD_FLAGS=()
BROKERS=(broker-1 broker-2 broker-3)
BOOTSTRAP="broker-1:21092,broker-2:22092,broker-3:23092"
TOPIC=roundtrip
# podman reads only this file (crun, systemd and the default ulimits do not suit these VMs).
export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/docker/podman/containers.conf}"

usage() { sed -n '2,4p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --rebuild-base) REBUILD_BASE=1 ;;  # debootstrap the base image again
    --no-cache) BUILD_FLAGS+=(--no-cache) ;;  # build both images without podman's layer cache
    --records) RECORDS="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

die() { echo "error: $*" >&2; exit 1; }
say() { echo "== $*"; }
now() { date +%s.%N; }
TIMINGS=()
timing() {  # timing LABEL START
  local secs
  secs=$(awk -v a="$2" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
  TIMINGS+=("$1: $secs s")
  echo "timing: $1: $secs s"
}

[ "$(id -u)" = 0 ] || die "run as root: the cluster runs under rootful podman"
if [ -z "${PYTHON_GIVEN:-}" ]; then
  # The host-side client: this tree installed in .venv, as scripts/test and scripts/run do it.
  # shellcheck source=scripts/setup.sh
  ( unset PYTHON; source "$ROOT/scripts/setup.sh"; ensure_python; ensure_venv ) \
    || die "setting up $ROOT/.venv failed"
fi
(cd / && "$PYTHON" -c "import annal.client") 2>/dev/null || die "$PYTHON cannot import annal"

# ---------------------------------------------------------------------------- tools
missing=()
for tool in podman podman-compose debootstrap runc; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]} (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman podman-compose debootstrap runc >/dev/null
fi

compose() { podman-compose -p "$PROJECT" -f "$COMPOSE_FILE" "$@"; }
container_of() {  # the container of a compose service
  podman ps -a --format '{{.Names}}' \
    --filter "label=io.podman.compose.project=$PROJECT" \
    --filter "label=com.docker.compose.service=$1" | head -n1
}

WORK="$(mktemp -d /tmp/annal-docker-test.XXXXXX)"
PRODUCER_PID=""
TORN_DOWN=0

teardown() {
  set +e
  if [ -n "$PRODUCER_PID" ]; then  # the background producer: its subshell and its python
    pkill -TERM -P "$PRODUCER_PID" 2>/dev/null
    kill "$PRODUCER_PID" 2>/dev/null
  fi
  local names name
  names=$(podman ps -a --format '{{.Names}}' --filter "label=io.podman.compose.project=$PROJECT")
  if [ -n "${ANNAL_TEST_LOGS:-}" ]; then  # keep every container's log, for a post-mortem
    mkdir -p "$ANNAL_TEST_LOGS"
    for name in $names; do podman logs "$name" >"$ANNAL_TEST_LOGS/$name.log" 2>&1; done
  fi
  if [ -n "$names" ]; then
    compose down -t 30 -v >"$WORK/down.log" 2>&1
    # What podman-compose 1.0.3 leaves: its network, and anything a failed step left half-made.
    podman ps -aq --filter "label=io.podman.compose.project=$PROJECT" | xargs -r podman rm -f -v >/dev/null 2>&1
  fi
  podman volume ls -q --filter "label=io.podman.compose.project=$PROJECT" | xargs -r podman volume rm -f >/dev/null 2>&1
  podman network exists "${PROJECT}_default" 2>/dev/null && podman network rm -f "${PROJECT}_default" >/dev/null 2>&1
  TORN_DOWN=1
}

on_exit() {
  local rc=$?
  set +e
  if [ "$rc" != 0 ]; then
    echo "== failed (exit $rc); container logs:" >&2
    for name in $(podman ps -a --format '{{.Names}}' --filter "label=io.podman.compose.project=$PROJECT"); do
      echo "---- $name" >&2
      podman logs --tail 40 "$name" >&2 2>&1
    done
  fi
  [ "$TORN_DOWN" = 1 ] || teardown
  rm -rf "$WORK"
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------- images
debian_mirror() {  # the first Debian archive this machine's apt uses (not the security one)
  local uri
  uri=$(grep -hsE '^\s*(URIs:|deb\s)' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
        | grep -v -- '-security' | grep -oE '(https?|file)://[^ ]+' | grep -m1 -E '/debian/?$') || true
  echo "${uri:-http://deb.debian.org/debian}"
}

if [ "$REBUILD_BASE" = 1 ] || ! podman image exists "$BASE_IMAGE"; then
  t=$(now)
  mirror=$(debian_mirror)
  say "base image $BASE_IMAGE: debootstrap bookworm from $mirror"
  rootfs="$WORK/rootfs"
  debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
    bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import --quiet - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
  timing "base image (debootstrap + import)" "$t"
else
  say "base image $BASE_IMAGE: present (--rebuild-base makes it again)"
fi

# pip inside the build reaches the package index with this machine's settings: mounted for the
# build's RUN steps only, never copied into a layer.
PIP_MOUNTS=()
for f in /etc/pip.conf /etc/xdg/pip; do
  [ -e "$f" ] && PIP_MOUNTS+=(-v "$f:$f:ro")
done
ca="${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}"
[ -f "$ca" ] && PIP_MOUNTS+=(-v "$ca:/etc/ssl/certs/ca-certificates.crt:ro")

t=$(now)
say "building $ANNAL_IMAGE from docker/Dockerfile"
# The build stage is built and tagged first (annal-build), so that it stays as the layer cache
# of the next run while the untagged images are deleted below; the second build reuses it.
for target in "--target build -t $BUILD_STAGE_IMAGE" "-t $ANNAL_IMAGE"; do
  # shellcheck disable=SC2086
  podman build "${BUILD_FLAGS[@]}" --format docker --network=host --build-arg "BASE_IMAGE=$BASE_IMAGE" \
    "${PIP_MOUNTS[@]}" -f "$ROOT/docker/Dockerfile" $target "$ROOT" >>"$WORK/build-annal.log" 2>&1 \
    || { tail -30 "$WORK/build-annal.log" >&2; die "building the Annal image failed"; }
  BUILD_FLAGS=()  # --no-cache: the first build already ignored the cache
done
timing "Annal image build" "$t"

t=$(now)
say "building $ZOOKEEPER_IMAGE from docker/zookeeper/Dockerfile"
podman build "${BUILD_FLAGS[@]}" --format docker --network=host --build-arg "BASE_IMAGE=$BASE_IMAGE" \
  -t "$ZOOKEEPER_IMAGE" "$ROOT/docker/zookeeper" >"$WORK/build-zookeeper.log" 2>&1 \
  || { tail -30 "$WORK/build-zookeeper.log" >&2; die "building the ZooKeeper image failed"; }
timing "ZooKeeper image build" "$t"
# The images these builds replaced are left untagged: delete those of Annal's (label
# annal.image), and no other image.
podman image prune -f --filter label=annal.image >/dev/null

# ---------------------------------------------------------------------------- cluster
[ -z "$(podman ps -aq --filter "label=io.podman.compose.project=$PROJECT")" ] \
  || die "containers of project $PROJECT exist already: podman-compose -p $PROJECT -f docker/compose.yaml down -v"
for port in 21092 21093 21094 21095 22092 22093 22094 22095 23092 23093 23094 23095; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port is in use on this machine; the compose file publishes 21092-21095, 22092-22095, 23092-23095"
  fi
done

wait_healthy() {  # wait_healthy SERVICE TIMEOUT_S: run the image's HEALTHCHECK until it passes
  local service="$1" deadline=$(( $(date +%s) + $2 )) name
  name=$(container_of "$service")
  [ -n "$name" ] || die "no container for service $service"
  # podman runs health checks on a timer only under systemd: run the check itself here.
  until podman healthcheck run "$name" >/dev/null 2>&1; do
    [ "$(podman inspect -f '{{.State.Running}}' "$name")" = true ] || die "$service ($name) is not running"
    [ "$(date +%s)" -lt "$deadline" ] || die "$service ($name) not healthy after $2 s"
    sleep 1
  done
}

wait_log() {  # wait_log SERVICE REGEX TIMEOUT_S
  local service="$1" deadline=$(( $(date +%s) + $3 )) name
  name=$(container_of "$service")
  until podman logs "$name" 2>&1 | grep -qE "$2"; do
    [ "$(date +%s)" -lt "$deadline" ] || die "$service ($name) did not log /$2/ within $3 s"
    sleep 0.5
  done
}

t=$(now)
say "starting ${BROKERS[*]}, then zookeeper (podman-compose project $PROJECT)"
# Named services: podman-compose 1.0.3 has no profiles, so `up` alone would start bench too.
# The containers are created first and the brokers started before ZooKeeper, the worst order
# an orchestrator may choose: each broker must wait for ZooKeeper, then register.
compose up --no-start zookeeper "${BROKERS[@]}" >"$WORK/up.log" 2>&1 \
  || { tail -30 "$WORK/up.log" >&2; die "compose up failed"; }
for b in "${BROKERS[@]}"; do podman start "$(container_of "$b")" >/dev/null 2>>"$WORK/podman.log"; done
for b in "${BROKERS[@]}"; do wait_log "$b" "ZooKeeper at zookeeper:2181/annal does not answer yet" 30; done
echo "   every broker logs: $(podman logs "$(container_of broker-1)" 2>&1 | grep -m1 -oE 'ZooKeeper at .* does not answer yet.*')"
podman start "$(container_of zookeeper)" >/dev/null 2>>"$WORK/podman.log"
wait_healthy zookeeper 120
for b in "${BROKERS[@]}"; do wait_healthy "$b" 120; done
timing "cluster up (containers created, brokers started, then ZooKeeper, to every health check passing)" "$t"
for s in zookeeper "${BROKERS[@]}"; do
  echo "   $s: $(container_of "$s") healthy"
done

# The host reaches the brokers by their advertised names: a private /etc/hosts for the client
# processes only (their own mount namespace), with the three names on the loopback address.
cp /etc/hosts "$WORK/hosts"
echo "127.0.0.1 ${BROKERS[*]}" >>"$WORK/hosts"
host_client() {
  unshare --mount --propagation private \
    sh -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$WORK/hosts" \
    "$PYTHON" "$ROOT/docker/roundtrip.py" "$@"
}

say "round trip from the host: $RECORDS records through $BOOTSTRAP"
t=$(now)
host_client create --bootstrap-server "$BOOTSTRAP" --topic "$TOPIC" --partitions 6
host_client produce --bootstrap-server "$BOOTSTRAP" --topic "$TOPIC" --first 0 --count "$RECORDS" \
  --acked "$WORK/acked-1"
host_client consume --bootstrap-server "$BOOTSTRAP" --topic "$TOPIC" --acked "$WORK/acked-1" --exact
timing "round trip ($RECORDS records produced and consumed from the host)" "$t"

say "broker-2 killed (SIGKILL) and started again while $RECORDS more records are produced"
t=$(now)
rate=$(( RECORDS / 20 ))
[ "$rate" -gt 0 ] || rate=1
host_client produce --bootstrap-server "$BOOTSTRAP" --topic "$TOPIC" --first "$RECORDS" --count "$RECORDS" \
  --rate "$rate" --acked "$WORK/acked-2" --allow-failures >"$WORK/produce-2.out" 2>&1 &
PRODUCER_PID=$!
sleep 4
victim=$(container_of broker-2)
podman kill --signal KILL "$victim" >/dev/null
podman wait "$victim" >/dev/null 2>&1 || true
echo "   $victim killed"
sleep 2
podman start "$victim" >/dev/null 2>>"$WORK/podman.log"
echo "   $victim started again"
wait_healthy broker-2 120
timing "broker-2 kill to healthy again" "$t"
wait "$PRODUCER_PID" || { cat "$WORK/produce-2.out" >&2; die "producer failed"; }
PRODUCER_PID=""
cat "$WORK/produce-2.out"
host_client consume --bootstrap-server "$BOOTSTRAP" --topic "$TOPIC" --acked "$WORK/acked-1" "$WORK/acked-2"

# ---------------------------------------------------------------------------- bench
say "bench service: annal-bench produce inside the compose network"
t=$(now)
# --no-deps: the brokers run already (and podman-compose would rebuild images for deps).
compose run --rm --no-deps -T bench >"$WORK/bench.log" 2>&1 || { tail -30 "$WORK/bench.log" >&2; die "bench failed"; }
grep -E 'records sent' "$WORK/bench.log" | tail -n1
results=$(podman volume inspect -f '{{.Mountpoint}}' "${PROJECT}_bench-results")
[ -s "$results/produce.json" ] && [ -s "$results/produce.png" ] \
  || die "the bench service wrote no produce.json / produce.png in its volume"
echo "   bench-results volume: $(cd "$results" && ls)"
timing "bench service (1,000,000 records)" "$t"

# ---------------------------------------------------------------------------- teardown
say "tearing down"
t=$(now)
teardown
left=$(podman ps -aq --filter "label=io.podman.compose.project=$PROJECT"; \
       podman volume ls -q --filter "label=io.podman.compose.project=$PROJECT"; \
       podman volume ls -q | grep -E "^${PROJECT}_" || true; \
       podman network ls -q --filter "name=^${PROJECT}_" || true)
[ -z "$left" ] || die "left behind: $left"
timing "teardown" "$t"
echo "== summary"
printf '%s\n' "${TIMINGS[@]}"
echo "left behind: no container, volume or network of project $PROJECT"
echo "result: ok"
