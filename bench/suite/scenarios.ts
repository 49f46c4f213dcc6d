// The bench's scenarios and workloads (docs/design.md 8), and how each exchange
// runs: which pods, which address, which native client.
import type { Pod } from '../../lab/topology/topology.js';
import { SERVICE_VIP4 } from '../../lab/topology/topology.js';
import { SERVICE_PORT } from '../../lab/topology/pair.js';
import { httpGet, rrClient, rrStream, startAnsweredRr, withServer, wrkHttp, type RrAddress } from '../../lab/measure/tools.js';
import type { LineProcess } from '../../src/util/lines.js';
import { APP_PORT, PLAIN_HTTP_PORT, type BenchPods, type PodPair } from './pods.js';

export const SCENARIOS = ['nomesh', 'istio-iptables', 'accel', 'accel-crosspod', 'accel-unpaired', 'uds-floor'] as const;
export type ScenarioName = typeof SCENARIOS[number];

/** Which hops the kernel must show redirected for a round to count. */
export type Expectation = 'none' | 'in-pod' | 'all' | 'unpaired';

export interface Scenario {
  name: ScenarioName;
  /** null: no program of ours may be attached; else the agent runs with this cross-pod setting. */
  agent: null | { crossPod: boolean };
  /** The pods and path of the exchange. */
  path: 'plain' | 'mesh' | 'uds';
  expect: Expectation;
  about: string;
}

export const SCENARIO_SPECS: Record<ScenarioName, Scenario> = {
  'nomesh': { name: 'nomesh', agent: null, path: 'plain', expect: 'none', about: 'app -> app across the node bridge, no sidecars' },
  'istio-iptables': { name: 'istio-iptables', agent: null, path: 'mesh', expect: 'none', about: 'app -> sidecar -> sidecar -> app, Istio REDIRECT rules, no programs' },
  'accel': { name: 'accel', agent: { crossPod: false }, path: 'mesh', expect: 'in-pod', about: 'istio-iptables with sidecar-accel on: app <-> sidecar hops redirected' },
  'accel-crosspod': { name: 'accel-crosspod', agent: { crossPod: true }, path: 'mesh', expect: 'all', about: 'accel plus cross-pod pairing: every hop redirected' },
  'accel-unpaired': { name: 'accel-unpaired', agent: { crossPod: true }, path: 'plain', expect: 'unpaired', about: 'nomesh with the client pod enabled (its annotations say nothing captures its outbound traffic) and a peer that cannot be paired' },
  'uds-floor': { name: 'uds-floor', agent: null, path: 'uds', expect: 'none', about: 'the same exchange over a unix domain socket in one pod' },
};

export type WorkloadName = 'rr' | 'http' | 'crr' | 'stream';

export interface WorkloadPoint { workload: WorkloadName; conns: number; size: number | null }

export function workloadPoints(): WorkloadPoint[] {
  const pts: WorkloadPoint[] = [];
  for (const conns of [1, 16]) for (const size of [64, 1024, 16384]) pts.push({ workload: 'rr', conns, size });
  for (const conns of [1, 16]) pts.push({ workload: 'http', conns, size: null });
  pts.push({ workload: 'crr', conns: 1, size: 64 });
  pts.push({ workload: 'stream', conns: 1, size: null });
  return pts;
}

/** Why a workload does not apply to a scenario, or null when it does. */
export function notApplicable(s: ScenarioName, w: WorkloadName): string | null {
  if (s === 'uds-floor' && w === 'http') return 'wrk speaks TCP only';
  return null;
}

export interface Exchange {
  /** The pods whose sockets carry a workload's exchange (verification looks at these). */
  podsOf(w: WorkloadName): Pod[];
  /**
   * Starts the workload's server and has it answer once: sidecar-accel pairs
   * an app's accepted sockets once their listener was seen reading
   * non-blocking (I6 in bpf/), as any server is after its first request.
   * Not part of the measurement.
   */
  prepare(point: WorkloadPoint): Promise<void>;
  /** Measures; stops what prepare started. */
  run(point: WorkloadPoint, seconds: number): Promise<Measured>;
}

/** crr: the median of each part of a connection's time, from the rr client. */
export interface CrrPhases { connect_p50_us: number; request_p50_us: number; close_p50_us: number }

export interface Measured {
  requests: number | null; seconds: number; p50_us: number | null; p90_us: number | null; p99_us: number | null; gbps: number | null;
  crr?: CrrPhases;
}

/** How a scenario's exchange is run on the bench pods. */
export function exchangeOf(s: Scenario, pods: BenchPods): Exchange {
  const paths: Record<Scenario['path'], { pair: PodPair; target: RrAddress; httpUrl: string }> = {
    plain: { pair: pods.plain, target: { tcp: pods.plain.server.ip4, port: APP_PORT }, httpUrl: `http://${pods.plain.server.ip4}:${PLAIN_HTTP_PORT}/` },
    mesh: { pair: pods.mesh, target: { tcp: SERVICE_VIP4, port: SERVICE_PORT }, httpUrl: `http://${SERVICE_VIP4}:${SERVICE_PORT}/` },
    uds: { pair: { client: pods.plain.client, server: pods.plain.client }, target: { unix: pods.topo.file('rr.sock') }, httpUrl: '' },
  };
  const byPath = paths[s.path];
  const { pair } = byPath;
  // The server listens where the sidecar (or the client) sends: the app port
  // of the server pod, or the unix socket.
  const listen: RrAddress = 'unix' in byPath.target ? byPath.target : { tcp: '0.0.0.0', port: APP_PORT };
  let server: LineProcess | undefined;
  return {
    podsOf: (w) => {
      const p = s.path === 'mesh' && w === 'http' ? pods.http : pair;
      return p.client === p.server ? [p.client] : [p.client, p.server];
    },
    async prepare(point) {
      switch (point.workload) {
        case 'rr':
        case 'crr':
          server = await startAnsweredRr('server', pair.server, listen, pair.client, byPath.target);
          return;
        case 'http':
          await httpGet(s.path === 'mesh' ? pods.http.client : pair.client, byPath.httpUrl);
          return;
        case 'stream':
          server = await startAnsweredRr('sink', pair.server, listen, pair.client, byPath.target);
          return;
      }
    },
    async run(point, seconds) {
      const prepared = server;
      server = undefined;
      const started = async () => {
        if (!prepared) throw new Error('exchange run without prepare');
        return prepared;
      };
      switch (point.workload) {
        case 'rr':
        case 'crr': {
          const r = await withServer(started,
            () => rrClient(pair.client, byPath.target, { conns: point.conns, size: point.size ?? 64, seconds, crr: point.workload === 'crr' }));
          const crr = r.connect_p50_us !== undefined && r.request_p50_us !== undefined && r.close_p50_us !== undefined
            ? { connect_p50_us: r.connect_p50_us, request_p50_us: r.request_p50_us, close_p50_us: r.close_p50_us } : undefined;
          return { requests: r.requests, seconds: r.seconds, p50_us: r.p50_us, p90_us: r.p90_us, p99_us: r.p99_us, gbps: null, ...(crr ? { crr } : {}) };
        }
        case 'http': {
          const client = s.path === 'mesh' ? pods.http.client : pair.client;
          const r = await wrkHttp(client, byPath.httpUrl, point.conns, seconds);
          return { ...r, gbps: null };
        }
        case 'stream': {
          const gbps = await withServer(started, () => rrStream(pair.client, byPath.target, seconds));
          return { requests: null, seconds, p50_us: null, p90_us: null, p99_us: null, gbps };
        }
      }
    },
  };
}
