// The `local` source: workloads and namespaces listed in the agent's own
// config file (one machine, the demo, bench and tests).
import type { AgentConfig } from '../config/schema.js';
import type { Namespace, Workload } from './workload.js';

export function localWorkloads(c: AgentConfig): Workload[] {
  return c.workloads.map((w) => ({
    uid: `${w.namespace}/${w.name}`,
    name: w.name,
    namespace: w.namespace,
    annotations: w.annotations,
    labels: w.labels,
    netns: w.netns !== undefined ? { path: w.netns } : { pid: w.pid! },
    ips: w.ips,
    source: 'local' as const,
  }));
}

export function localNamespaces(c: AgentConfig): Map<string, Namespace> {
  return new Map(c.namespaces.map((n) => [n.name, { name: n.name, annotations: n.annotations, labels: n.labels }]));
}
