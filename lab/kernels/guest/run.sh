#!/bin/bash
# PID 1 after switch_root, inside the guest, on the host's root under a tmpfs
# overlay. Runs the job the host wrote to /kmatrix/job.env and leaves the
# results in /kmatrix (the host's run directory). Console markers (KMATRIX-*)
# are the host's events: it waits for them, never for a fixed time.
set -u
. /kmatrix/job.env
con() { echo "$*" > /dev/console; }
# Whatever happens, end by powering off (qemu runs with -no-reboot and exits).
off() {
  sync
  echo o > /proc/sysrq-trigger
  sleep 30   # sysrq-o is asynchronous: do not exit PID 1 (a panic) meanwhile
  exit 1
}
trap off EXIT

# /tmp stays the overlay's (already writable, on tmpfs): a tmpfs mounted over it
# would hide a project checked out under /tmp, as a CI clone may be.
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
echo /sbin/modprobe > /proc/sys/kernel/modprobe
echo 1 > /proc/sys/kernel/sysrq
hostname kmatrix
ip link set lo up

export HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export REQUIRE_KERNEL=1 LANG=C.UTF-8 TERM=dumb NO_COLOR=1
[ "$KMATRIX_EMULATED" = 1 ] && export SIDECAR_ACCEL_EMULATED=1

# Seconds left before the host's deadline (minus a margin to report in).
left() { echo $(( KMATRIX_DEADLINE - $(cut -d. -f1 /proc/uptime) )); }

con "KMATRIX-BOOTED $(uname -r) $(cut -d' ' -f1 /proc/uptime)"
cd "$KMATRIX_PROJECT" || { con "KMATRIX-DONE no-project"; exit 1; }

if [ "$KMATRIX_PROBE_ONLY" = 1 ]; then
  con "KMATRIX-DONE probe"
  exit 0
fi

# Under emulation, live-patching kernel text as a static key flips can trap
# ("Oops: int3", a panic) while another vCPU runs the patched code: seen on
# 6.12 under TCG, in netif_rx_internal, as the rxtstamp case turned receive
# timestamps on. That key turns on with the first socket asking for receive
# timestamps and off with the last, so one socket holding it for the guest's
# life flips it once, here, before any test runs; the tests' own sockets then
# only move its count.
if [ "$KMATRIX_EMULATED" = 1 ]; then
  python3 -c 'import signal, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_TIMESTAMP, 1)
signal.pause()' &
fi

# Does this kernel load and attach the BPF object at all?
timeout -k 10 "$(left)" node "$KMATRIX_LOAD_PROBE" > /kmatrix/load.json 2> /kmatrix/load.log
rc=$?
con "KMATRIX-LOADED $rc"
# Refused: libbpf's log in the error is cut short. bpftool's debug output has
# the verifier's whole log, whose last lines say why.
if [ "$rc" != 0 ] && command -v bpftool > /dev/null; then
  mkdir -p /sys/fs/bpf/kmatrix-diag
  timeout -k 10 120 bpftool -d prog loadall "$KMATRIX_OBJECT" /sys/fs/bpf/kmatrix-diag > /kmatrix/verifier.log 2>&1
  rm -rf /sys/fs/bpf/kmatrix-diag
fi

# A kernel that refused the object has no datapath to test: its suites are not run.
if [ "$rc" != 0 ]; then
  con "KMATRIX-DONE refused"
  exit 0
fi

# The suites check their kernel-dependent expectations against the verdict
# the self-test just gave here (test/kernel/verdict.ts) instead of running it again.
SIDECAR_ACCEL_SELFTEST=$(node -e 'const j = JSON.parse(require("fs").readFileSync("/kmatrix/load.json", "utf8")); if (j.selfTest && j.selfTest.verdict) process.stdout.write(JSON.stringify(j.selfTest.verdict));' 2>/dev/null)
[ -n "$SIDECAR_ACCEL_SELFTEST" ] && export SIDECAR_ACCEL_SELFTEST

# One run of the guest command per suite; KMATRIX_FILTER holds its filters.
i=0
while IFS= read -r filter; do
  i=$((i + 1))
  t=$(left)
  if [ "$t" -le 0 ]; then echo 124 > "/kmatrix/suite-$i.rc"; continue; fi
  con "KMATRIX-SUITE-START $i $filter"
  KMATRIX_FILTER="$filter" timeout -k 20 "$t" bash -c "$KMATRIX_CMD" > "/kmatrix/suite-$i.log" 2>&1
  rc=$?
  echo "$rc" > "/kmatrix/suite-$i.rc"
  con "KMATRIX-SUITE-END $i $rc"
done < /kmatrix/suites
con "KMATRIX-DONE ok"
