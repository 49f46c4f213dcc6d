// The one record every workload source yields (local file today; Kubernetes
// and xDS later).
export type NetnsRef = { path: string } | { pid: number };

export interface Workload {
  /** Stable identity within its source. */
  uid: string;
  name: string;
  namespace: string;
  annotations: Record<string, string>;
  labels: Record<string, string>;
  netns: NetnsRef;
  source: 'local';
}

export interface Namespace {
  name: string;
  annotations: Record<string, string>;
  labels: Record<string, string>;
}

export function netnsRefText(n: NetnsRef): string {
  return 'path' in n ? n.path : `pid ${n.pid}`;
}
