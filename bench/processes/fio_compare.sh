#!/usr/bin/env bash
# VM-like I/O against `geonfs demo` (site a) and NFS-Ganesha in one run,
# with the standard tools of ../shared/tools:
#
#   1. fio through libnfs (`fio-nfs/run.sh`): the whole job matrix (4 KiB
#      random reads and writes at QD16 and QD1, WRITE+COMMIT per write,
#      a 70/30 16 KiB mix, 1 MiB sequential), servers alternating round
#      by round, medians and geonfs/Ganesha ratios;
#   2. `qemu-img bench -w -t writethrough -d 1 -s 4096` (a guest's
#      synchronous write, WRITE + COMMIT each; qemu-img bench writes at
#      sequential offsets): time per write, median of 2 runs each;
#   3. the WAN figure: 15 s of 4 KiB random writes at QD16 into a 256 MiB
#      file at site a, then the bytes site a's cores replicated to b and
#      c (payload and encoded puts, from their /metrics) per byte written,
#      and how long the backlog took to drain.
#
# Last line: `processes/fio_compare: PASS (...)` or `... FAIL (...)`;
# results in the run directory printed at the start (fio.txt, fio.json,
# qemu.txt, wan.txt, summary.json).
#
#   bench/processes/fio_compare.sh [--dir DIR] [--geonfs BIN] [--rounds N] [--seconds S]
#
# Needs the `geonfs` release build (else the debug one), the 127.1-3.x and
# 127.9.0.1 addresses free, qemu-img and curl; fio-nfs and Ganesha are set
# up by their own scripts on first use.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
TOOLS=$REPO/../shared/tools
TARGET=${CARGO_TARGET_DIR:-/var/tmp/geonfs-target}
GEONFS=$TARGET/release/geonfs
[ -x "$GEONFS" ] || GEONFS=$TARGET/debug/geonfs
RUN_DIR=""; ROUNDS=2; SECONDS_PER_JOB=10
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) RUN_DIR=$2; shift 2 ;;
        --geonfs) GEONFS=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --seconds) SECONDS_PER_JOB=$2; shift 2 ;;
        *) echo "usage: $0 [--dir DIR] [--geonfs BIN] [--rounds N] [--seconds S]" >&2; exit 2 ;;
    esac
done
RUN_DIR=${RUN_DIR:-$(mktemp -d /var/tmp/geonfs-fio-compare.XXXXXX)}
mkdir -p "$RUN_DIR"
GEONFS_URL=nfs://127.1.0.1/geonfs
GANESHA_DIR=$RUN_DIR/gexport
GANESHA_URL=nfs://127.9.0.1$GANESHA_DIR

say() { echo "processes/fio_compare: $*"; }
fail() { say "FAIL ($*)"; exit 1; }
say "run directory $RUN_DIR, $GEONFS"

DEMO=""; WATCHDOG=""
cleanup() {
    [ -z "$WATCHDOG" ] || kill "$WATCHDOG" 2>/dev/null || true
    "$TOOLS/ganesha-baseline/stop.sh" >/dev/null 2>&1 || true
    if [ -n "$DEMO" ]; then kill "$DEMO" 2>/dev/null || true; wait "$DEMO" 2>/dev/null || true; fi
}
trap cleanup EXIT

# fio's libnfs engine can hang on a request the server never answers
# (seen against Ganesha's 1 MiB reads here) and then ignores the SIGTERM of
# run.sh's timeout: a fio process alive for longer than any job is killed
# (run.sh then counts that job run as failed).
(
    while sleep 20; do
        for pid in $(pgrep -f '/fio-nfs/fio --name' || true); do
            age=$(ps -o etimes= -p "$pid" 2>/dev/null | tr -d ' ')
            if [ -n "$age" ] && [ "$age" -gt $((SECONDS_PER_JOB + 150)) ]; then
                echo "killing fio $pid, alive for $age s" >>"$RUN_DIR/watchdog.log"
                kill -9 "$pid" 2>/dev/null || true
            fi
        done
    done
) &
WATCHDOG=$!

"$GEONFS" demo --dir "$RUN_DIR/demo" --log warn >"$RUN_DIR/demo.log" 2>&1 &
DEMO=$!
deadline=$((SECONDS + 120))
until nfs-ls "$GEONFS_URL" >/dev/null 2>&1; do
    kill -0 "$DEMO" 2>/dev/null || fail "geonfs demo exited, see $RUN_DIR/demo.log"
    [ $SECONDS -lt $deadline ] || fail "the demo's export did not come up in 120 s"
    sleep 0.5
done
mkdir -p "$GANESHA_DIR"
"$TOOLS/ganesha-baseline/start.sh" "$GANESHA_DIR" 127.9.0.1 >"$RUN_DIR/ganesha.log" 2>&1 \
    || fail "Ganesha did not start, see $RUN_DIR/ganesha.log"
FIO=$("$TOOLS/fio-nfs/setup.sh")

# 1. fio's matrix.
# A failed job run is reported in the table (and fio.txt), not fatal.
"$TOOLS/fio-nfs/run.sh" --rounds "$ROUNDS" --seconds "$SECONDS_PER_JOB" --json "$RUN_DIR/fio.json" \
    geonfs="$GEONFS_URL" ganesha="$GANESHA_URL" | tee "$RUN_DIR/fio.txt" || true
[ -s "$RUN_DIR/fio.json" ] || fail "fio-nfs produced no results, see $RUN_DIR/fio.txt"

# 2. qemu-img bench, writethrough.
: >"$RUN_DIR/qemu.txt"
for server in geonfs ganesha; do
    url=$GEONFS_URL/qemu-bench.img
    [ $server = ganesha ] && url=$GANESHA_URL/qemu-bench.img
    qemu-img create -f raw "$url" 64M >/dev/null
    for run in 1 2; do
        start=$(date +%s.%N)
        qemu-img bench -w -t writethrough -d 1 -s 4096 -c 2000 -f raw "$url" >>"$RUN_DIR/qemu.txt"
        end=$(date +%s.%N)
        echo "$server run $run: $(python3 -c "print(f'{($end - $start) / 2000 * 1000:.3f}')") ms per write" \
            | tee -a "$RUN_DIR/qemu.txt"
    done
done

# 3. WAN bytes per written byte.
metric() { # NAME SITE: the sum over site a's cores
    for host in 11 12 13; do curl -s "http://127.1.0.$host:9100/metrics"; done \
        | awk -v name="$1" -v site="$2" '$1 ~ "^"name"\\{" && $1 ~ "site=\""site"\"" {t += $2} END {printf "%.0f\n", t}'
}
drained() {
    [ "$(metric geonfs_replication_backlog_jobs b)" = 0 ] && [ "$(metric geonfs_replication_backlog_jobs c)" = 0 ]
}
wait_drained() { # SECONDS
    local until=$((SECONDS + $1))
    until drained; do [ $SECONDS -lt $until ] || return 1; sleep 1; done
}
"$FIO" --name=layout --ioengine=nfs --nfs_url="$GEONFS_URL" --filename=wan.dat --rw=write \
    --bs=1M --iodepth=4 --size=256M >/dev/null 2>>"$RUN_DIR/wan-fio.err"
wait_drained 600 || fail "the layout's replication did not drain in 600 s"
declare -A before
for m in geonfs_replication_bytes_total geonfs_replication_wire_bytes_total; do
    for site in b c; do before[$m.$site]=$(metric $m $site); done
done
"$FIO" --name=wan --ioengine=nfs --nfs_url="$GEONFS_URL" --filename=wan.dat --rw=randwrite --bs=4k \
    --iodepth=16 --size=256M --runtime=15 --time_based --output-format=json --output="$RUN_DIR/wan-fio.json" \
    >/dev/null 2>>"$RUN_DIR/wan-fio.err"
started=$SECONDS
wait_drained 600 || fail "the random writes' replication did not drain in 600 s"
drain=$((SECONDS - started))
written=$(python3 -c "import json; print(json.load(open('$RUN_DIR/wan-fio.json'))['jobs'][0]['write']['io_bytes'])")
{
    echo "4 KiB random writes, QD16, 15 s: $written bytes written at site a; backlog drained ${drain} s after"
    for site in b c; do
        payload=$(( $(metric geonfs_replication_bytes_total $site) - ${before[geonfs_replication_bytes_total.$site]} ))
        wire=$(( $(metric geonfs_replication_wire_bytes_total $site) - ${before[geonfs_replication_wire_bytes_total.$site]} ))
        python3 -c "print(f'site $site: payload {$payload / $written:.3f}x, encoded puts {$wire / $written:.3f}x the written bytes')"
    done
} | tee "$RUN_DIR/wan.txt"

python3 - "$RUN_DIR" <<'PY'
import json, re, statistics, sys
run = sys.argv[1]
qemu = {}
for line in open(f"{run}/qemu.txt"):
    m = re.match(r"(\w+) run \d+: ([\d.]+) ms per write", line)
    if m:
        qemu.setdefault(m.group(1), []).append(float(m.group(2)))
summary = {
    "fio": json.load(open(f"{run}/fio.json")),
    "qemu_writethrough_ms_per_write": {k: statistics.median(v) for k, v in qemu.items()},
    "wan": open(f"{run}/wan.txt").read().splitlines(),
}
json.dump(summary, open(f"{run}/summary.json", "w"), indent=1)
PY
say "PASS ($RUN_DIR)"
