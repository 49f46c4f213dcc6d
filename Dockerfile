# sidecar-accel agent image. Multi-stage: the BPF object and the native addon
# are built in the image, against its own libbpf; the runtime stage carries
# only what the agent runs.
#
# NODE_IMAGE is any Debian 12 (bookworm) image with Node.js 20+; the default
# is the official one. scripts/build-image.sh builds one locally (debootstrap)
# where no registry is reachable.
ARG NODE_IMAGE=docker.io/library/node:20-bookworm-slim

FROM ${NODE_IMAGE} AS build
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      clang llvm libbpf-dev bpftool make g++ python3 pkg-config ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# A site CA for the npm registry behind a TLS-inspecting proxy, if the builder
# passes one (scripts/build-image.sh mounts the host's); unset otherwise.
ARG NODE_EXTRA_CA_CERTS
ARG npm_config_cafile
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY tsconfig.json tsconfig.product.json ./
COPY bpf ./bpf
COPY native ./native
COPY src ./src
COPY proto ./proto
COPY scripts ./scripts
# The product alone: the lab (lab/, bench/) and the tests never enter the
# image, and src/ builds without them. vmlinux.h comes from the build host's
# BTF; the object is CO-RE, so it loads on kernels whose BTF has the fields it reads.
RUN bash scripts/build.sh --product && npm prune --omit=dev --no-audit --no-fund

FROM ${NODE_IMAGE}
# libbpf1: the addon's shared library; iproute2 + util-linux (nsenter): the
# start-up self-test's private network namespace.
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      libbpf1 iproute2 util-linux \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist/src ./dist/src
COPY --from=build /src/native/build/Release/sidecar_accel_native.node ./native/build/Release/
COPY --from=build /src/build/bpf/sidecar_accel.bpf.o /src/build/bpf/conns_iter.bpf.o ./build/bpf/
ENTRYPOINT ["node", "/app/dist/src/cli/main.js"]
CMD ["agent", "--config", "/etc/sidecar-accel/config.yaml"]
