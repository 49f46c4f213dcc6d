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
  buildah umount "$c"
  buildah config --env PATH=/usr/local/bin:/usr/bin:/bin "$c"
  buildah commit "$c" "$base"
  buildah rm "$c"
fi
buildah bud --layers=false --build-arg NODE_IMAGE="$base" -t "$tag" -f Dockerfile .
# Smoke test: the image's CLI answers and explains a pod.
buildah run "$(buildah from "$tag")" -- node /app/dist/src/cli/main.js help | head -3
echo "built $tag"
