#!/usr/bin/env bash
# Restarts site a's access server under the mounted Linux kernel NFSv3
# client and checks that every handle the client held still works (no
# ESTALE, docs/ARCHITECTURE.md#invariant-6).
#
# Runs the demo cluster (`geonfs demo`'s configuration, 3 sites) as one
# process per node (`geonfs run`), boots the kernel client of
# shared/tools/kernel-client with restart-guest.sh, and when the guest says
# it is ready kills the a-access process with SIGKILL (or SIGTERM with
# --graceful), starts it again and tells the guest through site b's access
# server. The last line says PASS or FAIL.
#
#   bench/kernel/access-restart.sh [--geonfs PATH] [--tools DIR] [--graceful]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
GEONFS=${CARGO_TARGET_DIR:-/var/tmp/geonfs-target}/release/geonfs
TOOLS=$here/../../../shared/tools
SIGNAL=KILL
while [ $# -gt 0 ]; do
    case "$1" in
        --geonfs) GEONFS=$2; shift 2 ;;
        --tools) TOOLS=$2; shift 2 ;;
        --graceful) SIGNAL=TERM; shift ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
[ -x "$GEONFS" ] || { echo "access-restart: FAIL (no geonfs binary at $GEONFS)"; exit 1; }
command -v nfs-ls > /dev/null || { echo "access-restart: FAIL (nfs-ls missing: apt-get install libnfs-utils)"; exit 1; }

DIR=$(mktemp -d /var/tmp/geonfs-restart.XXXXXX)
declare -A PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2> /dev/null || true; done
    wait 2> /dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

deadline() { # deadline SECONDS DESCRIPTION COMMAND...: polls COMMAND until it succeeds
    local until=$((SECONDS + $1)) what=$2; shift 2
    until "$@" > /dev/null 2>&1; do
        if [ $SECONDS -ge $until ]; then echo "access-restart: FAIL ($what not within the deadline)"; exit 1; fi
        sleep 0.2
    done
}
listening() { (exec 3<> "/dev/tcp/$1/$2") 2> /dev/null; }

# The demo's configuration, written by a first start of the demo.
"$GEONFS" demo --dir "$DIR" > "$DIR/demo.log" 2>&1 &
demo=$!
deadline 120 "the demo configuration" test -s "$DIR/geonfs.toml"
deadline 120 "the demo" grep -q "running" "$DIR/demo.log"
kill -TERM "$demo"; wait "$demo" || true

start_node() {
    "$GEONFS" run --config "$DIR/geonfs.toml" --node "$1" >> "$DIR/$1.log" 2>&1 &
    PIDS[$1]=$!
}
for node in $(sed -n 's/^name = "\([a-z]-[a-z0-9-]*\)"$/\1/p' "$DIR/geonfs.toml"); do
    start_node "$node"
done
for site in 1 2 3; do deadline 120 "site $site's access server" listening "127.$site.0.1" 2049; done
deadline 120 "the export" nfs-ls "nfs://127.1.0.1/geonfs/"
echo "cluster up: ${#PIDS[@]} node processes, logs in $DIR"

"$TOOLS/kernel-client/run.sh" --server 127.1.0.1:2049 --export /geonfs --fio 0 \
    --script "$here/restart-guest.sh" --quiet > "$DIR/kernel.out" 2>&1 &
guest=$!

ready() { nfs-ls "nfs://127.2.0.1/geonfs/restart-check" | grep -q ' ready$'; }
deadline 600 "the guest's ready file" ready
echo "guest ready; restarting a-access with SIG$SIGNAL"
started=$SECONDS
kill "-$SIGNAL" "${PIDS[a-access]}"
wait "${PIDS[a-access]}" 2> /dev/null || true
start_node a-access
deadline 120 "the restarted access server" listening 127.1.0.1 2049
deadline 120 "the restarted export" nfs-ls "nfs://127.1.0.1/geonfs/restart-check"
echo "a-access back in $((SECONDS - started)) s"
: > "$DIR/empty"
nfs-cp "$DIR/empty" "nfs://127.2.0.1/geonfs/restart-check/restarted" > /dev/null

status=0
wait "$guest" || status=$?
cat "$DIR/kernel.out"
if [ $status -eq 0 ] && grep -q '@@ STEP restart-under-mount OK' "$DIR/kernel.out"; then
    echo "access-restart: PASS (signal $SIGNAL)"
else
    echo "access-restart: FAIL (guest exit $status; logs in $DIR kept)"
    trap - EXIT
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2> /dev/null || true; done
    exit 1
fi
