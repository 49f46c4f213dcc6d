// Desired state -> kernel maps. Level-triggered (every run compares the whole
// desired set with what the kernel map holds), idempotent, retried with
// backoff on errors, and per workload all or nothing: a netns is enabled with
// its exclusions in one map update, or not at all.
import type { Logger } from 'pino';
import { decide, type Rule } from '../policy/policy.js';
import { netnsCookieOfPath, netnsCookieOfPid } from '../datapath/netns.js';
import type { NetnsPolicy } from '../datapath/layout.js';
import type { Namespace, Workload } from '../workloads/workload.js';
import { netnsRefText, podAddressesOf } from '../workloads/workload.js';
import { PodNetnsScan } from '../workloads/pod-netns.js';

export interface KernelTarget {
  enable(cookie: bigint, opts: EnableOptions): void;
  disable(cookie: bigint): boolean;
  enabledNetns(): Map<bigint, NetnsPolicy>;
  /**
   * The node's pod addresses (address -> its pod's netns cookie); with
   * `prune` false, addresses not in `want` are kept. Absent for a target
   * that cannot hold them.
   */
  setPodAddresses?(want: ReadonlyMap<string, bigint>, opts: { prune: boolean }): void;
}

/** What one netns is enabled with: every field of its policy, each stated. */
export type EnableOptions = Required<Omit<NetnsPolicy, 'enabled'>>;

export type WorkloadState = 'enabled' | 'disabled' | 'error';

export interface WorkloadStatus {
  source: Workload['source'];
  name: string;
  namespace: string;
  uid: string;
  enabled: boolean;
  state: WorkloadState;
  rule: Rule;
  netns: string;
  netnsCookie: string | null;
  excludePorts: number[];
  /** Eligible for cross-pod pairing (used when datapath.crossPod is on): a mesh workload known on this node. */
  crossPod: boolean;
  /** Its netns was enabled with its pod's addresses published (a sidecar's socket to no pod of this node is never registered). */
  addressesKnown: boolean;
  /** Its sidecar captures none of its applications' outbound (inbound) TCP: their sockets are judged by their other end. */
  outboundDirect: boolean;
  inboundDirect: boolean;
  canonicalService: string;
  canonicalRevision: string;
  warnings: string[];
  error?: string;
}

export interface DesiredState {
  workloads: Workload[];
  namespaces: Map<string, Namespace>;
  /** The MeshConfig that applies to a workload (per Istio revision). */
  meshFor: (w: Workload) => unknown;
  /**
   * False while a source has not listed yet (an agent restart, a replaced
   * source): a netns enabled in the kernel that no workload asks for is then
   * left as it is, not disabled, so a restart is hitless.
   */
  complete?: boolean;
}

export interface ReconcileResult { statuses: WorkloadStatus[]; errors: number }


function samePolicy(a: NetnsPolicy | undefined, want: EnableOptions): boolean {
  return !!a && a.enabled && a.crossPod === want.crossPod && (a.addressesKnown ?? false) === want.addressesKnown
    && (a.outboundDirect ?? false) === want.outboundDirect && (a.inboundDirect ?? false) === want.inboundDirect
    && a.excludePorts.length === want.excludePorts.length
    && a.excludePorts.every((p, i) => p === want.excludePorts[i]);
}

/**
 * Resolves the netns cookies of one pass's workloads. Pods are found in one
 * scan of `procRoot` (the host's /proc) for all of them, made up front; the
 * scan's netns handles stay open until close(), so a cookie is read from the
 * very netns the scan found.
 */
export class CookieResolver {
  private constructor(private readonly scan: PodNetnsScan | undefined, private readonly scanError: unknown) {}

  static forWorkloads(workloads: readonly Workload[], procRoot = '/proc'): CookieResolver {
    const pods = workloads.flatMap((w) => ('podUid' in w.netns ? [w.netns.podUid] : []));
    if (pods.length === 0) return new CookieResolver(undefined, undefined);
    try {
      return new CookieResolver(PodNetnsScan.scan(pods, { procRoot }), undefined);
    } catch (e) {
      return new CookieResolver(undefined, e);
    }
  }

  cookieOf(w: Workload): bigint {
    if ('path' in w.netns) return netnsCookieOfPath(w.netns.path);
    if ('pid' in w.netns) return netnsCookieOfPid(w.netns.pid);
    if (!this.scan) throw this.scanError instanceof Error ? this.scanError : new Error(`pod ${w.netns.podUid}: its netns was not looked for`);
    return netnsCookieOfPath(this.scan.netnsOf(w.netns.podUid, w.netns.ips).path);
  }

  close(): void {
    this.scan?.close();
  }
}

/**
 * One pass. `previous` lets it log state changes only. Errors of one
 * workload never stop the others.
 */
export function reconcileOnce(
  target: KernelTarget, desired: DesiredState, log: Logger, previous: Map<string, WorkloadStatus>,
  cookieOf: (w: Workload) => bigint,
): ReconcileResult {
  const statuses: WorkloadStatus[] = [];
  const want = new Map<bigint, {
    ports: number[]; known: (boolean | undefined)[]; owners: WorkloadStatus[]; addressed: boolean; addresses: string[];
    /** Every workload of the netns says its sidecar captures none of that direction. */
    outboundDirect: boolean; inboundDirect: boolean;
  }>();
  const keepOff = new Set<bigint>();
  /** Each pod address with the netns cookies of the workloads claiming it. */
  const claims = new Map<string, Set<bigint>>();
  let errors = 0;

  for (const w of desired.workloads) {
    const d = decide(w, desired.namespaces.get(w.namespace), desired.meshFor(w));
    const st: WorkloadStatus = {
      source: w.source, name: w.name, namespace: w.namespace, uid: w.uid, enabled: false, state: 'disabled', rule: d.rule,
      netns: netnsRefText(w.netns), netnsCookie: null, excludePorts: d.excludePorts, crossPod: false,
      addressesKnown: false, outboundDirect: false, inboundDirect: false,
      canonicalService: w.canonicalService ?? '', canonicalRevision: w.canonicalRevision ?? '', warnings: d.warnings,
    };
    statuses.push(st);
    let cookie: bigint;
    try {
      cookie = cookieOf(w);
    } catch (e) {
      // A pod whose netns is gone or not there yet: nothing to enable or to keep.
      st.state = d.enabled ? 'error' : 'disabled';
      st.error = `network namespace ${st.netns}: ${(e as Error).message}`;
      if (d.enabled) errors++;
      continue;
    }
    st.netnsCookie = cookie.toString();
    for (const ip of podAddressesOf(w)) claims.set(ip, (claims.get(ip) ?? new Set()).add(cookie));
    if (!d.enabled) { keepOff.add(cookie); continue; }
    const entry = want.get(cookie) ?? { ports: d.excludePorts, known: [], owners: [], addressed: true, addresses: [], outboundDirect: true, inboundDirect: true };
    entry.addressed &&= podAddressesOf(w).length > 0;
    entry.outboundDirect &&= !d.captures.outbound;
    entry.inboundDirect &&= !d.captures.inbound;
    entry.addresses.push(...podAddressesOf(w));
    entry.known.push(w.meshKnown);
    entry.owners.push(st);
    want.set(cookie, entry);
  }
  // Two workloads in one netns that disagree: off wins (never touch a netns someone wants left alone).
  for (const c of keepOff) {
    const e = want.get(c);
    if (e) {
      for (const o of e.owners) o.warnings.push('another workload in the same network namespace is disabled; left disabled');
      want.delete(c);
    }
  }

  // An address two netns claim is unique to neither: left out, its keys stay netns-scoped (I1).
  const podAddresses = new Map<string, bigint>();
  for (const [ip, cookies] of claims) {
    if (cookies.size === 1) podAddresses.set(ip, [...cookies][0]!);
    else log.warn({ address: ip, netnsCookies: [...cookies].map(String) }, 'a pod address claimed by two network namespaces: not treated as a pod address');
  }
  // Written before the netns policies that rely on them (ACCEL_NETNS_ADDRS_KNOWN).
  let addressesWritten = false;
  try {
    target.setPodAddresses?.(podAddresses, { prune: desired.complete !== false });
    addressesWritten = target.setPodAddresses !== undefined;
  } catch (err) {
    errors++;
    log.error({ err: (err as Error).message }, 'updating the pod addresses failed');
  }
  const actual = target.enabledNetns();
  for (const [cookie, e] of want) {
    // Cross-pod only when every workload of the netns is a known mesh
    // workload; while that is not known yet, the kernel's flag stays (new: off).
    const crossPod = e.known.includes(false) ? false : e.known.every((k) => k === true) ? true : actual.get(cookie)?.crossPod ?? false;
    // Every workload of the netns has addresses, all of them in pod_addrs as
    // its own (none claimed twice): only then may the datapath leave alone a
    // sidecar socket whose other end is none of this node's pods.
    const addressesKnown = addressesWritten && e.addressed && e.addresses.every((ip) => podAddresses.get(ip) === cookie);
    const opts: EnableOptions = { excludePorts: e.ports, crossPod, addressesKnown, outboundDirect: e.outboundDirect, inboundDirect: e.inboundDirect };
    try {
      if (!samePolicy(actual.get(cookie), opts)) target.enable(cookie, opts);
      for (const o of e.owners) Object.assign(o, { enabled: true, state: 'enabled', crossPod, addressesKnown, outboundDirect: e.outboundDirect, inboundDirect: e.inboundDirect });
    } catch (err) {
      errors++;
      for (const o of e.owners) { o.state = 'error'; o.error = `enabling: ${(err as Error).message}`; }
    }
  }
  for (const cookie of actual.keys()) {
    if (want.has(cookie)) continue;
    if (desired.complete === false && !keepOff.has(cookie)) continue;
    try {
      target.disable(cookie);
    } catch (err) {
      errors++;
      log.error({ netnsCookie: cookie.toString(), err: (err as Error).message }, 'disabling a network namespace failed');
    }
  }

  for (const st of statuses) {
    const prev = previous.get(st.uid);
    if (!prev || prev.state !== st.state || prev.rule !== st.rule || prev.error !== st.error) {
      const line = { workload: `${st.namespace}/${st.name}`, state: st.state, rule: st.rule, netnsCookie: st.netnsCookie,
        ...(st.excludePorts.length ? { excludePorts: st.excludePorts } : {}), ...(st.error ? { error: st.error } : {}) };
      if (st.state === 'error') log.error(line, 'workload state changed');
      else log.info(line, 'workload state changed');
    }
    if (st.warnings.length && JSON.stringify(prev?.warnings) !== JSON.stringify(st.warnings)) {
      log.warn({ workload: `${st.namespace}/${st.name}`, warnings: st.warnings }, 'malformed settings ignored');
    }
  }
  for (const [uid, prev] of previous) {
    if (!statuses.some((s) => s.uid === uid)) log.info({ workload: `${prev.namespace}/${prev.name}`, state: 'removed' }, 'workload state changed');
  }
  return { statuses, errors };
}
