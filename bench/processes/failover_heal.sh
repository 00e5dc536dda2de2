#!/usr/bin/env bash
# Site loss without split brain, with real processes and a real client
# (libnfs-utils): the cluster of `cluster.sh` (one process per node), and
#
#   1. vm.img (8 MiB) copied in at site a, copied out to b and c;
#   2. the cores of b and c paused (SIGSTOP): late.img (3 MiB) copied in
#      at site a is acknowledged on two cores of a, never copied out;
#   3. site a paused whole (cut off: access server, cores, meta voter),
#      the cores of b and c resumed;
#   4. `geonfs failover a --to b` (waits for a's leases to run out);
#      vm.img reads right at b and c, and late.img reads the same at both;
#   5. site a resumed (the heal): its cores set the late writes aside
#      instead of shipping them; `geonfs quarantine list` shows them,
#      every site reads vm.img right and late.img as b and c do, and
#      `geonfs quarantine export` gives late.img's bytes back.
#
# Last line: `processes/failover_heal: PASS (...)` or `... FAIL (...)`;
# logs and data stay in the run directory printed at the start.
#
#   bench/processes/failover_heal.sh [--dir DIR] [--geonfs BIN]
#
# Needs a `geonfs` binary (the release build in $CARGO_TARGET_DIR, else the
# debug one), nfs-cp/nfs-cat (libnfs-utils) and the 127.41-43.x addresses.
set -euo pipefail

RUN_DIR=""
REPO=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-/var/tmp/geonfs-target}
GEONFS=$TARGET/release/geonfs
[ -x "$GEONFS" ] || GEONFS=$TARGET/debug/geonfs
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) RUN_DIR=$2; shift 2 ;;
        --geonfs) GEONFS=$2; shift 2 ;;
        *) echo "usage: $0 [--dir DIR] [--geonfs BIN]" >&2; exit 2 ;;
    esac
done
RUN_DIR=${RUN_DIR:-$(mktemp -d /var/tmp/geonfs-failover-heal.XXXXXX)}

say() { echo "processes/failover_heal: $*"; }
fail() { say "FAIL ($*) dir=$RUN_DIR"; exit 1; }
[ -x "$GEONFS" ] || fail "no geonfs binary at $GEONFS (cargo build --workspace --bins)"
command -v nfs-cp > /dev/null || fail "nfs-cp missing (apt-get install libnfs-utils)"

CLUSTER_NAME=failover-heal
before_stop() {
    # Paused processes take no SIGTERM.
    for f in "$RUN_DIR"/pids/*; do
        [ -e "$f" ] && kill -CONT "$(cat "$f")" 2> /dev/null || true
    done
}
. "$REPO/bench/processes/cluster.sh"

signal_site() { # signal site roles...
    local signal=$1 site=$2
    shift 2
    for role in "$@"; do kill "-$signal" "$(cat "$RUN_DIR/pids/$site-$role")"; done
}
quarantined() { # the number of quarantined copies
    "$GEONFS" quarantine list --config "$CONFIG" 2> /dev/null | tail -1 | cut -d' ' -f1
}
same_at() { # file expected sites...
    local file=$1 expected=$2
    shift 2
    for s in "$@"; do
        nfs-cat "$(url "$s" "$file")" 2> "$RUN_DIR/logs/cat.err" > "$RUN_DIR/read" ||
            fail "reading $file at $s: $(head -c 200 "$RUN_DIR/logs/cat.err")"
        cmp -s "$RUN_DIR/read" "$expected" || fail "$file at site $s differs from $expected"
    done
}

say "run directory $RUN_DIR, geonfs $GEONFS"
start_cluster
head -c 8M /dev/urandom > "$RUN_DIR/vm.img"
head -c 3M /dev/urandom > "$RUN_DIR/late.img"
nfs-cp "$RUN_DIR/vm.img" "$(url a vm.img)" > /dev/null || fail "copying vm.img in at a"
same_at vm.img "$RUN_DIR/vm.img" a b c

# Copied out: a's cores have no replication job left.
wait_copied_out() {
    local deadline=$((SECONDS + 60)) backlog
    while :; do
        backlog=0
        for c in 1 2 3; do
            backlog=$((backlog + $(metric "a-core-$c" geonfs_replication_backlog_jobs)))
        done
        [ "$backlog" = 0 ] && return
        [ $SECONDS -lt $deadline ] || fail "a still has $backlog replication jobs after 60 s"
        sleep 0.2
    done
}
wait_copied_out

signal_site STOP b core-1 core-2 core-3
signal_site STOP c core-1 core-2 core-3
timeout 60 nfs-cp "$RUN_DIR/late.img" "$(url a late.img)" > /dev/null ||
    fail "the late write at a was not acknowledged"
signal_site STOP a access core-1 core-2 core-3 meta
signal_site CONT b core-1 core-2 core-3
signal_site CONT c core-1 core-2 core-3
say "site a cut off (paused) after an acknowledged 3 MiB write none of its cores could copy out"

started=$SECONDS
"$GEONFS" failover a --to b --config "$CONFIG" > "$RUN_DIR/logs/failover.out" 2> "$RUN_DIR/logs/failover.err" ||
    fail "failover: $(tail -3 "$RUN_DIR/logs/failover.err")"
failover_s=$((SECONDS - started))
say "$(tail -1 "$RUN_DIR/logs/failover.out")"
same_at vm.img "$RUN_DIR/vm.img" b c
nfs-cat "$(url b late.img)" > "$RUN_DIR/late.after" 2> "$RUN_DIR/logs/cat.err" ||
    fail "reading late.img at b: $(head -c 200 "$RUN_DIR/logs/cat.err")"
same_at late.img "$RUN_DIR/late.after" c
[ "$(quarantined)" = 0 ] || fail "copies quarantined before the heal"

signal_site CONT a access core-1 core-2 core-3 meta
healed=$SECONDS
deadline=$((SECONDS + 120))
# Three 1 MiB blocks and the file's attribute record, on two cores each.
until [ "$(quarantined)" -ge 8 ]; do
    [ $SECONDS -lt $deadline ] || fail "only $(quarantined) copies set aside 120 s after the heal"
    sleep 0.5
done
set_aside_s=$((SECONDS - healed))
"$GEONFS" quarantine list --config "$CONFIG" > "$RUN_DIR/logs/quarantine.out"
same_at vm.img "$RUN_DIR/vm.img" a b c
same_at late.img "$RUN_DIR/late.after" a b c
# The operator's recovery: the current file, with the quarantined blocks
# written over it.
cp "$RUN_DIR/late.after" "$RUN_DIR/recovered"
file=$(awk 'NR > 1 && $3 ~ /\/0$/ {split($3, b, "/"); print b[1]; exit}' "$RUN_DIR/logs/quarantine.out")
[ -n "$file" ] || fail "block 0 of late.img not in the quarantine"
"$GEONFS" quarantine export "$file" --into "$RUN_DIR/recovered" --config "$CONFIG" > "$RUN_DIR/logs/export.out" ||
    fail "quarantine export $file"
cmp -s "$RUN_DIR/recovered" "$RUN_DIR/late.img" || fail "the quarantine does not give late.img back"
"$GEONFS" status --config "$CONFIG" > "$RUN_DIR/logs/status.out" 2>&1 || true
say "PASS (failover of a paused site in ${failover_s} s; after the heal, $(quarantined) copies set aside in ${set_aside_s} s, late.img's $(wc -c < "$RUN_DIR/late.img") bytes given back by geonfs quarantine export, every site reads b's data) dir=$RUN_DIR"
