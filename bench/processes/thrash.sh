#!/usr/bin/env bash
# The data path with real processes and a real client: a 3-site cluster run
# as one `geonfs run` process per node (sites a, b, c on 127.41/42/43.0.0/16,
# an emulated 20 ms WAN between them, n = 3), driven by fio through libnfs
# (`../shared/tools/fio-nfs`) with crc32c verification, while a killer
# `kill -9`s a random core or access process every few seconds and restarts
# it.  One fault at a time, as the in-process thrasher
# (`bench/src/thrash`) does; this run adds what it cannot: separate
# processes, a client nobody on the team wrote, and restarts from disk.
#
#   1. at site a: fio writes FILE (random offsets, 4-64 KiB, UNSTABLE writes
#      with a COMMIT every 32) and verifies it, kills running;
#   2. at site b: fio verifies FILE as written at a (a remote read), then
#      writes it whole again with another seed (the file moves to site b)
#      and verifies that, kills running;
#   3. kills stop, every process runs again: fio verifies FILE (as written
#      at b) at sites a, b and c.
#
# Any verification error fails the run (fio --verify_fatal).  Last line:
# `processes/thrash: PASS (...)` or `processes/thrash: FAIL (...)`; logs and
# data stay in the run directory printed at the start.
#
#   bench/processes/thrash.sh [--size 32M] [--kill-every 2-5] [--dir DIR] [--geonfs BIN]
#
# Needs root (fio-nfs builds fio with Debian's source package), a `geonfs`
# binary (the release build in $CARGO_TARGET_DIR, else the debug one) and
# the shared tools (`$GEONFS_TOOLS`, else `../shared/tools` next to the
# checkout).
set -euo pipefail

SIZE=32M
KILL_MIN=2
KILL_MAX=5
RUN_DIR=""
REPO=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-/var/tmp/geonfs-target}
GEONFS=$TARGET/release/geonfs
[ -x "$GEONFS" ] || GEONFS=$TARGET/debug/geonfs
while [ $# -gt 0 ]; do
    case "$1" in
        --size) SIZE=$2; shift 2 ;;
        --kill-every) KILL_MIN=${2%-*}; KILL_MAX=${2#*-}; shift 2 ;;
        --dir) RUN_DIR=$2; shift 2 ;;
        --geonfs) GEONFS=$2; shift 2 ;;
        *) echo "usage: $0 [--size 32M] [--kill-every MIN-MAX] [--dir DIR] [--geonfs BIN]" >&2; exit 2 ;;
    esac
done

TOOLS=${GEONFS_TOOLS:-$REPO/../shared/tools}
RUN_DIR=${RUN_DIR:-$(mktemp -d /var/tmp/geonfs-process-thrash.XXXXXX)}
mkdir -p "$RUN_DIR/logs" "$RUN_DIR/pids"
CONFIG=$RUN_DIR/geonfs.toml
KILLS=$RUN_DIR/kills
STOP_KILLING=$RUN_DIR/stop-killing
PHASE=$RUN_DIR/phase
: > "$KILLS"
rm -f "$STOP_KILLING"

say() { echo "processes/thrash: $*"; }
fail() { say "FAIL ($*) dir=$RUN_DIR"; exit 1; }

[ -x "$GEONFS" ] || fail "no geonfs binary at $GEONFS (cargo build --workspace --bins)"
FIO=$("$TOOLS/fio-nfs/setup.sh") || fail "fio-nfs setup failed"

SITES="a b c"
site_net() { case "$1" in a) echo 41 ;; b) echo 42 ;; c) echo 43 ;; esac; }
CORES=""
ACCESS=""
{
    echo "[cluster]"
    echo "name = \"process-thrash\""
    echo "replication_factor = 3"
    echo "block_size = \"1MiB\""
    echo "secret = \"$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')\""
    echo
    for s in $SITES; do
        echo "[[site]]"
        echo "name = \"$s\""
        echo "subnets = [\"127.$(site_net "$s").0.0/16\"]"
        echo
    done
    for s in $SITES; do
        n=$(site_net "$s")
        node() { # name host role
            echo "[[node]]"
            echo "name = \"$1\""
            echo "address = \"127.$n.0.$2:7100\""
            echo "roles = [\"$3\"]"
            [ "$3" = access ] || echo "data_dir = \"$RUN_DIR/data/$1\""
            [ "$3" = core ] && echo "capacity = \"4GiB\""
            echo
        }
        node "$s-access" 1 access
        for c in 1 2 3; do node "$s-core-$c" $((10 + c)) core; done
        node "$s-meta" 21 meta
    done
    echo "[nfs]"
    echo "port = 2049"
    echo "portmapper = false"
    echo
    for pair in "a b" "a c" "b c"; do
        set -- $pair
        echo "[[wan]]"
        echo "between = [\"$1\", \"$2\"]"
        echo "rtt = \"20ms\""
        echo "bandwidth = \"200Mbit/s\""
        echo
    done
} > "$CONFIG"
for s in $SITES; do
    ACCESS="$ACCESS $s-access"
    for c in 1 2 3; do CORES="$CORES $s-core-$c"; done
done
"$GEONFS" check-config "$CONFIG" > /dev/null || fail "the generated configuration is invalid"

start() { # node
    "$GEONFS" run --config "$CONFIG" --node "$1" >> "$RUN_DIR/logs/$1.log" 2>&1 &
    echo $! > "$RUN_DIR/pids/$1"
}
running() { # node
    [ -e "$RUN_DIR/pids/$1" ] && kill -0 "$(cat "$RUN_DIR/pids/$1")" 2> /dev/null
}
KILLER=""
stop_all() {
    touch "$STOP_KILLING"
    # The killer first, so that it restarts nothing behind the teardown.
    if [ -n "$KILLER" ]; then kill "$KILLER" 2> /dev/null || true; wait "$KILLER" 2> /dev/null || true; fi
    for f in "$RUN_DIR"/pids/*; do
        [ -e "$f" ] && kill -TERM "$(cat "$f")" 2> /dev/null || true
    done
    wait 2> /dev/null || true
    # Whatever a restart left behind.
    pkill -KILL -f -- "--config $CONFIG" 2> /dev/null || true
}
trap stop_all EXIT

url() { # site
    echo "nfs://127.$(site_net "$1").0.1/geonfs?nfsport=2049&mountport=2049"
}

# Polls (never sleeps as synchronisation) until site $1's export lists.
wait_export() { # site deadline-seconds
    local deadline=$((SECONDS + $2))
    until nfs-ls "$(url "$1")" > /dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || fail "site $1's export did not answer within $2 s"
        sleep 0.5
    done
}

say "run directory $RUN_DIR, geonfs $GEONFS, fio $FIO"
# Another run (or a demo on these addresses) would answer in our place.
if busy=$(ss -Htln | awk '{print $4}' | grep -E '^127\.4[123]\.0\.[0-9]+:(7100|2049)$'); then
    fail "addresses in use (another run still going?): $(echo $busy)"
fi
for s in $SITES; do start "$s-meta"; done
for node in $CORES $ACCESS; do start "$node"; done
for s in $SITES; do wait_export "$s" 180; done
for node in $CORES $ACCESS; do
    running "$node" || fail "$node exited at start: see $RUN_DIR/logs/$node.log"
done
say "cluster up: $(echo $CORES $ACCESS | wc -w) core and access processes, 3 meta voters"

# The killer: one fault at a time, until $STOP_KILLING exists.
killer() {
    local victims=($CORES $ACCESS)
    while [ ! -e "$STOP_KILLING" ]; do
        sleep "$((KILL_MIN + RANDOM % (KILL_MAX - KILL_MIN + 1)))"
        [ -e "$STOP_KILLING" ] && break
        local victim=${victims[$((RANDOM % ${#victims[@]}))]}
        running "$victim" || continue
        # fio's libnfs gives up at once when its MOUNT finds the access
        # server down (then spins on "Failed to open"): spare the access
        # server of the site a phase just started at, until it has mounted.
        if [ -e "$PHASE" ] && [ "$victim" = "$(cut -d' ' -f1 "$PHASE")-access" ] &&
            [ $(($(date +%s) - $(cut -d' ' -f2 "$PHASE"))) -lt 5 ]; then
            continue
        fi
        kill -9 "$(cat "$RUN_DIR/pids/$victim")" 2> /dev/null || continue
        echo "$(date +%T.%N | cut -c1-12) kill -9 $victim" >> "$KILLS"
        sleep "$((1 + RANDOM % 3))"
        start "$victim"
    done
}

# fio over libnfs at site $1; the remaining arguments are fio options.
FIO_JOB=(--filename=vm.img --size="$SIZE" --bssplit=4k/60:16k/25:64k/15
    --iodepth=8 --verify=crc32c --verify_fatal=1 --fsync=32 --end_fsync=1
    --verify_state_save=0)
fio_at() { # site label options...
    local site=$1 label=$2
    shift 2
    say "$label at site $site"
    echo "$site $(date +%s)" > "$PHASE"
    timeout 900 "$FIO" --name="$label" --ioengine=nfs --nfs_url="$(url "$site")" "${FIO_JOB[@]}" "$@" \
        --output="$RUN_DIR/logs/fio-$label.log" 2> "$RUN_DIR/logs/fio-$label.err" ||
        fail "fio $label at site $site: see $RUN_DIR/logs/fio-$label.log"
}
VERIFIED=0
size_bytes=$(numfmt --from=iec "$SIZE")

killer &
KILLER=$!
fio_at a write-a --rw=randwrite --randseed=1 --do_verify=1
VERIFIED=$((VERIFIED + size_bytes))
fio_at b verify-a-at-b --rw=randwrite --randseed=1 --verify_only=1
VERIFIED=$((VERIFIED + size_bytes))
fio_at b write-b --rw=randwrite --randseed=2 --do_verify=1
VERIFIED=$((VERIFIED + size_bytes))
touch "$STOP_KILLING"
wait "$KILLER" || true
KILLER=""
for node in $CORES $ACCESS; do running "$node" || start "$node"; done
for s in $SITES; do wait_export "$s" 120; done
per_site=""
for s in $SITES; do
    fio_at "$s" "verify-b-at-$s" --rw=randwrite --randseed=2 --verify_only=1
    VERIFIED=$((VERIFIED + size_bytes))
    per_site="$per_site $s=$size_bytes"
done
kills=$(wc -l < "$KILLS")
say "kills: $(cut -d' ' -f4 "$KILLS" | sort | uniq -c | awk '{printf "%s×%s ", $1, $2}')"
say "PASS ($kills kill -9s survived, $VERIFIED bytes verified by fio: final pass per site$per_site; 0 mismatches) dir=$RUN_DIR"
