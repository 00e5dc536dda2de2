# A 3-site cluster of real processes on loopback, for the scripts of this
# folder (sourced, not run): sites a, b, c on 127.41/42/43.0.0/16, one
# `geonfs run` process per node (an access server, three cores and a meta
# voter per site), n = 3, 1 MiB blocks, NFS on port 2049 of each site's
# access server (root clients on loopback allowed, as hypervisors), an
# emulated 20 ms WAN between the sites, TLS between the nodes (a CA and
# certificates made in $RUN_DIR/tls); each core serves Prometheus /metrics
# on port 9100 of its address.
#
# The caller sets RUN_DIR, GEONFS and CLUSTER_NAME and defines `say` and
# `fail`; it may define `before_stop` (run first by `stop_all`, which is
# the EXIT trap).

SITES="a b c"
site_net() { case "$1" in a) echo 41 ;; b) echo 42 ;; c) echo 43 ;; esac; }
CONFIG=$RUN_DIR/geonfs.toml
mkdir -p "$RUN_DIR/logs" "$RUN_DIR/pids"
CORES=""
ACCESS=""
{
    echo "[cluster]"
    echo "name = \"$CLUSTER_NAME\""
    echo "replication_factor = 3"
    echo "block_size = \"1MiB\""
    echo "secret = \"$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')\""
    echo
    echo "[tls]"
    echo "dir = \"$RUN_DIR/tls\""
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
            [ "$3" = core ] && echo "capacity = \"4GiB\"" &&
                echo "metrics_address = \"127.$n.0.$2:9100\""
            echo
        }
        node "$s-access" 1 access
        for c in 1 2 3; do node "$s-core-$c" $((10 + c)) core; done
        node "$s-meta" 21 meta
    done
    echo "[nfs]"
    echo "port = 2049"
    echo "portmapper = false"
    echo "allowed_clients = [\"127.0.0.0/8\"]"
    echo "no_root_squash = [\"127.0.0.0/8\"]"
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
chmod 600 "$CONFIG" # it holds the cluster secret
for s in $SITES; do
    ACCESS="$ACCESS $s-access"
    for c in 1 2 3; do CORES="$CORES $s-core-$c"; done
done
[ -e "$RUN_DIR/tls/ca.crt" ] || "$GEONFS" cert init --dir "$RUN_DIR/tls" > /dev/null ||
    fail "cannot make the cluster CA"
"$GEONFS" check-config "$CONFIG" > /dev/null || fail "the generated configuration is invalid"
"$GEONFS" cert issue --replace --config "$CONFIG" > /dev/null ||
    fail "cannot issue the node certificates"

start() { # node
    "$GEONFS" run --config "$CONFIG" --node "$1" >> "$RUN_DIR/logs/$1.log" 2>&1 &
    echo $! > "$RUN_DIR/pids/$1"
}
running() { # node
    [ -e "$RUN_DIR/pids/$1" ] && kill -0 "$(cat "$RUN_DIR/pids/$1")" 2> /dev/null
}
stop_all() {
    if declare -F before_stop > /dev/null; then before_stop; fi
    for f in "$RUN_DIR"/pids/*; do
        [ -e "$f" ] && kill -TERM "$(cat "$f")" 2> /dev/null || true
    done
    wait 2> /dev/null || true
    # Whatever a restart left behind.
    pkill -KILL -f -- "--config $CONFIG" 2> /dev/null || true
}
trap stop_all EXIT

url() { # site [file]
    echo "nfs://127.$(site_net "$1").0.1/geonfs${2:+/$2}?nfsport=2049&mountport=2049"
}

# Polls (never sleeps as synchronisation) until site $1's export lists.
wait_export() { # site deadline-seconds
    local deadline=$((SECONDS + $2))
    until nfs-ls "$(url "$1")" > /dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || fail "site $1's export did not answer within $2 s"
        sleep 0.5
    done
}

# The sum of metric $2 on node $1's /metrics (0 when it has none).
metric() { # node metric
    local host
    host=$(awk -v name="$1" '$1 == "name" && $3 == "\"" name "\"" {found = 1} found && $1 == "metrics_address" {gsub(/"/, "", $3); print $3; exit}' "$CONFIG")
    curl -sf "http://$host/metrics" | awk -v m="$2" '$1 == m || index($1, m "{") == 1 {sum += $2} END {print sum + 0}'
}

# Starts every node (meta voters first) and waits until every site's
# export answers.
start_cluster() {
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
}
