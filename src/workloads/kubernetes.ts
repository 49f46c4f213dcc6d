// The `kubernetes` workload source: list+watch the pods of this node
// (spec.nodeName), every namespace, and Istio's mesh ConfigMaps (`istio` and
// revisioned `istio-<rev>` in istio-system). @kubernetes/client-node's
// ListWatch relists on 410 Gone, follows bookmarks and re-watches when a watch
// ends; on any other error it stops, and this source restarts it with
// exponential backoff and jitter. Meanwhile the last known objects stay in
// force, so an API server outage never changes the datapath.
import * as k8s from '@kubernetes/client-node';
import YAML from 'yaml';
import type { Logger } from 'pino';
import type { Namespace, Workload } from './workload.js';
import { coalesced } from '../util/coalesce.js';
import { Backoff, type BackoffPolicy } from '../util/backoff.js';

export const ISTIO_REVISION_LABEL = 'istio.io/rev';

export interface KubernetesSourceOptions {
  kubeConfig: k8s.KubeConfig;
  nodeName: string;
  istioNamespace?: string;
  log: Logger;
  /** Called (coalesced) whenever what the source knows changed. */
  onChange: () => void;
  /** Of each watch's restarts; default 1 s doubling to 60 s. */
  backoff?: BackoffPolicy;
}

interface Watched<T extends k8s.KubernetesObject> {
  name: string;
  lw: k8s.ListWatch<T>;
  retry: Backoff;
  timer?: NodeJS.Timeout;
  synced: boolean;
  lastError?: string;
}

export interface SourceHealth { synced: boolean; errors: number; lastError?: string }

/** The pod's IPs as the kubelet reports them (status.podIPs; podIP alone from older API servers). */
export function podIps(status: { podIP?: string; podIPs?: { ip?: string }[] } | undefined): string[] {
  const ips = (status?.podIPs ?? []).map((p) => p.ip).filter((ip): ip is string => typeof ip === 'string' && ip !== '');
  if (ips.length === 0 && status?.podIP) ips.push(status.podIP);
  return ips;
}

function errorText(e: unknown): string {
  if (e instanceof Error) return e.message;
  const o = e as { code?: unknown; statusCode?: unknown; message?: unknown } | undefined;
  return o ? `${String(o.statusCode ?? o.code ?? '')} ${String(o.message ?? '')}`.trim() || JSON.stringify(o) : String(e);
}

export class KubernetesSource {
  private readonly watched: Watched<k8s.KubernetesObject>[] = [];
  private readonly pods: Watched<k8s.V1Pod>;
  private readonly nss: Watched<k8s.V1Namespace>;
  private readonly cms: Watched<k8s.V1ConfigMap>;
  private errors = 0;
  private stopped = true;
  private readonly notify = coalesced(() => { if (!this.stopped) this.opts.onChange(); });
  private saidSynced = false;
  private readonly backoff: BackoffPolicy;

  constructor(private readonly opts: KubernetesSourceOptions) {
    this.backoff = opts.backoff ?? { initialMs: 1000, maxMs: 60_000 };
    const api = opts.kubeConfig.makeApiClient(k8s.CoreV1Api);
    const watch = new k8s.Watch(opts.kubeConfig);
    const istioNs = opts.istioNamespace ?? 'istio-system';
    const fieldSelector = `spec.nodeName=${opts.nodeName}`;
    this.pods = this.add('pods', new k8s.ListWatch<k8s.V1Pod>('/api/v1/pods', watch,
      () => api.listPodForAllNamespaces({ fieldSelector }), false, undefined, fieldSelector));
    this.nss = this.add('namespaces', new k8s.ListWatch<k8s.V1Namespace>('/api/v1/namespaces', watch,
      () => api.listNamespace(), false));
    this.cms = this.add('configmaps', new k8s.ListWatch<k8s.V1ConfigMap>(`/api/v1/namespaces/${istioNs}/configmaps`, watch,
      () => api.listNamespacedConfigMap({ namespace: istioNs }), false));
  }

  private add<T extends k8s.KubernetesObject>(name: string, lw: k8s.ListWatch<T>): Watched<T> {
    const w: Watched<T> = { name, lw, retry: new Backoff(this.backoff), synced: false };
    for (const ev of [k8s.ADD, k8s.UPDATE, k8s.DELETE] as const) {
      lw.on(ev, () => { w.retry.reset(); w.synced = true; this.changed(); });
    }
    lw.on(k8s.CONNECT, () => { w.lastError = undefined; });
    lw.on(k8s.ERROR, (err: unknown) => this.failed(w, err));
    this.watched.push(w as unknown as Watched<k8s.KubernetesObject>);
    return w;
  }

  private changed(): void {
    if (!this.saidSynced && this.watched.every((w) => w.synced)) {
      this.saidSynced = true;
      this.opts.log.info({ watches: this.watched.map((w) => w.name) }, 'kubernetes source synced');
    }
    this.notify();
  }

  private failed(w: Watched<k8s.KubernetesObject>, err: unknown): void {
    if (this.stopped) return;
    this.errors++;
    w.lastError = errorText(err);
    const delay = w.retry.failed();
    this.opts.log.warn({ watch: w.name, err: w.lastError, retryInMs: delay }, 'list/watch failed; keeping the last known state');
    clearTimeout(w.timer);
    w.timer = setTimeout(() => void this.begin(w), delay);
  }

  private async begin(w: Watched<k8s.KubernetesObject>): Promise<void> {
    if (this.stopped) return;
    try {
      await w.lw.start();
      // A list that succeeded marks the cache as complete even with no objects.
      if (w.lw.latestResourceVersion()) { w.synced = true; this.changed(); }
    } catch (e) {
      this.failed(w, e);
    }
  }

  start(): void {
    this.stopped = false;
    for (const w of this.watched) void this.begin(w);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const w of this.watched) {
      clearTimeout(w.timer);
      await w.lw.stop();
    }
  }

  /** True once every watch has listed at least once. */
  health(): SourceHealth {
    const lastError = this.watched.map((w) => w.lastError).find((e) => e !== undefined);
    return { synced: this.watched.every((w) => w.synced), errors: this.errors, ...(lastError ? { lastError } : {}) };
  }

  /** Pods of this node as workloads (the policy decides which are candidates). */
  workloads(): Workload[] {
    return this.pods.lw.list().flatMap((p): Workload[] => {
      const md = p.metadata;
      if (!md?.uid || !md.name || !md.namespace) return [];
      if (p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed') return [];
      const labels = md.labels ?? {};
      return [{
        uid: md.uid, name: md.name, namespace: md.namespace, annotations: md.annotations ?? {}, labels,
        netns: { podUid: md.uid, ips: podIps(p.status) }, hostNetwork: p.spec?.hostNetwork === true,
        ...(labels[ISTIO_REVISION_LABEL] ? { revision: labels[ISTIO_REVISION_LABEL] } : {}), source: 'kubernetes',
      }];
    });
  }

  namespaces(): Map<string, Namespace> {
    return new Map(this.nss.lw.list().flatMap((n): [string, Namespace][] => (n.metadata?.name
      ? [[n.metadata.name, { name: n.metadata.name, annotations: n.metadata.annotations ?? {}, labels: n.metadata.labels ?? {} }]]
      : [])));
  }

  /**
   * MeshConfig for a workload: ConfigMap `istio-<rev>` for a revisioned pod,
   * else `istio`; undefined when there is none (or it does not parse, which
   * is logged by the caller as a policy warning through `meshWarnings`).
   */
  meshFor(w: Workload): unknown {
    const name = w.revision && w.revision !== 'default' ? `istio-${w.revision}` : 'istio';
    const cm = this.cms.lw.list().find((c) => c.metadata?.name === name);
    const text = cm?.data?.mesh;
    if (text === undefined) return undefined;
    try {
      return YAML.parse(text) as unknown;
    } catch {
      return `ConfigMap ${name}: data.mesh is not YAML`;
    }
  }
}
