#!/usr/bin/env bash
# Builds the BPF object, the native addon and the TypeScript; each step is
# incremental, so a second run with nothing changed does next to nothing.
#   bash scripts/build.sh             everything: the product (src/), the lab, bench and tests
#   bash scripts/build.sh --product   the product alone (the image's build): src/ must build
#                                     without lab/, bench/ or test/ present
set -euo pipefail
cd "$(dirname "$0")/.."
product=false
case "${1:-}" in
  --product) product=true ;;
  "") ;;
  *) echo "usage: bash scripts/build.sh [--product]" >&2; exit 2 ;;
esac

make -s -C bpf
# What TypeScript shares with the object (enums, struct layouts), from its BTF.
node scripts/gen-btf.mjs gen

if ! $product; then
  # The bench's timed request/response client and echo server.
  mkdir -p build/bench
  if [[ ! -x build/bench/rr || bench/native/rr.c -nt build/bench/rr ]]; then
    cc -O2 -Wall -Wextra -Werror -o build/bench/rr bench/native/rr.c
  fi

  # The semantics matrix's C peer (test/kernel/matrix.test.ts).
  mkdir -p build/test
  if [[ ! -x build/test/semantics || test/peers/semantics.c -nt build/test/semantics ]]; then
    cc -O2 -Wall -Wextra -Werror -o build/test/semantics test/peers/semantics.c
  fi

  # Generations as older builds left them (test/kernel/generations.test.ts).
  arch=$(uname -m | sed 's/x86_64/x86/;s/aarch64/arm64/')
  for v in old-layout:"" old-layout-named:-DOLD_NAMED_LAYOUT; do
    out=build/test/${v%%:*}.bpf.o
    if [[ ! -f $out || test/bpf/old-layout.bpf.c -nt $out ]]; then
      clang -g -O2 -mcpu=v3 -target bpf -D__TARGET_ARCH_$arch ${v#*:} -Wall -Werror -Ibuild/bpf -c test/bpf/old-layout.bpf.c -o "$out"
    fi
  done
  # Another sockmap user's programs (test/kernel/capacity.test.ts: socket_busy).
  if [[ ! -f build/test/other-sockmap.bpf.o || test/bpf/other-sockmap.bpf.c -nt build/test/other-sockmap.bpf.o ]]; then
    clang -g -O2 -mcpu=v3 -target bpf -D__TARGET_ARCH_$arch -Wall -Werror -Ibuild/bpf -c test/bpf/other-sockmap.bpf.c -o build/test/other-sockmap.bpf.o
  fi
fi

# node-gyp would download Node's headers; build against the local ones.
nodedir=${npm_config_nodedir:-$(node -p "require('path').resolve(process.execPath, '../..')")}
if [[ ! -f $nodedir/include/node/node_api.h ]]; then
  echo "build: Node headers not found under $nodedir/include/node (set npm_config_nodedir)" >&2
  exit 1
fi
gyp="node_modules/.bin/node-gyp --silent --directory=native --nodedir=$nodedir"
if [[ ! -f native/build/Makefile || native/binding.gyp -nt native/build/Makefile ]]; then
  $gyp configure
fi
$gyp build

# The xDS messages' code (into dist, beside the compiled protos.ts) and its
# types (beside protos.ts, for tsc), generated from proto/ by protobufjs' CLI;
# google/protobuf/* come from protobufjs' bundled definitions.
protos_js=dist/src/xds/gen/protos.js
protos_dts=src/xds/gen/protos.d.ts
if [[ ! -f $protos_js || ! -f $protos_dts || -n $(find proto scripts/pbjs-esm-wrapper.tmpl package-lock.json -newer "$protos_js" -type f | head -1) ]]; then
  mkdir -p "$(dirname "$protos_js")" "$(dirname "$protos_dts")" build
  gen=$(mktemp -d build/protos.XXXXXX)
  trap 'rm -rf "$gen"' EXIT
  node_modules/.bin/pbjs -t static-module -w scripts/pbjs-esm-wrapper.tmpl --es6 --dependency protobufjs/minimal.js \
    --keep-case -r sidecar_accel --no-verify --no-delimited --no-typeurl --no-service \
    -p proto -o "$gen/protos.js" envoy/service/discovery/v3/ads.proto istio/workload/workload.proto
  node_modules/.bin/pbts -o "$gen/protos.d.ts" "$gen/protos.js"
  # skipLibCheck (tsconfig) skips .d.ts files: check the generated one on its own, strict.
  node_modules/.bin/tsc --noEmit --strict --module NodeNext --moduleResolution NodeNext --target ES2022 --types node "$gen/protos.d.ts"
  mv "$gen/protos.d.ts" "$protos_dts"
  mv "$gen/protos.js" "$protos_js"
fi

if $product; then node_modules/.bin/tsc -p tsconfig.product.json; else node_modules/.bin/tsc -p tsconfig.json; fi
node scripts/gen-btf.mjs check
# package.json's bin: `npm link` links it onto PATH; tsc writes it without the execute bit.
chmod +x dist/src/cli/main.js
