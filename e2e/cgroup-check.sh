#!/usr/bin/env bash
# cgroup-check.sh: proves the dataplane's cgroup v2 awareness on a real host.
#
# Needs root, a pure cgroup v2 host (/sys/fs/cgroup is cgroup2fs) with the cpuset, cpu and
# memory controllers, and at least 4 CPUs. It creates a child cgroup with cpuset.cpus of 4
# CPUs, cpu.max of 4 cores and memory.max of 1 GiB, starts the dataplane inside it with
# --pin-cpus, and checks detection, worker count, pinning, and a memory-bounded run under
# load (no OOM kill, peak memory below memory.max). It stops only what it started.
#
# Usage: e2e/cgroup-check.sh            (builds the release binary when ZERONAS_BIN is unset)
# Exit: 0 passed, 1 a check failed, 2 this host cannot run the check (reason printed).
set -uo pipefail

cd "$(dirname "$0")/.."
CG_ROOT=/sys/fs/cgroup
CG="$CG_ROOT/zeronas-check-$$"
WORK=$(mktemp -d /tmp/zeronas-cgroup-check.XXXXXX)
PID=""
FAILED=0

say() { printf '%s\n' "$*"; }
skip() { say "SKIP: $*"; exit 2; }
check() { # check NAME EXPECTED ACTUAL
    if [ "$2" = "$3" ]; then say "ok    $1 = $3"; else say "FAIL  $1: expected $2, got $3"; FAILED=1; fi
}
cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then kill -TERM "$PID"; wait "$PID" 2>/dev/null; fi
    [ -d "$CG" ] && rmdir "$CG" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || skip "needs root"
[ "$(stat -fc %T "$CG_ROOT" 2>/dev/null)" = cgroup2fs ] || skip "$CG_ROOT is not a pure cgroup v2 mount"
for c in cpuset cpu memory; do
    grep -qw "$c" "$CG_ROOT/cgroup.controllers" || skip "controller $c not available in $CG_ROOT"
done
mapfile -t CPUS < <(taskset -cp $$ | sed 's/.*: //' | tr ',' '\n' | while IFS=- read -r a b; do seq "$a" "${b:-$a}"; done)
[ "${#CPUS[@]}" -ge 4 ] || skip "needs at least 4 CPUs (have ${#CPUS[@]})"
SET="${CPUS[0]},${CPUS[1]},${CPUS[2]},${CPUS[3]}"

BIN=${ZERONAS_BIN:-}
if [ -z "$BIN" ]; then
    cargo build --release --locked -p zeronas-dataplane >/dev/null 2>&1 || { say "FAIL build"; exit 1; }
    BIN=target/release/zeronas-dataplane
fi

say "== cgroup $CG: cpuset.cpus=$SET cpu.max='400000 100000' memory.max=1G"
echo "+cpuset +cpu +memory" > "$CG_ROOT/cgroup.subtree_control" 2>/dev/null ||
    skip "cannot enable controllers in $CG_ROOT/cgroup.subtree_control (is this a container's cgroup with processes in it?)"
mkdir "$CG" || skip "cannot create $CG"
echo "$SET" > "$CG/cpuset.cpus" && echo "400000 100000" > "$CG/cpu.max" && echo 1G > "$CG/memory.max" ||
    { say "FAIL cannot write limits"; exit 1; }

mkdir -p "$WORK/share"
head -c $((256 << 20)) /dev/urandom > "$WORK/share/big.bin"
for i in $(seq 1 200); do head -c 65536 /dev/urandom > "$WORK/share/small-$i.bin"; done

bash -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' _ "$CG" \
    "$BIN" --root "$WORK/share" --http 127.0.0.1:0 --pin-cpus >"$WORK/out" 2>"$WORK/err" &
PID=$!
for _ in $(seq 1 100); do [ -s "$WORK/out" ] && break; sleep 0.1; done
ADDR=$(sed -n 's/.*"http":"\([^"]*\)".*/\1/p' "$WORK/out" | head -1)
[ -n "$ADDR" ] || { say "FAIL dataplane did not start:"; cat "$WORK/err"; exit 1; }
say "dataplane pid $PID on $ADDR; start-up log:"
grep -E "cgroup|worker" "$WORK/err" | sed 's/^/    /'

M=$(curl -sf "http://$ADDR/metrics")
metric() { printf '%s\n' "$M" | awk -v n="$1" '$1==n {print $2}'; }
say "== detection"
check zeronas_cgroup_cpus_allowed 4 "$(metric zeronas_cgroup_cpus_allowed)"
check zeronas_cgroup_cpu_quota_cores 4.0 "$(metric zeronas_cgroup_cpu_quota_cores)"
check zeronas_cgroup_memory_max_bytes 1073741824 "$(metric zeronas_cgroup_memory_max_bytes)"
check zeronas_worker_threads 4 "$(metric zeronas_worker_threads)"
check zeronas_memory_budget_bytes 268435456 "$(metric zeronas_memory_budget_bytes)"
for c in "${CPUS[@]:0:4}"; do check "zeronas_worker_pinned{cpu=\"$c\"}" 1 "$(metric "zeronas_worker_pinned{cpu=\"$c\"}")"; done

say "== pinning from /proc/$PID/task"
PINNED=$(for t in /proc/$PID/task/*; do
    case "$(cat "$t/comm")" in zn-worker-*) awk '/Cpus_allowed_list/ {print $2}' "$t/status";; esac
done | sort -n | paste -sd, -)
check "worker threads' Cpus_allowed_list" "$SET" "$PINNED"

say "== load: 64 concurrent clients for 20 s (256 MiB file + 64 KiB files)"
END=$((SECONDS + 20))
for w in $(seq 1 64); do
    ( while [ $SECONDS -lt $END ]; do
        if [ $((w % 4)) = 0 ]; then curl -sf -o /dev/null "http://$ADDR/v1/shares/default/files/big.bin";
        else curl -sf -o /dev/null "http://$ADDR/v1/shares/default/files/small-$((RANDOM % 200 + 1)).bin"; fi
      done ) &
done
PEAK=0
while [ $SECONDS -lt $END ]; do
    cur=$(cat "$CG/memory.current"); [ "$cur" -gt "$PEAK" ] && PEAK=$cur; sleep 0.2
done
wait $(jobs -p | grep -v "^$PID$") 2>/dev/null
[ -r "$CG/memory.peak" ] && PEAK=$(cat "$CG/memory.peak")
OOM=$(awk '$1=="oom_kill" {print $2}' "$CG/memory.events")
say "memory peak $((PEAK >> 20)) MiB of 1024 MiB (page cache included); oom_kill=$OOM"
check "oom_kill events" 0 "$OOM"
check "dataplane alive after load" yes "$(kill -0 "$PID" 2>/dev/null && echo yes || echo no)"
BUF=$(curl -sf "http://$ADDR/metrics" | awk '$1=="zeronas_memory_buffers_bytes" {print $2}')
say "buffer bytes in use after load: $BUF"
curl -sf "http://$ADDR/v1/shares/default/stats" | sed 's/^/stats: /'

[ "$FAILED" = 0 ] && say "PASSED" || say "FAILED"
exit "$FAILED"
