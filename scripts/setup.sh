#!/usr/bin/env bash
# Idempotent setup run first by `npm test` and `npm run demo` on a fresh
# Debian/Ubuntu machine: Debian packages that are missing, `npm ci` when the
# lock file changed, then the build of bpf/, native/ and the TypeScript.
set -euo pipefail
cd "$(dirname "$0")/.."

# clang/llvm/bpftool/libbpf-dev: build bpf/ and native/; iproute2, iptables,
# procps: the pod topology of tests, demo and bench (ip netns, ss, nstat,
# sysctl); haproxy: the real sidecar proxy of tests and bench; iperf3 and
# sockperf, wrk: native timed clients of tests, demo and bench (gcc builds the
# bench's own rr client); openssl: the sidecars' TLS certificate in the bench;
# python3, make, g++, pkg-config: node-gyp; util-linux: nsenter and setpriv.
# nginx-light, curl, redis-server, redis-tools, postgresql: the real
# applications the tests run through the sidecars, blocking and event-driven.
# qemu-system-x86 (brings virtiofsd), busybox-static, kmod, cpio, xz-utils,
# zstd: the kernel matrix (lab/kernels) boots Debian's kernels under qemu.
PACKAGES=(clang llvm libbpf-dev bpftool iproute2 iptables procps haproxy iperf3 sockperf wrk
          openssl python3 make gcc g++ pkg-config util-linux
          nginx-light curl redis-server redis-tools postgresql
          qemu-system-x86 busybox-static kmod cpio xz-utils zstd)

missing=()
for p in "${PACKAGES[@]}"; do
  if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]]; then
    missing+=("$p")
  fi
done
# kubectl renders deploy/ (kubectl kustomize) in the tests; any kubectl will do.
command -v kubectl >/dev/null || missing+=(kubernetes-client)
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing Debian packages (${missing[*]}); run as root or install them" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm ci only when package-lock.json changed since the last one here.
stamp=node_modules/.sidecar-accel-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ ! -f $stamp || "$(cat "$stamp")" != "$want" ]]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi

bash scripts/build.sh
