#!/usr/bin/env bash
# Proxy benchmark: this gateway's TCP forwarding against HAProxy (tcp mode) and
# nginx `stream`, all in front of the same backends on 127.0.0.1, in one run.
#
#   sudo scripts/bench-proxy.sh                    # 5 runs, about 9 minutes
#   RUNS=3 PROXIES="gateway haproxy" sudo -E scripts/bench-proxy.sh
#
# Environment:
#   RUNS          runs (default 5); every run starts each proxy afresh and measures
#                 all four figures on it; the order of the proxies rotates per run
#   PROXIES       any of: gateway haproxy nginx (default: all three; haproxy is the
#                 reference every ratio is taken against, so keep it in)
#   BASE_PORT     ports used: BASE_PORT+1..+3 backends, +11..+15 gateway, +21..+23
#                 haproxy, +31..+33 nginx (default 23300; all on 127.0.0.1)
#   IDLE_CONNS    idle connections for the memory figure (default 10000, lowered to
#                 what the open-files hard limit allows: the proxy needs 2 per connection)
#   PIN           1 (default): proxy on CPU 1, load generators and backends on CPU 0;
#                 0: no pinning
#   OUT           markdown file to update (default docs/benchmarks.md; "-" = none).
#                 Only the part between the bench-proxy markers is replaced.
#   GATEWAY_BIN   use this binary instead of building target/release/gateway
#   FIGURES       which figures to measure, any of: memory throughput conn latency
#                 chain (default: all five)
#   IPERF_SECS    seconds measured per throughput figure (default 4)
#   WRK_SECS      seconds of the conn/s figure (default 5)
#   LAT_SECS      length of one latency slice in seconds (default 3)
#   LAT_SLICES    latency slices per proxy (default 20)
#   KEEP_WORK     keep the work directory (configs, logs, raw outputs)
#   RESULTS_FROM  measure nothing; rebuild the report from the result lines an
#                 earlier run printed on stderr (`scripts/bench-proxy.sh 2>run.log`)
#
# Figures, per proxy and run unless said otherwise:
#   throughput  iperf3 -c through the proxy to an iperf3 server: 2 parallel streams,
#               4 s measured after 1 s omitted; received bits/s
#   conn/s      wrk -t1 -c50 -H "Connection: close" for 5 s against nginx serving a
#               16-byte file: every request is a new client connection and a new
#               backend connection; requests/s = connections/s
#   latency     (not per run) all proxies up at once; LAT_SLICES rounds, each giving
#               every proxy (and the direct path) in turn LAT_SECS s of wrk -t1 -c10
#               on keep-alive connections, each connection pausing 5 ms before
#               every request (wrk's Lua delay() hook): a fixed, moderate offered load
#               of about 10 x 1000/5 = 2000 requests/s. wrk2 is not in Debian; this is
#               wrk's own latency histogram (send of a request to end of its
#               response). Interleaving makes every proxy see the same machine over
#               the same minutes (a noisy neighbour hits all, not one); p50/p90/p99
#               come from each proxy's histograms of all slices pooled (about 100,000
#               requests each), and the per-slice p99s show the spread
#   chain       (gateway only) the throughput figure through a one-hop HTTP chain:
#               iperf3 -> gateway tcp service whose handler.chain has one hop, the
#               gateway's own http proxy (CONNECT) -> iperf3 server; two gateway
#               relays. Its ratio is taken against HAProxy's direct (one relay)
#               throughput of the same run: a stated baseline, not a like-for-like
#   memory      a Python client opens IDLE_CONNS connections through the proxy (paced
#               so no accept queue overflows) to a Python backend that accepts and
#               holds them; no byte is sent. Proxy RSS (VmRSS in /proc/PID/status,
#               summed over its processes) on the fresh process before, and once all
#               connections reached the backend, after; (after - before) / count
#
# Fairness: HAProxy runs `nbthread 1`, nginx `worker_processes 1`. With PIN=1 every
# proxy is confined to CPU 1 with taskset, so the gateway's default tokio runtime
# (one worker per available CPU) has 1 worker thread too; load generators and
# backends share CPU 0. Thread counts are recorded in the report. HAProxy gets
# `option splice-auto` (its own zero-copy path); nginx stream has none.
#
# The packages' own services are never used: every daemon here runs from a config
# file in a private work directory, on 127.0.0.1 high ports, and an EXIT trap ends
# each process this script started (by its process group).
set -euo pipefail

RUNS=${RUNS:-5}
PROXIES=${PROXIES:-"gateway haproxy nginx"}
BASE_PORT=${BASE_PORT:-23300}
PIN=${PIN:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/docs/benchmarks.md}
IPERF_SECS=${IPERF_SECS:-4}
WRK_SECS=${WRK_SECS:-5}
LAT_SECS=${LAT_SECS:-3}
LAT_SLICES=${LAT_SLICES:-20}
FIGURES=${FIGURES:-"memory throughput conn latency chain"}
want() { [[ " $FIGURES " == *" $1 "* ]]; }

if [ "$(id -u)" -ne 0 ]; then
    echo "bench-proxy.sh: run as root (it may install packages; daemons run as root)" >&2
    exit 1
fi
# The real interpreter, not a version-manager shim.
PY=$(python3 -c 'import sys; print(sys.executable)')

WORK=$(mktemp -d /tmp/bench-proxy.XXXXXX)
chmod 755 "$WORK" # nginx's workers (user nobody) serve the backend file from here
PGIDS=()
cleanup() {
    local g
    for g in "${PGIDS[@]}"; do kill -TERM -- "-$g" 2>/dev/null || true; done
    sleep 0.3
    for g in "${PGIDS[@]}"; do kill -KILL -- "-$g" 2>/dev/null || true; done
    if [ -n "${KEEP_WORK:-}" ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${RESULTS_FROM:-}" ]; then
    # Install what is missing without letting the packages start their services
    # (nginx would take :80, haproxy its default config): a policy-rc.d that
    # forbids starts, removed again afterwards unless one was there already.
    missing=()
    for t in haproxy:haproxy nginx:nginx iperf3:iperf3 wrk:wrk; do
        command -v "${t%%:*}" >/dev/null || missing+=("${t#*:}")
    done
    # Debian builds nginx's stream module as a separate package.
    if ! command -v nginx >/dev/null || { nginx -V 2>&1 | grep -q -- --with-stream=dynamic &&
        [ ! -e /usr/lib/nginx/modules/ngx_stream_module.so ]; }; then
        missing+=(libnginx-mod-stream)
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        own_policy=
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
            chmod +x /usr/sbin/policy-rc.d
            own_policy=1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        [ -n "$own_policy" ] && rm -f /usr/sbin/policy-rc.d
    fi
    # Should a service manager have started them anyway, stop the packages' own units.
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        systemctl stop nginx haproxy iperf3 2>/dev/null || true
    fi
    for t in haproxy nginx iperf3 wrk taskset; do
        command -v "$t" >/dev/null || { echo "bench-proxy.sh: $t missing" >&2; exit 1; }
    done
fi

# Open files: the proxy holds two descriptors per idle connection. Without
# CAP_SYS_RESOURCE the hard limit cannot be raised, so the count adapts to it.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
HARD=$(ulimit -Hn)
[ "$HARD" = unlimited ] && HARD=1048576
FIT=$(( (HARD - 300) / 2 / 100 * 100 ))
IDLE_CONNS=${IDLE_CONNS:-10000}
if [ "$IDLE_CONNS" -gt "$FIT" ]; then
    echo "bench-proxy.sh: open-files hard limit $HARD allows $FIT idle proxied connections, not $IDLE_CONNS; using $FIT" >&2
    IDLE_CONNS=$FIT
fi

if [ "$PIN" = 1 ]; then
    if [ "$(nproc)" -lt 2 ]; then echo "bench-proxy.sh: PIN=1 needs 2 CPUs; use PIN=0" >&2; exit 1; fi
    LOAD="taskset -c 0"
    PROXY_CPU="taskset -c 1"
else
    LOAD=""
    PROXY_CPU=""
fi

port() { # port NAME OFFSET
    case $1 in
        backend) echo $((BASE_PORT + $2)) ;;
        gateway) echo $((BASE_PORT + 10 + $2)) ;;
        haproxy) echo $((BASE_PORT + 20 + $2)) ;;
        nginx) echo $((BASE_PORT + 30 + $2)) ;;
        direct) echo $((BASE_PORT + $2)) ;;
    esac
}

# start NAME CMD...: run CMD in its own process group (ended by the EXIT trap);
# its pid (= its process group id) in STARTED.
STARTED=
start() {
    local name=$1
    shift
    setsid "$@" >"$WORK/$name.out" 2>&1 </dev/null &
    STARTED=$!
    PGIDS+=("$STARTED")
}
stop() { # stop PID: the whole group, politely then not
    kill -TERM -- "-$1" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.05; done
    kill -KILL -- "-$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
wait_port() { # wait_port PORT: until something listens on 127.0.0.1:PORT (5 s)
    for _ in $(seq 100); do
        if "$PY" -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2).close()' "$1" 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    echo "bench-proxy.sh: nothing listens on 127.0.0.1:$1" >&2
    return 1
}
# percentiles: "proxy microseconds count" lines (wrk histograms) on stdin ->
# "proxy p50_us|p90_us|p99_us|samples value" per proxy.
percentiles() {
    "$PY" -c '
import collections, sys
h = collections.defaultdict(collections.Counter)
for line in sys.stdin:
    p, v, c = line.split()
    h[p][int(v)] += int(c)
for p, hist in h.items():
    n, seen, out = sum(hist.values()), 0, {}
    for v in sorted(hist):
        seen += hist[v]
        for q in (50, 90, 99):
            if q not in out and seen >= q / 100 * n:
                out[q] = v
    for q in (50, 90, 99):
        print(p, f"p{q}_us", out[q])
    print(p, "samples", n)
'
}
pids_of() { # the process and its children (nginx: master and worker)
    echo "$1" $(pgrep -P "$1" || true)
}

cat >"$WORK/delay.lua" <<'EOF'
-- Each connection waits 5 ms before each request: with -c10 about 2000 requests/s.
function delay()
    return 5
end
-- At the end, the whole latency histogram ("microseconds count" per line) to
-- $HIST_OUT, so that slices can be pooled, and the failed requests last.
function done(summary, latency, requests)
    local f = io.open(os.getenv("HIST_OUT"), "w")
    for i = 1, #latency do
        local v, c = latency(i)
        f:write(string.format("%d %d\n", v, c))
    end
    local e = summary.errors
    f:write(string.format("errors %d\n", e.connect + e.read + e.write + e.timeout + e.status))
    f:close()
end
EOF

cat >"$WORK/hold.py" <<'EOF'
"""hold.py PROXY_PORT BACKEND_PORT COUNT PID...

Open COUNT idle connections to 127.0.0.1:PROXY_PORT; a child process listens on
127.0.0.1:BACKEND_PORT and accepts and holds what the proxy forwards. Prints
"before_kb after_kb established" where the RSS figures are the sum of VmRSS over
PID... (the proxy's processes) before the first connection and once COUNT
connections reached the backend (plus a settling second). Client and backend are
two processes because each needs COUNT descriptors."""
import multiprocessing as mp, os, resource, socket, sys, time

proxy_port, backend_port, count = (int(a) for a in sys.argv[1:4])
pids = sys.argv[4:]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

def rss_kb():
    total = 0
    for p in pids:
        with open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total

def backend(accepted, ready):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", backend_port))
    s.listen(4096)
    ready.set()
    held = []
    while True:
        c, _ = s.accept()
        held.append(c)
        accepted.value = len(held)

accepted, ready = mp.Value("i", 0, lock=False), mp.Event()
child = mp.Process(target=backend, args=(accepted, ready), daemon=True)
child.start()
ready.wait(5)
time.sleep(0.5)
before = rss_kb()
conns = []
deadline = time.monotonic() + 120
try:
    for i in range(count):
        # Pace on the backend's count: at most 512 connections in flight through the
        # proxy, far below every accept queue, so no SYN is dropped and retried.
        while i - accepted.value > 512 and time.monotonic() < deadline:
            time.sleep(0.001)
        conns.append(socket.create_connection(("127.0.0.1", proxy_port), timeout=10))
    while accepted.value < count and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(1.0)
    after = rss_kb()
    # Still open end to end? A closed one reads EOF (or a reset) at once.
    alive = 0
    for c in conns:
        c.setblocking(False)
        try:
            alive += c.recv(1) != b""
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    print(before, after, min(alive, accepted.value))
finally:
    for c in conns:
        c.close()
    child.terminate()
EOF

# The HTTP backend: nginx serving a 16-byte file; own config, own port.
mkdir -p "$WORK/www" "$WORK/tmp"
printf 'hello, backend!\n' >"$WORK/www/x"
cat >"$WORK/backend-nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/backend-nginx.pid;
error_log $WORK/backend-nginx.err warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/tmp/body;
    proxy_temp_path $WORK/tmp/proxy;
    fastcgi_temp_path $WORK/tmp/fastcgi;
    uwsgi_temp_path $WORK/tmp/uwsgi;
    scgi_temp_path $WORK/tmp/scgi;
    server {
        listen 127.0.0.1:$(port backend 2) backlog=4096;
        location / { root $WORK/www; }
    }
}
EOF

write_configs() {
    local b1 b2 b3
    b1=$(port backend 1) b2=$(port backend 2) b3=$(port backend 3)
    cat >"$WORK/gateway.yml" <<EOF
# No floating_ip section: no VIP, no privileges needed; just the services.
services:
- {name: iperf, addr: "127.0.0.1:$(port gateway 1)", handler: {type: tcp}, listener: {type: tcp}, forwarder: {nodes: [{name: b, addr: "127.0.0.1:$b1"}]}}
- {name: http, addr: "127.0.0.1:$(port gateway 2)", handler: {type: tcp}, listener: {type: tcp}, forwarder: {nodes: [{name: b, addr: "127.0.0.1:$b2"}]}}
- {name: hold, addr: "127.0.0.1:$(port gateway 3)", handler: {type: tcp}, listener: {type: tcp}, forwarder: {nodes: [{name: b, addr: "127.0.0.1:$b3"}]}}
# The chain figure: iperf through a one-hop HTTP chain whose hop is this gateway's
# own http proxy.
- {name: chained, addr: "127.0.0.1:$(port gateway 4)", handler: {type: tcp, chain: one-hop}, listener: {type: tcp}, forwarder: {nodes: [{name: b, addr: "127.0.0.1:$b1"}]}}
- {name: hop, addr: "127.0.0.1:$(port gateway 5)", handler: {type: http}, listener: {type: tcp}}
chains:
- {name: one-hop, hops: [{name: hop-0, nodes: [{name: http-hop, addr: "127.0.0.1:$(port gateway 5)", connector: {type: http}, dialer: {type: tcp}}]}]}
EOF
    cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    # HAProxy refuses to start if maxconn, plus two descriptors per splice pipe
    # (maxpipes, default maxconn/4), does not fit the open-files limit.
    ulimit-n $HARD
    maxconn $((IDLE_CONNS + 50))
    maxpipes 64
defaults
    mode tcp
    maxconn $((IDLE_CONNS + 50))
    option splice-auto
    timeout connect 5s
    timeout client 10m
    timeout server 10m
listen iperf
    bind 127.0.0.1:$(port haproxy 1)
    server b 127.0.0.1:$b1
listen http
    bind 127.0.0.1:$(port haproxy 2)
    server b 127.0.0.1:$b2
listen hold
    bind 127.0.0.1:$(port haproxy 3)
    server b 127.0.0.1:$b3
EOF
    local load=
    if nginx -V 2>&1 | grep -q -- --with-stream=dynamic; then
        load="load_module /usr/lib/nginx/modules/ngx_stream_module.so;"
    fi
    cat >"$WORK/nginx.conf" <<EOF
$load
worker_processes 1;
worker_rlimit_nofile $HARD;
daemon off;
pid $WORK/nginx.pid;
error_log $WORK/nginx.err warn;
events { worker_connections $((2 * IDLE_CONNS + 50)); }
stream {
    server { listen 127.0.0.1:$(port nginx 1) backlog=4096; proxy_pass 127.0.0.1:$b1; }
    server { listen 127.0.0.1:$(port nginx 2) backlog=4096; proxy_pass 127.0.0.1:$b2; }
    server { listen 127.0.0.1:$(port nginx 3) backlog=4096; proxy_pass 127.0.0.1:$b3; }
}
EOF
}

start_proxy() { # start_proxy NAME: pid in STARTED
    case $1 in
        gateway) start gateway $PROXY_CPU "$GATEWAY_BIN" -config "$WORK/gateway.yml" ;;
        haproxy) start haproxy $PROXY_CPU haproxy -db -f "$WORK/haproxy.cfg" ;;
        nginx) start nginx $PROXY_CPU nginx -e "$WORK/nginx.err" -c "$WORK/nginx.conf" ;;
    esac
}

result() { # result RUN PROXY METRIC VALUE
    echo "$1 $2 $3 $4" >>"$WORK/results"
    echo "result: $1 $2 $3 $4" >&2
}

# measure RUN PROXY [PID]: every figure through PROXY (direct: no proxy, no memory)
measure() {
    local run=$1 p=$2 pid=${3:-} out v
    if [ -n "$pid" ] && want memory; then
        out=$($LOAD "$PY" "$WORK/hold.py" "$(port "$p" 3)" "$(port backend 3)" "$IDLE_CONNS" $(pids_of "$pid"))
        read -r before after est <<<"$out"
        result "$run" "$p" idle_established "$est"
        if [ "$est" -ge $((IDLE_CONNS * 99 / 100)) ]; then
            result "$run" "$p" mem_bytes_per_conn $(( (after - before) * 1024 / est ))
        else
            echo "bench-proxy.sh: $p held only $est of $IDLE_CONNS idle connections" >&2
        fi
        sleep 1 # let the proxy tear the held connections down
    fi
    if want throughput; then
    v=$($LOAD iperf3 -c 127.0.0.1 -p "$(port "$p" 1)" -P 2 -O 1 -t "$IPERF_SECS" -J |
        "$PY" -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9, 3))')
    result "$run" "$p" gbit_s "$v"
    fi
    if [ "$p" = gateway ] && want chain; then
    v=$($LOAD iperf3 -c 127.0.0.1 -p "$(port gateway 4)" -P 2 -O 1 -t "$IPERF_SECS" -J |
        "$PY" -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9, 3))')
    result "$run" "$p" chain_gbit_s "$v"
    fi
    if want conn; then
    $LOAD wrk -t1 -c50 -d"${WRK_SECS}s" -H "Connection: close" "http://127.0.0.1:$(port "$p" 2)/x" >"$WORK/wrk-conn-$run-$p.txt"
    result "$run" "$p" conn_s "$(awk '/^Requests\/sec/ {print $2}' "$WORK/wrk-conn-$run-$p.txt")"
    # Socket errors and non-2xx answers both count: either means a broken exchange.
    result "$run" "$p" conn_errors "$(awk '/Socket errors/ {gsub(",", ""); for (i=4;i<=NF;i+=2) e+=$i} /Non-2xx/ {e+=$NF} END {print e+0}' "$WORK/wrk-conn-$run-$p.txt")"
    fi
    if [ -n "$pid" ]; then
        result "$run" "$p" threads "$(for q in $(pids_of "$pid"); do ls "/proc/$q/task"; done | wc -l)"
    fi
}

if [ -n "${RESULTS_FROM:-}" ]; then
    sed -n 's/^result: //p' "$RESULTS_FROM" >"$WORK/results"
    GATEWAY_DESC=$(sed -n 's/^gateway-build: //p' "$RESULTS_FROM" | tail -1)
    ENV_DESC=$(sed -n 's/^environment: //p' "$RESULTS_FROM" | tail -1)
else
    if [ -z "${GATEWAY_BIN:-}" ]; then
        (cd "$ROOT" && cargo build --release --quiet)
        GATEWAY_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/gateway
    fi
    GATEWAY_DESC="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo '+changes')"
    version() { "$@" 2>&1 | head -1 || true; } # wrk -v exits 1
    ENV_DESC="$(date -u '+%Y-%m-%d %H:%M UTC'); kernel $(uname -r), $(nproc) CPUs; load average at start $(cut -d' ' -f1-3 /proc/loadavg); $(version haproxy -v | cut -d' ' -f1-3); $(version nginx -v | cut -d' ' -f3); $(version iperf3 -v | cut -d' ' -f1-2); $(version wrk -v | cut -d' ' -f1-2); idle connections $IDLE_CONNS; PIN=$PIN"
    echo "gateway-build: $GATEWAY_DESC" >&2
    echo "environment: $ENV_DESC" >&2
    write_configs
    start iperf3 $LOAD iperf3 -s -B 127.0.0.1 -p "$(port backend 1)"
    start backend-nginx $LOAD nginx -e "$WORK/backend-nginx.err" -c "$WORK/backend-nginx.conf"
    wait_port "$(port backend 1)"
    wait_port "$(port backend 2)"
    # shellcheck disable=SC2206
    order=($PROXIES)
    for run in $(seq "$RUNS"); do
        echo "run $run/$RUNS: direct ${order[*]}" >&2
        measure "$run" direct
        for p in "${order[@]}"; do
            start_proxy "$p"
            pid=$STARTED
            wait_port "$(port "$p" 2)"
            measure "$run" "$p" "$pid"
            stop "$pid"
        done
        order=("${order[@]:1}" "${order[0]}")
    done
    if want latency; then
        # Latency: every proxy up at once (an idle one costs nothing), the load
        # moved from one to the next in short slices, so that all of them see the
        # same machine over the same minutes; each figure from the histogram of
        # all of a proxy's slices pooled.
        lat_pids=()
        for p in $PROXIES; do
            start_proxy "$p"
            lat_pids+=("$STARTED")
            wait_port "$(port "$p" 2)"
        done
        # shellcheck disable=SC2206
        order=(direct $PROXIES)
        for slice in $(seq "$LAT_SLICES"); do
            echo "latency slice $slice/$LAT_SLICES: ${order[*]}" >&2
            for p in "${order[@]}"; do
                hist="$WORK/hist-$slice-$p.txt"
                HIST_OUT=$hist $LOAD wrk -t1 -c10 -d"${LAT_SECS}s" -s "$WORK/delay.lua" \
                    "http://127.0.0.1:$(port "$p" 2)/x" >"$WORK/wrk-lat-$slice-$p.txt"
                result "$slice" "$p" lat_req_s "$(awk '/^Requests\/sec/ {print $2}' "$WORK/wrk-lat-$slice-$p.txt")"
                result "$slice" "$p" lat_errors "$(awk '$1 == "errors" {print $2}' "$hist")"
                awk -v p="$p" '$1 != "errors" {print p, $1, $2}' "$hist" >>"$WORK/hist-all"
                awk -v p="$p" '$1 != "errors" {print p, $1, $2}' "$hist" | percentiles |
                    while read -r _ m v; do result "$slice" "$p" "$m" "$v"; done
            done
            order=("${order[@]:1}" "${order[0]}")
        done
        for g in "${lat_pids[@]}"; do stop "$g"; done
        percentiles <"$WORK/hist-all" | while read -r p m v; do result all "$p" "pooled_$m" "$v"; done
    fi
fi

# Report: min/median/max per figure, paired per-run ratios to HAProxy, targets.
LAT_SECS=$LAT_SECS LAT_SLICES=$LAT_SLICES "$PY" - "$WORK/results" "$OUT" "$GATEWAY_DESC" "$ENV_DESC" <<'EOF'
import collections, os, statistics, sys
results, out, gw_desc, env_desc = sys.argv[1:5]
val = collections.defaultdict(dict)  # (proxy, metric) -> {run: value}
for line in open(results):
    run, proxy, metric, v = line.split()
    val[(proxy, metric)][run] = float(v)
proxies = [p for p in ("direct", "gateway", "haproxy", "nginx") if any(k[0] == p for k in val)]
FIGS = [  # metric, label, unit, format, better
    ("gbit_s", "throughput", "Gbit/s", "{:.2f}", "higher"),
    ("conn_s", "new connections", "conn/s", "{:.0f}", "higher"),
    ("pooled_p99_us", "p99 latency, pooled", "µs", "{:.0f}", "lower"),
    ("mem_bytes_per_conn", "memory per idle connection", "bytes", "{:.0f}", "lower"),
]
# Shown for context (the latency distribution below its tail); no target.
CONTEXT = [
    ("p99_us", "p99 latency per slice", "µs", "{:.0f}", "lower"),
    ("pooled_p50_us", "median latency, pooled", "µs", "{:.0f}", "lower"),
    ("pooled_p90_us", "p90 latency, pooled", "µs", "{:.0f}", "lower"),
]

def mmm(xs, fmt):
    if not xs:
        return "–", "–", "–"
    return tuple(fmt.format(x) for x in (min(xs), statistics.median(xs), max(xs)))

def ratios(p, m):
    a, h = val.get((p, m), {}), val.get(("haproxy", m), {})
    return [a[r] / h[r] for r in sorted(a) if r in h and h[r] > 0]

PER_RUN = {"gbit_s", "chain_gbit_s", "conn_s", "conn_errors", "mem_bytes_per_conn", "idle_established", "threads"}
runs = len({r for (p, m), d in val.items() if m in PER_RUN for r in d})
slices = len({r for (p, m), d in val.items() if m == "p99_us" for r in d})
L = []
L.append("<!-- bench-proxy:begin (generated by scripts/bench-proxy.sh; edits here are overwritten) -->")
L.append("# Proxy benchmark")
L.append("")
L.append("Produced by `scripts/bench-proxy.sh` (run as root: `sudo scripts/bench-proxy.sh`).")
L.append("Re-running it replaces only this part of the file.")
L.append("")
L.append("## Method")
L.append("")
L.append("Three TCP proxies in front of the same backends, everything on 127.0.0.1. For")
L.append("throughput, connections/s and memory, one proxy runs at a time, started afresh")
L.append("for every run, the order rotating from run to run. Per proxy and run:")
L.append("")
L.append("- **throughput**: `iperf3 -c` through the proxy to an iperf3 server, 2 parallel")
L.append("  streams, 4 s measured after 1 s omitted, bits/s received.")
L.append("- **new connections/s**: `wrk -t1 -c50 -H \"Connection: close\"` for 5 s against")
L.append("  nginx serving a 16-byte file: each request is one client and one backend")
L.append("  connection.")
L.append(f"- **p99 latency** (not per run): all proxies up at once; {os.environ.get('LAT_SLICES', '20')} rounds in each of which")
L.append(f"  every proxy and the direct path in turn get {os.environ.get('LAT_SECS', '3')} s of `wrk -t1 -c10` on keep-alive")
L.append("  connections, each waiting 5 ms before every request (wrk's Lua `delay()`), i.e.")
L.append("  a fixed, moderate offered load of about 2,000 requests/s (wrk2 is not packaged")
L.append("  by Debian). Interleaving gives every proxy the same machine over the same")
L.append("  minutes, so a noisy moment hits all of them instead of one. The figure is the")
L.append("  99th percentile of wrk's request-to-response latency over all of a proxy's")
L.append("  slices pooled; the per-slice p99s (min / median / max) show the spread.")
L.append("- **memory per idle connection**: a Python client opens the connections through")
L.append("  the proxy (paced: at most 512 not yet at the backend) to a Python backend")
L.append("  that accepts and holds them; nothing is sent. The proxy's RSS (VmRSS, summed")
L.append("  over its processes) on the fresh process before, and after all reached the")
L.append("  backend plus one second; the difference over the count.")
L.append("")
L.append("Setup, meant to be even: HAProxy `nbthread 1` with `option splice-auto` (its")
L.append("zero-copy path); nginx `worker_processes 1` (stream has no splice); the gateway")
L.append("with its defaults (a `tcp` handler/listener service, no floating IP). Every proxy")
L.append("is pinned to CPU 1 with `taskset`, so the gateway's tokio runtime, which sizes")
L.append("itself to the CPUs it may use, runs 1 worker thread; iperf3, wrk, the backends")
L.append("and the idle-connection client are pinned to CPU 0. The **direct** row is the")
L.append("same load with no proxy: the ceiling the load generators on one CPU allow.")
L.append("")
L.append("## Environment")
L.append("")
L.append(f"- {env_desc}")
L.append(f"- gateway: commit {gw_desc}, release build")
thr = {p: sorted({int(v) for v in val.get((p, 'threads'), {}).values()}) for p in proxies}
L.append("- threads per proxy (all processes): " + ", ".join(f"{p} {'/'.join(map(str, t))}" for p, t in thr.items() if t))
est = {p: sorted({int(v) for v in val.get((p, 'idle_established'), {}).values()}) for p in proxies}
if any(est.values()):
    L.append("- idle connections held end to end: " + ", ".join(f"{p} {'/'.join(map(str, e))}" for p, e in est.items() if e))
errs = {p: sum(val.get((p, 'conn_errors'), {}).values()) + sum(val.get((p, 'lat_errors'), {}).values()) for p in proxies}
L.append("- failed requests in the wrk tests, socket errors or non-2xx answers (all runs): " + ", ".join(f"{p} {int(e)}" for p, e in errs.items()))
rates = {p: statistics.median(val[(p, 'lat_req_s')].values()) for p in proxies if (p, 'lat_req_s') in val}
L.append("- achieved rate in the latency test (median over slices): " + ", ".join(f"{p} {r:.0f} req/s" for p, r in rates.items()))
samples = {p: int(val[(p, 'pooled_samples')]['all']) for p in proxies if (p, 'pooled_samples') in val}
L.append("- requests pooled per proxy in the latency test: " + ", ".join(f"{p} {n}" for p, n in samples.items()))
L.append(f"- runs: {runs}; latency slices: {slices}")
L.append("")
L.append("## Results")
L.append("")
L.append("Absolute figures (min / median / max over the runs, or the latency slices) and,")
L.append("per run or slice, the ratio to HAProxy measured in the same run or round (min /")
L.append("median / max of those ratios). A pooled figure is one number per proxy.")
L.append("")
L.append("| figure | proxy | min | median | max | ratio to HAProxy: min | median | max |")
L.append("|---|---|---|---|---|---|---|---|")
for m, label, unit, fmt, better in FIGS + CONTEXT:
    for p in proxies:
        xs = list(val.get((p, m), {}).values())
        if not xs:
            continue
        a = mmm(xs, fmt)
        rs = ratios(p, m) if p != "haproxy" else []
        r = mmm(rs, "{:.2f}") if rs else (("1",) * 3 if p == "haproxy" else ("–",) * 3)
        L.append(f"| {label} ({unit}, {better} is better) | {p} | {a[0]} | {a[1]} | {a[2]} | {r[0]} | {r[1]} | {r[2]} |")
chain = list(val.get(("gateway", "chain_gbit_s"), {}).values())
if chain:
    a = mmm(chain, "{:.2f}")
    g, h = val.get(("gateway", "chain_gbit_s"), {}), val.get(("haproxy", "gbit_s"), {})
    rs = [g[r] / h[r] for r in sorted(g) if r in h and h[r] > 0]
    r = mmm(rs, "{:.2f}") if rs else ("–",) * 3
    L.append("")
    L.append("Through a one-hop HTTP chain (gateway `tcp` service, `handler.chain` with one")
    L.append("`http` hop that is the gateway's own `http` proxy, so two gateway relays), the")
    L.append("ratio against HAProxy's *direct* throughput of the same run (one relay): a")
    L.append("stated baseline, not a like-for-like comparison.")
    L.append("")
    L.append("| figure | proxy | min | median | max | ratio to HAProxy direct: min | median | max |")
    L.append("|---|---|---|---|---|---|---|---|")
    L.append(f"| throughput through a one-hop HTTP chain (Gbit/s, higher is better) | gateway | {a[0]} | {a[1]} | {a[2]} | {r[0]} | {r[1]} | {r[2]} |")
L.append("")
L.append("## Targets (issue #3)")
L.append("")
L.append("| target | gateway / HAProxy: median of per-run ratios (pooled: the one ratio) | worst run (pooled: worst slice) | |")
L.append("|---|---|---|---|")
for m, label, unit, fmt, better in FIGS:
    rs = ratios("gateway", m)
    if not rs:
        continue
    med = statistics.median(rs)
    # A pooled figure has one ratio; its worst case is the worst slice.
    spread = ratios("gateway", m[len("pooled_"):]) if m.startswith("pooled_") else rs
    spread = spread or rs
    worst = min(spread) if better == "higher" else max(spread)
    want = "≥ 1.0" if better == "higher" else "≤ 1.0"
    ok = med >= 1.0 if better == "higher" else med <= 1.0
    L.append(f"| {label} {want}× HAProxy | {med:.2f} | {worst:.2f} | {'met' if ok else 'not met'} |")
L.append("")
L.append("<!-- bench-proxy:end -->")
section = "\n".join(L) + "\n"
print(section)
if out != "-":
    begin, end = "<!-- bench-proxy:begin", "<!-- bench-proxy:end -->"
    doc = open(out).read() if os.path.exists(out) else ""
    i = doc.find(begin)
    if i >= 0:
        j = doc.find(end, i)
        tail = doc[j + len(end):].lstrip("\n") if j >= 0 else ""
        doc = doc[:i].rstrip("\n") + "\n\n" + section + ("\n" + tail if tail else "")
    else:
        doc = doc.rstrip("\n") + ("\n\n" if doc else "") + section
    with open(out, "w") as f:
        f.write(doc)
EOF
