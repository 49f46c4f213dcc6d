// `sidecar-accel agent`: the node service. Start-up checks, load or adopt the
// datapath (retiring older generations), self-test, then keep the kernel maps
// equal to what the config's workloads, namespaces and mesh config ask for,
// serve the read-only API, and reload the config on change or SIGHUP.
import fs from 'node:fs';
import { EventEmitter } from 'node:events';
import path from 'node:path';
import pino, { type Logger } from 'pino';
import type { FastifyInstance } from 'fastify';
import { Datapath, DEFAULT_PIN_ROOT, generationDirs } from '../datapath/datapath.js';
import { native } from '../datapath/native.js';
import type { Counters, NodeConfig } from '../datapath/layout.js';
import { loadConfigFile } from '../config/load.js';
import type { AgentConfig } from '../config/schema.js';
import { ConfigWatcher } from '../config/watch.js';
import { localNamespaces, localWorkloads } from '../workloads/local.js';
import { reconcileOnce, CookieResolver, type WorkloadStatus } from '../reconcile/reconciler.js';
import type { XdsHealth } from '../workloads/xds.js';
import { buildSources, sourcesChanged, startSources, stopSources, type Sources } from './sources.js';
import { joinMesh } from '../workloads/join.js';
import { AgentMetrics } from '../api/metrics.js';
import { buildApi, ConnsQueryError } from '../api/server.js';
import { collectConns, ConnsError, UnknownPodError, type ConnsReport } from '../conns/kernel.js';
import {
  StartupError, checkCapabilities, checkHostCgroupRoot, checkKernel, checkNoForeignSockops, resolveCgroup,
} from './checks.js';
import { runSelfTest, type SelfTestMode } from './selftest.js';
import { Backoff } from '../util/backoff.js';

export interface AgentOptions {
  log?: Logger;
  /** Skip the start-up self-test (tests that start many agents run it once). */
  skipSelfTest?: boolean;
}

const RESYNC_MS = 10_000;

/** Program ids of every pinned generation of ours (for the foreign-program check). */
function ourProgramIds(pinRoot: string): Set<number> {
  const ids = new Set<number>();
  const n = native();
  for (const dir of generationDirs(pinRoot)) {
    const p = path.join(dir, 'prog_accel_sockops');
    if (!fs.existsSync(p)) continue;
    const fd = n.objGet(p);
    try { ids.add(n.progInfo(fd).id); } finally { n.closeFd(fd); }
  }
  return ids;
}

/** The datapath's node settings from the agent config and the self-test's verdict on this kernel. */
function nodeConfig(c: AgentConfig, kernelMode: SelfTestMode): NodeConfig {
  const sidecarOnly = c.datapath.applications === 'never' || (c.datapath.applications === 'auto' && kernelMode === 'sidecar-only');
  return {
    crossPod: c.datapath.crossPod, keepaliveIdleSeconds: c.datapath.keepaliveIdleSeconds,
    backpressureHoldoffMs: c.datapath.backpressureHoldoffMs, proxyUid: c.datapath.proxyUid, sidecarOnly,
  };
}

export class Agent {
  private statuses = new Map<string, WorkloadStatus>();
  private reconciled = false;
  private timer?: NodeJS.Timeout;
  /** Passes with errors, in a row. */
  private readonly retry = new Backoff({ initialMs: 500, maxMs: 30_000 });
  private stopped = false;
  readonly metrics: AgentMetrics;
  api?: FastifyInstance;
  private watcher?: ConfigWatcher;
  private sources: Sources = {};
  /** `reconciled` after every pass, with the workloads' states. */
  readonly events = new EventEmitter<{ reconciled: [WorkloadStatus[]] }>();

  private constructor(
    readonly configPath: string,
    private config: AgentConfig,
    readonly dp: Datapath,
    private readonly draining: Datapath[],
    readonly log: Logger,
    /** The self-test's verdict on this kernel ("full" when it was skipped). */
    readonly kernelMode: SelfTestMode,
  ) {
    this.metrics = new AgentMetrics(() => (this.stopped ? undefined : {
      counters: () => this.dp.counters(),
      workloads: () => this.workloads(),
      workloadCounters: (c: bigint) => this.dp.netnsCounters(c),
      mapFill: () => this.dp.mapFill(),
      xds: () => this.sources.xds?.health(),
    }));
  }

  static async start(configPath: string, opts: AgentOptions = {}): Promise<Agent> {
    const log = opts.log ?? pino({ base: { component: 'sidecar-accel' } });
    const loaded = loadConfigFile(configPath);
    if (!loaded.ok) throw new StartupError(`config: ${loaded.error}`);
    const config = loaded.config;
    // Built (not started) before the kernel is touched: a missing node name or a
    // kubeconfig the client would refuse is a one-line refusal, not a loaded datapath.
    let agent: Agent | undefined;
    const sources = buildSources(config, log, () => agent?.reconcile());
    checkCapabilities();
    checkKernel();
    const cgroup = resolveCgroup(config.datapath.cgroup);
    checkHostCgroupRoot(cgroup, !config.datapath.requireRootCgroup);
    const pinRoot = config.datapath.pinDir;
    if (fs.existsSync(path.dirname(pinRoot))) checkNoForeignSockops(cgroup, ourProgramIds(pinRoot));
    else checkNoForeignSockops(cgroup, new Set());

    const capacity = { sockHash: config.datapath.sockHashEntries };
    if (config.datapath.peerInfoEntries !== undefined) log.warn('datapath.peerInfoEntries is ignored: peer_info is sized by the agent now (twice datapath.sockHashEntries)');
    const dp = Datapath.open({ cgroupPath: cgroup, pinRoot, capacity, ...(config.datapath.object ? { objectPath: config.datapath.object } : {}) });
    const has = dp.capacity();
    log.info({ generation: dp.generation, adopted: dp.adopted, cgroup, pinDir: dp.pinDir, sockHashEntries: has.sockHash }, dp.adopted ? 'adopted the pinned datapath' : 'loaded the datapath');
    if (dp.adopted && has.sockHash !== capacity.sockHash) {
      // Map sizes are fixed at creation; live connections keep this generation's maps.
      log.warn({ sockHashEntries: has.sockHash },
        'the adopted generation keeps the map size it was loaded with; datapath.sockHashEntries applies to the next generation loaded');
    }
    // An upgrade: older generations stop taking new sockets and drain.
    const draining: Datapath[] = [];
    for (const dir of generationDirs(pinRoot)) {
      if (dir === dp.pinDir) continue;
      const old = Datapath.openPinned(dir, cgroup);
      if (old.linked) {
        old.retire();
        log.info({ generation: old.generation }, 'retired an older generation; it drains as its connections close');
      }
      draining.push(old);
    }
    dp.setConfig(nodeConfig(config, 'full'));

    let kernelMode: SelfTestMode = 'full';
    if (!opts.skipSelfTest) {
      const st = await runSelfTest(dp);
      const failed = st.checks.filter((c) => !c.ok);
      const named = (kind: string) => failed.filter((c) => c.kind === kind).map((c) => `${c.name}: ${c.detail}`).join('; ');
      if (st.mode === 'refuse') {
        if (!dp.adopted) dp.uninstall(); else dp.close();
        throw new StartupError(`self-test failed on this kernel, refusing to accelerate: ${named('required') || 'no result'}`);
      }
      if (named('informational')) log.warn({}, `known limitation on this kernel: ${named('informational')}`);
      kernelMode = st.mode;
      if (kernelMode === 'sidecar-only') {
        const what = `this kernel shows a paired application socket something TCP would not (${named('application')})`;
        if (config.datapath.applications === 'always') log.warn({}, `${what}; datapath.applications is "always": applications' sockets are paired anyway`);
        else log.warn({}, `${what}: only the sidecar's own sockets are paired (sidecar-only mode; datapath.applications)`);
      }
      dp.setConfig(nodeConfig(config, kernelMode));
      log.info({ checks: st.checks.map((c) => c.name), mode: st.mode }, 'self-test passed');
    }

    agent = new Agent(configPath, config, dp, draining, log, kernelMode);
    agent.sources = sources;
    startSources(agent.sources, config, log);
    agent.reconcile();
    await agent.listen();
    agent.watch();
    return agent;
  }

  private async listen(): Promise<void> {
    const listen = this.config.api.listen;
    const i = listen.lastIndexOf(':');
    this.api = buildApi({
      ready: () => {
        if (!this.reconciled) return { ready: false, reason: 'first reconcile pending' };
        if (!this.dp.linked) return { ready: false, reason: 'datapath not attached' };
        if (this.sources.kube && !this.sources.kube.health().synced) return { ready: false, reason: `kubernetes source not synced: ${this.sources.kube.health().lastError ?? 'listing'}` };
        return { ready: true };
      },
      workloads: () => this.workloads(),
      stats: () => this.stats(),
      conns: (pod) => this.conns(pod),
    }, this.metrics);
    await this.api.listen({ host: listen.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(listen.slice(i + 1)) });
    this.log.info({ listen }, 'API listening');
  }

  private watch(): void {
    this.watcher = new ConfigWatcher(this.configPath, this.config);
    this.watcher.on('config', (c) => this.applyConfig(c));
    this.watcher.on('invalid', (error) => {
      this.metrics.configErrors.inc();
      this.log.error({ error }, 'config rejected');
    });
    this.watcher.start();
  }

  private applyConfig(c: AgentConfig): void {
    const old = this.config.datapath;
    if (c.datapath.cgroup !== old.cgroup || c.datapath.pinDir !== old.pinDir || c.api.listen !== this.config.api.listen) {
      this.log.warn({}, 'datapath.cgroup, datapath.pinDir and api.listen take effect on restart; the rest is applied now');
    }
    if (sourcesChanged(this.config, c)) this.replaceSources(c);
    this.config = c;
    this.dp.setConfig(nodeConfig(c, this.kernelMode));
    this.log.info({ workloads: c.workloads.length, namespaces: c.namespaces.length }, 'config reloaded');
    this.reconcile();
  }

  /** New kubernetes/xds settings: new sources, or the old ones kept if the new cannot be built. */
  private replaceSources(c: AgentConfig): void {
    let next: Sources;
    try {
      next = buildSources(c, this.log, () => this.reconcile());
    } catch (e) {
      this.metrics.configErrors.inc();
      this.log.error({ error: (e as Error).message }, 'new kubernetes/xds settings cannot be applied; the current sources stay');
      return;
    }
    void stopSources(this.sources);
    this.sources = next;
    startSources(next, c, this.log);
    this.log.info({ kubernetes: c.kubernetes.enabled, xds: c.xds.enabled }, 'workload sources replaced');
  }

  /** One level-triggered pass; schedules the next (sooner, with backoff, after errors). */
  reconcile(): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    let errors = 0;
    try {
      const kube = this.sources.kube;
      // Until every watch has listed, what the API server holds is unknown:
      // its pods are left out and no netns is disabled for their absence.
      const kubeSynced = !kube || kube.health().synced;
      // Pods not listed yet keep their last known status (they were neither removed nor changed).
      const previous = new Map(this.statuses);
      const carried: WorkloadStatus[] = [];
      if (!kubeSynced) for (const [uid, s] of this.statuses) if (s.source === 'kubernetes') { carried.push(s); previous.delete(uid); }
      const namespaces = new Map([...(kube?.namespaces() ?? []), ...localNamespaces(this.config)]);
      const procRoot = this.config.kubernetes.hostProc;
      const workloads = joinMesh([...localWorkloads(this.config), ...(kubeSynced ? kube?.workloads() ?? [] : [])], this.sources.xds);
      // One pass over the host's /proc for every pod of this reconcile.
      const cookies = CookieResolver.forWorkloads(workloads, procRoot);
      let r;
      try {
        r = reconcileOnce(this.dp, {
          workloads,
          namespaces,
          // In a cluster the istio ConfigMap is the truth; the config's mesh is the fallback.
          meshFor: (w) => (w.source === 'kubernetes' ? kube?.meshFor(w) ?? this.config.mesh : this.config.mesh),
          complete: kubeSynced,
        }, this.log, previous, (w) => cookies.cookieOf(w));
      } finally {
        cookies.close();
      }
      this.statuses = new Map([...r.statuses, ...carried].map((s) => [s.uid, s]));
      errors = r.errors;
      this.drainOldGenerations();
    } catch (e) {
      errors = 1;
      this.log.error({ err: (e as Error).message }, 'reconcile failed');
    }
    this.reconciled = true;
    let delay = RESYNC_MS;
    if (errors) {
      this.metrics.reconcileErrors.inc(errors);
      delay = this.retry.failed();
    } else {
      this.retry.reset();
    }
    this.timer = setTimeout(() => this.reconcile(), delay);
    this.timer.unref();
    this.events.emit('reconciled', this.workloads());
  }

  /** Old generations follow disables too, and are unpinned once their last socket is gone. */
  private drainOldGenerations(): void {
    const keep = this.dp.enabledNetns();
    for (const old of [...this.draining]) {
      // Keys only: an older generation's values may have another layout.
      for (const cookie of old.enabledNetnsCookies()) if (!keep.has(cookie)) old.disable(cookie);
      if (old.socketCount() === 0) {
        old.uninstall();
        this.draining.splice(this.draining.indexOf(old), 1);
        this.log.info({ generation: old.generation }, 'older generation drained and unpinned');
      }
    }
  }

  workloads(): WorkloadStatus[] {
    return [...this.statuses.values()];
  }

  stats(): { node: Counters; generation: string; attached: boolean; crossPod: boolean; sidecarOnly: boolean; kernelMode: SelfTestMode; xds: XdsHealth | null; workloads: { namespace: string; name: string; counters: Counters | null }[] } {
    const cfg = this.dp.config();
    return {
      xds: this.sources.xds?.health() ?? null,
      node: this.dp.counters(),
      generation: this.dp.generation,
      attached: this.dp.linked,
      crossPod: cfg.crossPod,
      sidecarOnly: cfg.sidecarOnly,
      kernelMode: this.kernelMode,
      workloads: this.workloads().map((w) => ({
        namespace: w.namespace, name: w.name, counters: w.netnsCookie ? this.dp.netnsCounters(BigInt(w.netnsCookie)) : null,
      })),
    };
  }

  /** The enabled pods' connections, read from the kernel now, named by this agent's workloads. */
  conns(pod?: string): ConnsReport {
    const names = new Map<bigint, string>();
    for (const w of this.workloads()) if (w.netnsCookie && w.enabled) names.set(BigInt(w.netnsCookie), `${w.namespace}/${w.name}`);
    try {
      return collectConns({
        pinRoot: path.dirname(this.dp.pinDir), cgroupPath: this.dp.cgroupPath, procRoot: this.config.kubernetes.hostProc,
        podOf: (c) => names.get(c) ?? null, ...(pod ? { pod } : {}),
      });
    } catch (e) {
      if (e instanceof UnknownPodError) throw new ConnsQueryError(e.message, 404);
      if (e instanceof ConnsError) throw new ConnsQueryError(e.message, 503);
      throw e;
    }
  }

  /** Stops serving; the datapath stays pinned and working (hitless restart). */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.timer);
    this.watcher?.stop();
    await stopSources(this.sources);
    await this.api?.close();
    for (const d of this.draining) d.close();
    this.dp.close();
    this.log.info({}, 'stopped; the datapath stays pinned');
  }
}

export { DEFAULT_PIN_ROOT };
