// The agent's YAML config. Every field has a default except the workloads'
// identities; an error names the path of the bad field.
import { z } from 'zod';
import { DEFAULT_SOCK_HASH_ENTRIES, MAX_MAP_ENTRIES } from '../datapath/capacity.js';
import { DEFAULT_BACKPRESSURE_HOLDOFF_MS } from '../datapath/layout.js';

const stringMap = z.record(z.string(), z.string());

const hostPort = z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[0-9.]+|localhost):\d{1,5}$/, 'expected host:port, e.g. 127.0.0.1:15081')
  .refine((s) => { const p = Number(s.slice(s.lastIndexOf(':') + 1)); return p >= 1 && p <= 65535; }, 'port must be 1-65535');

/** istiod's address: a name or an address, and a port (the xds source and xds-dump). */
export const XDS_ADDRESS_PATTERN = /^[A-Za-z0-9.\-[\]:]+:\d{1,5}$/;

/** The xds section's defaults: istiod in a cluster, with the mounts of deploy/. */
export const XDS_DEFAULTS = {
  enabled: false,
  address: 'istiod.istio-system.svc:15012',
  plaintext: false,
  caFile: '/var/run/secrets/istio/root-cert.pem',
  tokenFile: '/var/run/secrets/tokens/istio-token',
  clusterId: 'Kubernetes',
  noAnswerSeconds: 30,
};

export const workloadSchema = z.object({
  name: z.string().min(1),
  namespace: z.string().min(1),
  /** The pod's network namespace: a path (e.g. /var/run/netns/x) or a pid in it. */
  netns: z.string().startsWith('/').optional(),
  pid: z.number().int().positive().optional(),
  /**
   * The pod's own IPs. Only a known pod address is unique on the node, so
   * only its connections can pair across pods (datapath.crossPod); without
   * them the workload's sockets pair inside its own netns only.
   */
  ips: z.array(z.union([z.ipv4(), z.ipv6()])).default([]),
  annotations: stringMap.default({}),
  labels: stringMap.default({}),
}).strict().refine((w) => (w.netns === undefined) !== (w.pid === undefined), 'set exactly one of netns and pid');

export const configSchema = z.object({
  api: z.object({ listen: hostPort.default('127.0.0.1:15081') }).strict().default({ listen: '127.0.0.1:15081' }),
  datapath: z.object({
    /** "auto": the cgroup v2 mount root from /proc/mounts. */
    cgroup: z.string().default('auto'),
    /** Refuse a cgroup other than the host's cgroup v2 root (off only to scope tests to a sub-tree). */
    requireRootCgroup: z.boolean().default(true),
    pinDir: z.string().startsWith('/').default('/sys/fs/bpf/sidecar-accel'),
    /** The BPF object to load; default the one this build ships (build/bpf/sidecar_accel.bpf.o). */
    object: z.string().startsWith('/').optional(),
    crossPod: z.boolean().default(false),
    /** Keepalive idle/interval for paired sockets; below the conntrack established timeout. 0: off. */
    keepaliveIdleSeconds: z.number().int().min(0).max(86_400).default(3600),
    /**
     * After a direction falls back to TCP for backpressure (its reader is
     * slower than its writer), it stays on TCP at least this long before it
     * may come back to the redirect; each such fallback costs the connection
     * a retransmission timeout (README, "Backpressure"). 0: back as soon as
     * the reader has read every TCP byte.
     */
    backpressureHoldoffMs: z.number().int().min(0).max(3_600_000).default(DEFAULT_BACKPRESSURE_HOLDOFF_MS),
    /**
     * The sidecar's uid (Istio's proxy uid). Its sockets are event-driven, so
     * they are registered even before accept() shows how they are read.
     */
    proxyUid: z.number().int().min(1).max(4_294_967_294).default(1337),
    /**
     * Whether applications' own sockets are paired (the sidecar's always are):
     * "auto" when the start-up self-test finds this kernel shows them nothing
     * TCP would not (else only the sidecar's: sidecar-only mode); "never";
     * "always", accepting the deviations the self-test names (logged).
     */
    applications: z.enum(['auto', 'never', 'always']).default('auto'),
    /**
     * Sockets registered for pairing at once (sock_hash); each meshed
     * connection uses up to six. Beyond it sockets stay on TCP (counted,
     * reason map_full). Set when a generation is loaded: one adopted from its
     * pins keeps the size it was loaded with.
     */
    sockHashEntries: z.number().int().min(1).max(MAX_MAP_ENTRIES).default(DEFAULT_SOCK_HASH_ENTRIES),
    /**
     * Ignored, with a warning: it sized the peer_info map, which the agent
     * now sizes itself (twice sockHashEntries) and never reads. Accepted so
     * that a config that sets it still loads.
     */
    peerInfoEntries: z.number().int().min(1).optional(),
  }).strict().default({ cgroup: 'auto', requireRootCgroup: true, pinDir: '/sys/fs/bpf/sidecar-accel', crossPod: false, keepaliveIdleSeconds: 3600, backpressureHoldoffMs: DEFAULT_BACKPRESSURE_HOLDOFF_MS, proxyUid: 1337, applications: 'auto', sockHashEntries: DEFAULT_SOCK_HASH_ENTRIES }),
  /** The kubernetes workload source (pods of this node from the API server). */
  kubernetes: z.object({
    enabled: z.boolean().default(false),
    /** This node's name; default the NODE_NAME environment variable (downward API). */
    nodeName: z.string().min(1).optional(),
    /** A kubeconfig file; default the in-cluster service account. */
    kubeconfig: z.string().startsWith('/').optional(),
    /** The host's /proc, mounted into the agent, to find pods' network namespaces. */
    hostProc: z.string().startsWith('/').default('/proc'),
    istioNamespace: z.string().min(1).default('istio-system'),
  }).strict().default({ enabled: false, hostProc: '/proc', istioNamespace: 'istio-system' }),
  /**
   * The xds workload source: Istio's workload API from istiod over Delta ADS.
   * Needs the kubernetes source (its records are joined with the pods by uid).
   */
  xds: z.object({
    enabled: z.boolean().default(XDS_DEFAULTS.enabled),
    address: z.string().regex(XDS_ADDRESS_PATTERN, 'expected host:port, e.g. istiod.istio-system.svc:15012').default(XDS_DEFAULTS.address),
    /** No TLS and no token: only for a local test server. */
    plaintext: z.boolean().default(XDS_DEFAULTS.plaintext),
    /** istiod's CA (ConfigMap istio-ca-root-cert, key root-cert.pem). */
    caFile: z.string().startsWith('/').default(XDS_DEFAULTS.caFile),
    /** Projected service-account token with audience istio-ca. */
    tokenFile: z.string().startsWith('/').default(XDS_DEFAULTS.tokenFile),
    /** Name istiod's certificate is checked against; default the address' host. */
    serverName: z.string().min(1).optional(),
    /** istiod's cluster id (its CLUSTER_ID; pod workload uids start with it). */
    clusterId: z.string().min(1).default(XDS_DEFAULTS.clusterId),
    /** With no answer this long, istiod is taken not to serve the workload API. */
    noAnswerSeconds: z.number().positive().max(3600).default(XDS_DEFAULTS.noAnswerSeconds),
  }).strict().default({ ...XDS_DEFAULTS }),
  /** Istio MeshConfig; only defaultConfig.proxyMetadata.SIDECAR_ACCEL is read. */
  mesh: z.unknown().optional(),
  namespaces: z.array(z.object({ name: z.string().min(1), annotations: stringMap.default({}), labels: stringMap.default({}) }).strict()).default([]),
  workloads: z.array(workloadSchema).default([]),
}).strict().refine((c) => !c.xds.enabled || c.kubernetes.enabled, {
  path: ['xds', 'enabled'], message: 'the xds source needs kubernetes.enabled: istiod\'s records are joined with the pods of this node',
});

export type AgentConfig = z.infer<typeof configSchema>;
export type WorkloadConfig = z.infer<typeof workloadSchema>;
