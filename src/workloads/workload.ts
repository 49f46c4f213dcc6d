// The one record every workload source yields: `local` (the config file) and
// `kubernetes` (the API server); the `xds` source adds what istiod knows of a
// kubernetes pod (`mesh`).
/**
 * Where a workload's network namespace is: a path, a pid in it, or
 * (Kubernetes) the pod's UID with its IPs (its netns must hold one of them).
 */
export type NetnsRef = { path: string } | { pid: number } | { podUid: string; ips: string[] };

export interface Workload {
  /** Stable identity within its source. */
  uid: string;
  name: string;
  namespace: string;
  annotations: Record<string, string>;
  labels: Record<string, string>;
  netns: NetnsRef;
  /**
   * The workload's own IPs when its netns is not found by them (a local
   * workload's config); a Kubernetes pod's are in `netns`.
   */
  ips?: string[];
  /** A hostNetwork pod shares the node's netns: never a candidate. */
  hostNetwork?: boolean;
  /** Istio revision (label istio.io/rev): selects the istio-<rev> mesh config. */
  revision?: string;
  source: 'local' | 'kubernetes';
  /**
   * A mesh workload known on this node: a local workload, or a kubernetes pod
   * (istiod's record when the xds source serves). Only these pair across pods.
   * Undefined: not known yet (istiod has not answered); the kernel's flag stays.
   */
  meshKnown?: boolean;
  /** istiod's tunnel protocol (NONE, HBONE, ...) when the xds source knows the pod. */
  tunnel?: string;
  /** istiod's canonical service and revision of the pod (metric labels). */
  canonicalService?: string;
  canonicalRevision?: string;
}

export interface Namespace {
  name: string;
  annotations: Record<string, string>;
  labels: Record<string, string>;
}

/** The addresses a workload's pod owns: its pod IPs (none for a hostNetwork pod, whose address is the node's). */
export function podAddressesOf(w: Workload): string[] {
  if (w.hostNetwork) return [];
  return 'podUid' in w.netns ? w.netns.ips : w.ips ?? [];
}

export function netnsRefText(n: NetnsRef): string {
  if ('path' in n) return n.path;
  if ('pid' in n) return `pid ${n.pid}`;
  return `pod ${n.podUid}`;
}
