// Prometheus metrics. Kernel counters are read from the pinned maps at
// scrape time, so they are cumulative across agent restarts; the agent's own
// counters (config and reconcile errors) count since this process started.
import client from 'prom-client';
import type { Counters } from '../datapath/layout.js';
import type { MapFill } from '../datapath/datapath.js';
import type { WorkloadStatus } from '../reconcile/reconciler.js';
import type { XdsHealth } from '../workloads/xds.js';

export interface MetricsSource {
  counters(): Counters;
  workloads(): WorkloadStatus[];
  workloadCounters(cookie: bigint): Counters | null;
  /** Entries and size of the maps that bound pairing (keys walked at each scrape). */
  mapFill(): MapFill[];
  /** The xds source's health; undefined when it is not configured. */
  xds(): XdsHealth | undefined;
}

const XDS_STATES = ['connecting', 'serving', 'not-served', 'unreachable'] as const;

const FALLBACK_REASONS: [keyof Counters, string][] = [
  ['fallbackNoPeer', 'no_peer'], ['fallbackBackpressure', 'backpressure'], ['fallbackExcluded', 'excluded_port'],
  ['fallbackDisabled', 'disabled'], ['fallbackUlp', 'ulp'], ['fallbackEarlyData', 'early_data'],
  ['fallbackRepair', 'tcp_repair'], ['fallbackKeyConflict', 'key_conflict'], ['fallbackCrossPod', 'cross_pod_off'],
  // Not registered: sock_hash full, or peer_info, sized twice it (datapath.sockHashEntries), the socket held by
  // another sockmap user's programs, or another refusal of the kernel.
  ['fallbackMapFull', 'map_full'], ['fallbackSocketBusy', 'socket_busy'], ['fallbackInsertFailed', 'insert_failed'],
  // The application reads the socket blocking (tcp_bpf's blocking recv differs from TCP's).
  ['fallbackBlocking', 'blocking_reader'], ['fallbackUnknownReader', 'unknown_reader'],
  ['fallbackTurnedBlocking', 'turned_blocking'],
  // The self-test put this kernel in sidecar-only mode.
  ['fallbackSidecarOnly', 'sidecar_only_kernel'],
  // TCP memory under pressure: the kernel could refuse to charge a redirect.
  ['fallbackMemoryPressure', 'memory_pressure'],
  // A sidecar's socket whose other end is no socket of this node's pods: not registered.
  ['fallbackNeverPairs', 'never_pairs'],
  // A socket option only TCP honours: the reader's SO_RCVLOWAT above 1, SO_PEEK_OFF, TCP_INQ or receive timestamps, the writer's SO_ZEROCOPY or transmit timestamps.
  ['fallbackSocketOption', 'socket_option'],
];

export class AgentMetrics {
  readonly registry = new client.Registry();
  readonly configErrors: client.Counter;
  readonly reconcileErrors: client.Counter;

  constructor(source: () => MetricsSource | undefined) {
    const r = this.registry;
    // A kernel counter: absolute value from the maps at each scrape.
    const kernel = (name: string, help: string, value: (c: Counters) => bigint) => new client.Counter({
      name, help, registers: [r],
      collect() {
        const s = source();
        this.reset();
        if (s) this.inc(Number(value(s.counters())));
      },
    });
    kernel('sidecar_accel_sockets_paired_total', 'Sockets that sent their first message redirected to their peer.', (c) => c.socketsPaired);
    kernel('sidecar_accel_pairing_misses_total', 'Sockets whose first message found no peer (that direction stays on TCP).', (c) => c.pairingMisses);
    kernel('sidecar_accel_redirected_messages_total', 'Messages moved straight into the peer socket.', (c) => c.redirectedMessages);
    kernel('sidecar_accel_redirected_bytes_total', 'Bytes moved straight into the peer socket.', (c) => c.redirectedBytes);
    kernel('sidecar_accel_sockets_registered_total', 'Established sockets of enabled pods registered for pairing.', (c) => c.socketsRegistered);
    kernel('sidecar_accel_tcp_segments_held_back_total', 'TCP segments not accepted (retransmitted later) while their reader still had redirected bytes unread, after its peer fell back to TCP.', (c) => c.tcpHeldBack);
    kernel('sidecar_accel_leaves_deferred_total', 'Sockets whose leave from the sockhash (released or withdrawn) waited until no redirect to them could be in flight.', (c) => c.leaveDeferred);
    kernel('sidecar_accel_sockets_withdrawn_total', 'Registered sockets whose application made them blocking, taken back out of the sockhash (plain TCP from then on).', (c) => c.socketsWithdrawn);
    kernel('sidecar_accel_directions_resumed_total', 'Directions on TCP (after a fallback) that came back to redirect once their receiver had read every byte TCP carried.', (c) => c.directionsResumed);
    kernel('sidecar_accel_sockets_released_total', 'Registered sockets that sent over TCP and could never pair, handed back to plain TCP.', (c) => c.socketsReleased);
    new client.Counter({
      name: 'sidecar_accel_fallbacks_total', help: 'Sockets or directions left on or moved to TCP, by reason.',
      labelNames: ['reason'], registers: [r],
      collect() {
        const s = source();
        this.reset();
        if (s) { const c = s.counters(); for (const [k, reason] of FALLBACK_REASONS) this.inc({ reason }, Number(c[k])); }
      },
    });
    // One walk of the maps' keys per scrape serves both gauges.
    let fill: { at: number; maps: MapFill[] } | undefined;
    const mapFill = (): MapFill[] => {
      const s = source();
      if (!s) return [];
      if (!fill || Date.now() - fill.at > 1000) fill = { at: Date.now(), maps: s.mapFill() };
      return fill.maps;
    };
    new client.Gauge({
      name: 'sidecar_accel_map_entries', help: 'Entries in the datapath maps that bound pairing (sock_hash: registered sockets; pod_addrs: known pod addresses).',
      labelNames: ['map'], registers: [r],
      collect() {
        this.reset();
        for (const m of mapFill()) this.set({ map: m.map }, m.entries);
      },
    });
    new client.Gauge({
      name: 'sidecar_accel_map_max_entries', help: 'Size of each of those maps in the attached generation (a full sock_hash leaves new sockets on TCP: fallbacks reason map_full).',
      labelNames: ['map'], registers: [r],
      collect() {
        this.reset();
        for (const m of mapFill()) this.set({ map: m.map }, m.maxEntries);
      },
    });
    new client.Gauge({
      name: 'sidecar_accel_workloads', help: 'Workloads on this node by state.', labelNames: ['state'], registers: [r],
      collect() {
        const s = source();
        this.reset();
        for (const state of ['enabled', 'disabled', 'error']) this.set({ state }, s ? s.workloads().filter((w) => w.state === state).length : 0);
      },
    });
    const perWorkload = (name: string, help: string, value: (c: Counters) => bigint) => new client.Counter({
      name, help, labelNames: ['namespace', 'workload', 'canonical_service', 'canonical_revision'], registers: [r],
      collect() {
        const s = source();
        this.reset();
        for (const w of s?.workloads() ?? []) {
          if (w.netnsCookie === null) continue;
          const c = s!.workloadCounters(BigInt(w.netnsCookie));
          if (c) this.inc({ namespace: w.namespace, workload: w.name, canonical_service: w.canonicalService, canonical_revision: w.canonicalRevision }, Number(value(c)));
        }
      },
    });
    perWorkload('sidecar_accel_workload_redirected_bytes_total', 'Bytes redirected, per enabled workload.', (c) => c.redirectedBytes);
    perWorkload('sidecar_accel_workload_sockets_paired_total', 'Sockets paired, per enabled workload.', (c) => c.socketsPaired);
    new client.Gauge({
      name: 'sidecar_accel_xds_state', help: 'The xds source: 1 for its current state (absent when not configured).',
      labelNames: ['state'], registers: [r],
      collect() {
        this.reset();
        const x = source()?.xds();
        if (x) for (const state of XDS_STATES) this.set({ state }, x.state === state ? 1 : 0);
      },
    });
    const xdsCounter = (name: string, help: string, value: (x: XdsHealth) => number) => new client.Counter({
      name, help, registers: [r],
      collect() {
        this.reset();
        const x = source()?.xds();
        if (x) this.inc(value(x));
      },
    });
    xdsCounter('sidecar_accel_xds_responses_total', 'xDS responses received from istiod.', (x) => x.responses);
    xdsCounter('sidecar_accel_xds_nacks_total', 'xDS responses rejected (NACK) for an invalid resource; the last good versions stayed.', (x) => x.nacks);
    this.configErrors = new client.Counter({ name: 'sidecar_accel_config_errors_total', help: 'Config versions rejected (the last good one stayed in force).', registers: [r] });
    this.reconcileErrors = new client.Counter({ name: 'sidecar_accel_reconcile_errors_total', help: 'Workloads that failed to reconcile (retried with backoff).', registers: [r] });
  }
}
