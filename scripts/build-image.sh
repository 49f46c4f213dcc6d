#!/usr/bin/env bash
# Builds the agent image with buildah, with no container registry: the Node
# base image is made here from a debootstrap'd Debian 12 plus this machine's
# Node.js 20 binary, then the Dockerfile is built on it.
#   bash scripts/build-image.sh [TAG]      (root; installs buildah and debootstrap)
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-localhost/sidecar-accel:dev}
work=${IMAGE_WORKDIR:-/var/tmp/sidecar-accel-image}
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
for p in buildah debootstrap; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || {
    apt-get update -q >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$p" >/dev/null; }
done
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
mirror=${mirror:-$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null)}
mirror=${mirror:-http://deb.debian.org/debian}
base=localhost/node:20-bookworm-slim
if ! buildah images -q "$base" >/dev/null 2>&1 || [[ -z "$(buildah images -q "$base" 2>/dev/null)" ]]; then
  mkdir -p "$work"
  if [[ ! -f $work/rootfs/.done ]]; then
    rm -rf "$work/rootfs"
    debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror"
    touch "$work/rootfs/.done"
  fi
  node_bin=$(command -v node)
  [[ "$(node -p 'process.versions.node.split(".")[0]')" -ge 20 ]] || { echo "need Node 20+ here to seed the base image" >&2; exit 1; }
  npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
  c=$(buildah from scratch)
  m=$(buildah mount "$c")
  cp -a "$work/rootfs/." "$m/"
  install -m 0755 "$node_bin" "$m/usr/local/bin/node"
  mkdir -p "$m/usr/local/lib/node_modules" && cp -a "$npm_dir" "$m/usr/local/lib/node_modules/npm"
  ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$m/usr/local/bin/npm"
  # Node's headers, where the official image keeps them: the addon builds against them.
  node_dir=$(node -p "require('path').resolve(process.execPath, '../..')")
  mkdir -p "$m/usr/local/include" && cp -a "$node_dir/include/node" "$m/usr/local/include/node"
  buildah umount "$c"
  # The same PATH as the official node image (bpftool, ip live in /usr/sbin).
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$c"
  buildah commit "$c" "$base"
  buildah rm "$c"
fi
# The registry may sit behind a TLS-inspecting proxy whose CA only this host
# trusts: lend the host's trust to the build stage (a read-only mount, not a
# layer of the image).
ca_args=()
ca=$(npm config get cafile 2>/dev/null || true)
[[ -n "$ca" && "$ca" != null && -f "$ca" ]] || ca=${NODE_EXTRA_CA_CERTS:-}
if [[ -n "$ca" && -f "$ca" ]]; then
  ca_args=(--volume "$ca:/run/build-ca.pem:ro" --build-arg NODE_EXTRA_CA_CERTS=/run/build-ca.pem --build-arg npm_config_cafile=/run/build-ca.pem)
fi
buildah bud --layers=false "${ca_args[@]}" --build-arg NODE_IMAGE="$base" -t "$tag" -f Dockerfile .
# Smoke test: the CLI answers, and with only the DaemonSet's capabilities the
# image's addon and libbpf load its BPF object through this kernel's verifier.
c=$(buildah from "$tag")
trap 'buildah rm "$c" >/dev/null' EXIT
buildah run "$c" -- node /app/dist/src/cli/main.js help | head -1
# The xDS messages' code, generated at build time, ships in dist/ and runs.
buildah run "$c" -- node --input-type=module -e "const { istio } = await import('/app/dist/src/xds/protos.js');
  const a = istio.workload.Address; console.log('image encodes its xDS messages:', a.decode(a.encode({ workload: { uid: 'u' } }).finish()).workload.uid === 'u');"
# (buildah's --cap-drop ALL also drops what --cap-add adds: drop its defaults one by one.)
caps=()
for x in CHOWN DAC_OVERRIDE FOWNER FSETID KILL NET_BIND_SERVICE SETFCAP SETGID SETPCAP SETUID SYS_CHROOT NET_RAW MKNOD AUDIT_WRITE; do
  caps+=(--cap-drop "CAP_$x")
done
for x in BPF PERFMON NET_ADMIN SYS_ADMIN SYS_PTRACE; do caps+=(--cap-add "CAP_$x"); done
buildah run "${caps[@]}" "$c" -- grep CapEff /proc/self/status
buildah run "${caps[@]}" "$c" -- \
  node --input-type=module -e "const { native, defaultObjectPath } = await import('/app/dist/src/datapath/native.js');
    const o = native().loadObject(defaultObjectPath); console.log('image loads its BPF object:', Object.keys(o.progs).join(', '));"
echo "built $tag"
