#!/usr/bin/env bash
# The data path with real processes and a real client: a 3-site cluster run
# as one `geonfs run` process per node (sites a, b, c on 127.41/42/43.0.0/16,
# an emulated 20 ms WAN between them, n = 3), driven by fio through libnfs
# (`../shared/tools/fio-nfs`) with crc32c verification, while a killer
# `kill -9`s a random core or access process every few seconds and restarts
# it.  One fault at a time, as the in-process thrasher
# (`testkit/src/thrash`) does; this run adds what it cannot: separate
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
KILLS=$RUN_DIR/kills
STOP_KILLING=$RUN_DIR/stop-killing
PHASE=$RUN_DIR/phase
: > "$KILLS"
rm -f "$STOP_KILLING"

say() { echo "processes/thrash: $*"; }
fail() { say "FAIL ($*) dir=$RUN_DIR"; exit 1; }

[ -x "$GEONFS" ] || fail "no geonfs binary at $GEONFS (cargo build --workspace --bins)"
FIO=$("$TOOLS/fio-nfs/setup.sh") || fail "fio-nfs setup failed"

CLUSTER_NAME=process-thrash
KILLER=""
before_stop() {
    touch "$STOP_KILLING"
    # The killer first, so that it restarts nothing behind the teardown.
    if [ -n "$KILLER" ]; then kill "$KILLER" 2> /dev/null || true; wait "$KILLER" 2> /dev/null || true; fi
}
. "$REPO/bench/processes/cluster.sh"

say "run directory $RUN_DIR, geonfs $GEONFS, fio $FIO"
start_cluster
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
