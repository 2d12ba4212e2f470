#!/usr/bin/env bash
# Failover benchmark: how long the service on the VIP is gone, seen from a client,
# when the master dies — for `gateway` and, in the same run, for keepalived.
#
#   sudo scripts/bench-failover.sh                 # everything, 10 trials each
#   TRIALS=20 SYSTEMS="gateway" MODES="death" sudo -E scripts/bench-failover.sh
#
# Environment:
#   TRIALS      trials per system and failure mode (default 10)
#   SYSTEMS     any of: gateway keepalived keepalived-v3 (default: all three)
#   MODES       any of: death crash stop (default: all three)
#   OUT         markdown report to write (default docs/benchmarks.md; "-" = none)
#   GATEWAY_BIN use this binary instead of building target/release/gateway
#   KEEP_WORK   if set, keep the work directory (configs, daemon logs) for debugging
#   RESULTS_FROM  run no trials; rebuild the report from the per-trial lines an
#               earlier run printed on stderr (`scripts/bench-failover.sh 2>run.log`)
#
# The lab is the one the Rust tests build (tests/common/lab.rs), made here with
# plain `ip netns`: a bridge in its own namespace, nodes n1 and n2, a client and a
# backend, each joined to the bridge by a veth pair, in a private 10.X.Y.0/24. Every
# trial builds a fresh lab and tears it down; an EXIT trap removes whatever is left.
# The host's own network namespace is never touched.
#
# What is measured. A prober in the client opens a TCP connection to VIP:8080 every
# 5 ms (each attempt: 100 ms to connect, 100 ms to read; attempts overlap). The
# backend answers "backend <address the connection came from>", so the prober knows
# which node forwarded it. Once the service answers steadily through the master,
# the prober itself starts the failure command (so both instants come from one
# monotonic clock) and reports the time until the first answer forwarded by the
# other node.
#
# Failure modes:
#   death  every process in the master's namespace SIGKILLed, then its link set down
#   crash  the failover daemon SIGKILLed (gateway; keepalived's processes), host up
#   stop   SIGTERM to the failover daemon (graceful stop)
#
# Systems, all fronting the same backend:
#   gateway        this project, release build, `floating_ip: {enabled: true}` and
#                  nothing else (all timing defaults), its own TCP forwarder on :8080
#   keepalived     Debian's keepalived, defaults: VRRPv2, advert_int 1, both nodes
#                  state BACKUP priority 100; the service is socat on :8080 in each
#                  node (`socat TCP-LISTEN:8080,fork,reuseaddr TCP:backend:80`)
#   keepalived-v3  the same with `vrrp_version 3` and `advert_int 0.1`
set -euo pipefail

TRIALS=${TRIALS:-10}
SYSTEMS=${SYSTEMS:-"gateway keepalived keepalived-v3"}
MODES=${MODES:-"death crash stop"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/docs/benchmarks.md}

if [ "$(id -u)" -ne 0 ]; then
    echo "bench-failover.sh: must run as root (network namespaces)" >&2
    exit 1
fi
for tool in ip python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool (scripts/ci-deps.sh installs it)" >&2; exit 1; }
done
case " $SYSTEMS " in *keepalived*)
    for tool in keepalived socat; do
        command -v "$tool" >/dev/null || { echo "missing $tool (scripts/ci-deps.sh installs it)" >&2; exit 1; }
    done ;;
esac
# The real interpreter, not a version-manager shim: it starts faster.
PY=$(python3 -c 'import sys; print(sys.executable)')

if [[ " $SYSTEMS " == *" gateway "* ]] && [ -z "${RESULTS_FROM:-}" ]; then
    if [ -z "${GATEWAY_BIN:-}" ]; then
        echo "building the release binary..." >&2
        (cd "$ROOT" && cargo build --release --bin gateway >&2)
        GATEWAY_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/gateway
    fi
    [ -x "$GATEWAY_BIN" ] || { echo "no binary at $GATEWAY_BIN" >&2; exit 1; }
fi

WORK=$(mktemp -d /tmp/bench-failover.XXXXXX)
cp /proc/loadavg "$WORK/loadavg-start"
P="gb$$"                                   # namespace prefix, unique to this run
NET="10.$((1 + ($$ / 254) % 254)).$((1 + $$ % 254))"
VIP=$NET.234
HOSTS="n1 n2 client backend"
ip_of() {
    case $1 in n1) echo "$NET.1" ;; n2) echo "$NET.2" ;; client) echo "$NET.100" ;; backend) echo "$NET.200" ;; esac
}

lab_down() {
    local h n pid
    for h in $HOSTS sw; do
        n=$P-$h
        [ -e "/run/netns/$n" ] || continue
        for pid in $(ip netns pids "$n" 2>/dev/null); do
            [ "$pid" != "$$" ] && kill -9 "$pid" 2>/dev/null || true
        done
    done
    for h in $HOSTS sw; do
        n=$P-$h
        [ -e "/run/netns/$n" ] || continue
        for _ in $(seq 50); do [ -z "$(ip netns pids "$n" 2>/dev/null)" ] && break; sleep 0.02; done
        ip netns del "$n" 2>/dev/null || true
    done
    # keepalived refuses to start over a pid file whose pid is alive again.
    rm -f "$WORK"/*.pid
}
cleanup() {
    lab_down
    if [ -n "${KEEP_WORK:-}" ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The backend and the prober.
cat >"$WORK/backend.py" <<'EOF'
import socketserver, sys

class Answer(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(f"backend {self.client_address[0]}\n".encode())

class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128

Server((sys.argv[1], int(sys.argv[2])), Answer).serve_forever()
EOF

cat >"$WORK/prober.py" <<'EOF'
"""prober.py VIP PORT OLD_IP FAIL_CMD: wait until VIP:PORT answers steadily through
OLD_IP, run FAIL_CMD, print the milliseconds until the first answer through another
node (or, if the backend only ever sees the VIP, the first answer after a failure)."""
import asyncio, sys, time

vip, port, old_ip, fail_cmd = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
EVERY, TIMEOUT, LIMIT = 0.005, 0.1, 30.0

async def attempt():
    start = time.monotonic()
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(vip, port), TIMEOUT)
        try:
            data = await asyncio.wait_for(r.read(200), TIMEOUT)
        finally:
            w.close()
        words = data.decode(errors="replace").split()
        if len(words) == 2 and words[0] == "backend":
            return start, time.monotonic(), words[1]
    except (OSError, asyncio.TimeoutError):
        pass
    return start, time.monotonic(), None

async def main():
    deadline = time.monotonic() + LIMIT
    streak = 0
    while streak < 20:
        if time.monotonic() > deadline:
            print("ERROR no steady answer through the master before the failure")
            return 2
        _, _, via = await attempt()
        streak = streak + 1 if via is not None else 0
        await asyncio.sleep(EVERY)
    ambiguous = via != old_ip
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_shell(fail_cmd)
    pending, first_fail = set(), None
    while time.monotonic() - t0 < LIMIT:
        pending.add(asyncio.create_task(attempt()))
        for task in [t for t in pending if t.done()]:
            pending.discard(task)
            start, end, served = task.result()
            if start < t0:
                continue
            if served is None:
                first_fail = first_fail or end
            elif served != via or (ambiguous and first_fail is not None):
                await proc.wait()
                gap = "none" if first_fail is None else f"{(first_fail - t0) * 1000:.1f}"
                print(f"OK {(end - t0) * 1000:.1f} first_failure_ms={gap} via={served}")
                return 0
        await asyncio.sleep(EVERY)
    await proc.wait()
    print(f"TIMEOUT no answer through the new master within {LIMIT:.0f} s")
    return 1

sys.exit(asyncio.run(main()))
EOF

lab_up() {
    local sw=$P-sw h
    ip netns add "$sw"
    ip -n "$sw" link set lo up
    ip -n "$sw" link add br0 type bridge
    ip -n "$sw" link set br0 up
    for h in $HOSTS; do
        ip netns add "$P-$h"
        ip -n "$sw" link add "v$h" type veth peer name eth0 netns "$P-$h"
        ip -n "$sw" link set "v$h" master br0 up
        ip -n "$P-$h" link set lo up
        ip -n "$P-$h" addr add "$(ip_of "$h")/24" dev eth0
        ip -n "$P-$h" link set eth0 up
    done
    ip netns exec "$P-backend" "$PY" "$WORK/backend.py" "$(ip_of backend)" 80 >/dev/null 2>&1 &
    for _ in $(seq 200); do
        ip netns exec "$P-client" bash -c "exec 3<>/dev/tcp/$(ip_of backend)/80" 2>/dev/null && return 0
        sleep 0.02
    done
    echo "backend did not come up" >&2
    return 1
}

# Who holds the VIP: prints the host names, one per line.
holders() {
    local h
    for h in n1 n2; do
        ip -n "$P-$h" -4 -o addr show 2>/dev/null | grep -q " $VIP/" && echo "$h"
    done
    return 0
}

# Wait until exactly one node has held the VIP for 2 s in a row; print it.
wait_master() {
    local since="" last="" now h
    local deadline=$(( $(date +%s) + 60 ))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        h=$(holders | tr '\n' ' ')
        now=$(date +%s%N)
        if [ "$h" = "n1 " ] || [ "$h" = "n2 " ]; then
            if [ "$h" != "$last" ]; then since=$now; last=$h; fi
            if [ $(( (now - since) / 1000000 )) -ge 2000 ]; then echo "${h% }"; return 0; fi
        else
            last=""
        fi
        sleep 0.05
    done
    return 1
}

start_gateway() {
    cat >"$WORK/gateway.yml" <<EOF
floating_ip:
  enabled: true
services:
- name: fwd
  addr: ":8080"
  handler: {type: tcp}
  listener: {type: tcp}
  forwarder:
    nodes:
    - {name: b1, addr: "$(ip_of backend):80"}
EOF
    local h
    for h in n1 n2; do
        ip netns exec "$P-$h" "$GATEWAY_BIN" -config "$WORK/gateway.yml" >>"$WORK/gateway-$h.log" 2>&1 &
        echo $! >"$WORK/daemon-$h.pid"
    done
}

start_keepalived() {
    local version=$1 advert=$2 h
    for h in n1 n2; do
        cat >"$WORK/keepalived-$h.conf" <<EOF
global_defs {
    router_id $h
    vrrp_version $version
}
vrrp_instance VI_1 {
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority 100
    advert_int $advert
    virtual_ipaddress {
        $VIP/24 dev eth0
    }
}
EOF
        ip netns exec "$P-$h" socat TCP-LISTEN:8080,fork,reuseaddr "TCP:$(ip_of backend):80" >/dev/null 2>&1 &
        ip netns exec "$P-$h" keepalived --dont-fork --log-console --vrrp \
            --use-file "$WORK/keepalived-$h.conf" \
            --pid "$WORK/keepalived-$h.pid" --vrrp_pid "$WORK/vrrp-$h.pid" \
            >>"$WORK/keepalived-$h.log" 2>&1 &
        echo $! >"$WORK/daemon-$h.pid"
    done
}

# The shell command (run by the prober) that makes `mode` happen to node `h`.
fail_cmd() {
    local system=$1 mode=$2 h=$3 pid
    pid=$(cat "$WORK/daemon-$h.pid")
    case $mode in
    death)
        echo "for p in \$(ip netns pids $P-$h); do kill -9 \$p 2>/dev/null; done; ip -n $P-$h link set eth0 down" ;;
    crash)
        if [ "$system" = gateway ]; then
            echo "kill -9 $pid"
        else
            # The VRRP child first: killed after its parent it would get the parent's
            # death signal and shut down gracefully (a priority-0 advert), not crash.
            echo "kill -9 \$(cat $WORK/vrrp-$h.pid) $pid"
        fi ;;
    stop)
        echo "kill -TERM $pid" ;;
    esac
}

run_trial() {
    local system=$1 mode=$2 master other result
    lab_down
    lab_up
    case $system in
    gateway) start_gateway ;;
    keepalived) start_keepalived 2 1 ;;
    keepalived-v3) start_keepalived 3 0.1 ;;
    esac
    if ! master=$(wait_master); then
        echo "FAIL no single master"
        return 0
    fi
    if [ "$master" = n1 ]; then other=n2; else other=n1; fi
    result=$(ip netns exec "$P-client" "$PY" "$WORK/prober.py" "$VIP" 8080 \
        "$(ip_of "$master")" "$(fail_cmd "$system" "$mode" "$master")" || true)
    echo "$result master=$master"
    lab_down
}

if [ -n "${RESULTS_FROM:-}" ]; then
    # Re-render the report from the per-trial lines of an earlier run's stderr.
    for system in $SYSTEMS; do
        for mode in $MODES; do
            grep "^$system $mode #" "$RESULTS_FROM" | sed 's/^[^:]*: //' >"$WORK/result-$system-$mode" || true
        done
    done
    TRIALS=$(grep -c "^${SYSTEMS%% *} ${MODES%% *} #" "$RESULTS_FROM" || true)
else
    echo "lab $P on $NET.0/24, VIP $VIP, $TRIALS trials per case" >&2
    for system in $SYSTEMS; do
        for mode in $MODES; do
            : >"$WORK/result-$system-$mode"
            for i in $(seq "$TRIALS"); do
                line=$(run_trial "$system" "$mode")
                echo "$system $mode #$i: $line" >&2
                echo "$line" >>"$WORK/result-$system-$mode"
            done
        done
    done
fi

# Summary: min/median/max per case, ratios against keepalived, markdown report.
"$PY" - "$WORK" "$OUT" "$TRIALS" "$SYSTEMS" "$MODES" "${GATEWAY_BIN:-}" <<'EOF'
import os, platform, statistics, subprocess, sys, time
work, out, trials, systems, modes, binary = sys.argv[1:7]
systems, modes = systems.split(), modes.split()
stats = {}
for s in systems:
    for m in modes:
        ok, bad = [], []
        for line in open(os.path.join(work, f"result-{s}-{m}")):
            w = line.split()
            if w and w[0] == "OK":
                ok.append(float(w[1]))
            else:
                bad.append(line.strip())
        stats[s, m] = (ok, bad)

def fmt(ms):
    return f"{ms:.0f}" if ms >= 10 else f"{ms:.1f}"

names = {"death": "node death (kill all + link down)", "crash": "daemon crash (kill -9)",
         "stop": "graceful stop (SIGTERM)"}
rows = ["| system | failure | ok/trials | min ms | p25 ms | median ms | p75 ms | max ms | stdev ms |",
        "|---|---|---|---|---|---|---|---|---|"]
def quart(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]
for (s, m), (ok, bad) in stats.items():
    if ok:
        sd = statistics.stdev(ok) if len(ok) > 1 else 0.0
        rows.append(f"| {s} | {names[m]} | {len(ok)}/{len(ok) + len(bad)} | {fmt(min(ok))} | {fmt(quart(ok, 0.25))} | "
                    f"{fmt(statistics.median(ok))} | {fmt(quart(ok, 0.75))} | {fmt(max(ok))} | {fmt(sd)} |")
    else:
        rows.append(f"| {s} | {names[m]} | 0/{len(bad)} | - | - | - | - | - | - |")
# Per round: trial i of gateway against trial i of each other system (same mode). The
# rounds are not paired runs (each trial is its own lab), so this shows the spread of
# the ratio, not a paired test.
rounds = []
if "gateway" in systems:
    for other in [s for s in systems if s != "gateway"]:
        for m in modes:
            a, b = stats["gateway", m][0], stats[other, m][0]
            n = min(len(a), len(b))
            if n:
                per = [a[i] / b[i] for i in range(n)]
                rounds.append(f"| {names[m]} | {other} | " + " ".join(f"{r:.2f}" for r in per)
                              + f" | {statistics.median(per):.2f} | {min(per):.2f}–{max(per):.2f} |")
ratios = []
if "gateway" in systems:
    for other in [s for s in systems if s != "gateway"]:
        for m in modes:
            a, b = stats["gateway", m][0], stats[other, m][0]
            if a and b:
                ratios.append(f"| {names[m]} | {other} | {statistics.median(a) / statistics.median(b):.3f} | "
                              f"{statistics.median(b) / statistics.median(a):.1f}x |")
failures = [f"- {s} {m}: {line}" for (s, m), (_, bad) in stats.items() for line in bad]

# Issue #2's targets for our default settings.
targets = []
def target(label, mode, pick, limit):
    ok = stats.get(("gateway", mode), ([], []))[0]
    if ok:
        v = pick(ok)
        targets.append(f"| {label} | {fmt(v)} ms | {'met' if v <= limit else 'MISSED'} |")
target("node death, median <= 200 ms", "death", statistics.median, 200)
target("node death, max <= 300 ms", "death", max, 300)
target("graceful stop, max <= 100 ms", "stop", max, 100)
target_text = "\n".join(["| target (issue #9, default settings) | measured | |", "|---|---|---|"] + targets) if targets else ""

def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=5).stdout.strip().splitlines()[0]
    except Exception:
        return "?"

load_start = open(os.path.join(work, "loadavg-start")).read().split()[:3] if os.path.exists(os.path.join(work, "loadavg-start")) else ["?"]
load_end = open("/proc/loadavg").read().split()[:3]
env = [f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
       f"- kernel: {platform.release()}, {os.cpu_count()} CPUs",
       f"- load average (1, 5, 15 min) at the start: {' '.join(load_start)}, at the end: {' '.join(load_end)}"
       " (other jobs were running on the machine: compare the spread, not single trials)",
       f"- trials per case: {trials}"]
if "gateway" in systems:
    env.append(f"- gateway: {version([binary, '-version'])} (release build, `floating_ip: {{enabled: true}}`, default timings)")
if any(s.startswith("keepalived") for s in systems):
    ka = subprocess.run(["keepalived", "--version"], capture_output=True, text=True).stderr.strip().splitlines()
    env.append(f"- keepalived: {ka[0] if ka else '?'} (Debian package)")

table = "\n".join(rows)
ratio_text = "\n".join(["| failure | against | median ours/theirs | speed-up |", "|---|---|---|---|"] + ratios) if ratios else ""
round_text = "\n".join(["| failure | against | ours/theirs, trial by trial | median | range |", "|---|---|---|---|---|"] + rounds) if rounds else ""
print("\n" + table + "\n")
if ratio_text:
    print(ratio_text + "\n")
if target_text:
    print(target_text + "\n")
if failures:
    print("failed trials:\n" + "\n".join(failures))
if out == "-":
    sys.exit(0)
doc = f"""# Failover benchmark

Produced by `scripts/bench-failover.sh` (run as root: `sudo scripts/bench-failover.sh`).
Re-run it to refresh this part; the proxy benchmark part below is kept.

## Method

A private lab of network namespaces (a bridge in its own namespace; nodes n1 and n2, a
client and a backend, each on a veth pair), built fresh for every trial. The backend
answers every TCP connection with `backend <source address>`, so the client knows which
node forwarded it. A prober in the client opens a connection to `VIP:8080` every 5 ms
(100 ms connect and read timeouts, attempts overlap). Once the service answers steadily
through the master, the prober starts the failure and measures, on one monotonic clock,
the time until the first answer forwarded by the other node: the outage the client sees.

Failures: **node death** = every process in the master's namespace SIGKILLed and its link
set down; **daemon crash** = the failover daemon SIGKILLed, host up (for keepalived: its
parent and VRRP child); **graceful stop** = SIGTERM to the daemon.

Systems, fronting the same backend:
- **gateway**: this project, `floating_ip: {{enabled: true}}` and nothing else (default
  timings), the service is its own TCP forwarder (`handler: tcp`, `listener: tcp`) on `:8080`.
- **keepalived**: defaults (VRRPv2, `advert_int 1`, both `state BACKUP`, priority 100);
  the service is `socat TCP-LISTEN:8080,fork,reuseaddr TCP:backend:80` on each node.
- **keepalived-v3**: the same with `vrrp_version 3` and `advert_int 0.1`.

## Environment

{chr(10).join(env)}

## Results

{table}

{"## Targets" + chr(10) + chr(10) + target_text if target_text else ""}

{"## Ratios (median outage)" + chr(10) + chr(10) + ratio_text if ratio_text else ""}

{"## Ratios per round" + chr(10) + chr(10) + round_text if round_text else ""}

## Reading the numbers

- The backup suspects the master after two missed heartbeats (`heartbeat.interval_in_ms`,
  50 ms) and then asks it several ways at once for one interval (UDP and TCP echo,
  ICMP, an ARP probe of the VIP); it takes over when `heartbeat.dead_count` (3)
  intervals of silence have passed *and* nothing answered: 150 ms after the last
  heartbeat heard, plus the bind and the first gratuitous ARP (about a millisecond).
  The kill falls anywhere in the 50 ms between two heartbeats, so node death lands
  between about 100 and 200 ms (see docs/architecture.md, timing budget). A crashed
  daemon's host still answers ping but refuses the echo port: same verdict, same time.
- On SIGTERM the master releases the VIP and sends a resign heartbeat; the backup takes
  over on receipt, so the outage is a few milliseconds.
- keepalived with its defaults waits for its master-down interval,
  3 x `advert_int` + skew ((256 - priority) / 256 s): 3 x 1 s + 0.61 s, measured about
  3.3 s. On SIGTERM it sends a priority-0 advert, after which the backup still waits the
  skew time (0.61 s). With VRRPv3 and `advert_int 0.1` both shrink tenfold (about
  0.3 s and 0.06 s).

{"## Failed trials" + chr(10) + chr(10) + chr(10).join(failures) if failures else ""}
"""
os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
# scripts/bench-proxy.sh keeps its own part of this file between its markers: carry it over.
kept = ""
if os.path.exists(out):
    old = open(out).read()
    # ... and the chaos soak's figures (scripts/soak.sh) between theirs.
    marks = [i for i in (old.find("<!-- soak:begin"), old.find("<!-- bench-proxy:begin")) if i >= 0]
    if marks:
        kept = "\n" + old[min(marks):]
with open(out, "w") as f:
    f.write(doc.rstrip() + "\n" + kept)
print(f"wrote {out}")
EOF
