// The workload sources a config asks for, beyond its local workloads: the
// kubernetes source (pods of this node, namespaces, Istio's mesh ConfigMaps)
// and the xds source (istiod's workload API). Built together so that a
// changed config can replace them as a whole, or keep the old ones when the
// new ones cannot be built.
import * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';
import type { AgentConfig } from '../config/schema.js';
import { KubernetesSource } from '../workloads/kubernetes.js';
import { XdsSource, identityFromEnv } from '../workloads/xds.js';
import { StartupError } from './checks.js';

export interface Sources { kube?: KubernetesSource; xds?: XdsSource }

/**
 * The kubeconfig file, or the in-cluster config, checked for what the client
 * library would otherwise refuse at every request, retried for ever.
 */
export function loadKubeConfig(file: string | undefined): k8s.KubeConfig {
  const kubeConfig = new k8s.KubeConfig();
  const what = file ?? 'the in-cluster config';
  try {
    if (file) kubeConfig.loadFromFile(file); else kubeConfig.loadFromCluster();
  } catch (e) {
    throw new StartupError(`kubernetes: cannot load ${what}: ${(e as Error).message}`);
  }
  const cluster = kubeConfig.getCurrentCluster();
  if (!cluster) throw new StartupError(`kubernetes: ${what}: its current context (${JSON.stringify(kubeConfig.getCurrentContext())}) names no cluster`);
  // The library refuses plain HTTP unless the cluster opts in (there is no TLS to verify).
  if (cluster.server.startsWith('http:') && !cluster.skipTLSVerify) {
    throw new StartupError(`kubernetes: ${what}: cluster ${JSON.stringify(cluster.name)} has a plain HTTP server (${cluster.server}); `
      + 'the Kubernetes client refuses it unless that cluster sets insecure-skip-tls-verify: true (kubectl proxy, for one, serves plain HTTP)');
  }
  return kubeConfig;
}

/** Builds (does not start) the sources of `c`; a StartupError says what is missing. */
export function buildSources(c: AgentConfig, log: Logger, onChange: () => void): Sources {
  const kc = c.kubernetes;
  if (!kc.enabled) return {};
  const nodeName = kc.nodeName ?? process.env.NODE_NAME;
  if (!nodeName) throw new StartupError('kubernetes.enabled needs kubernetes.nodeName or the NODE_NAME environment variable');
  const kubeConfig = loadKubeConfig(kc.kubeconfig);
  const kube = new KubernetesSource({
    kubeConfig, nodeName, istioNamespace: kc.istioNamespace, log: log.child({ source: 'kubernetes' }), onChange,
  });
  const xc = c.xds;
  if (!xc.enabled) return { kube };
  let xds: XdsSource;
  try {
    xds = new XdsSource({
      connection: {
        address: xc.address, plaintext: xc.plaintext, caFile: xc.caFile,
        ...(xc.plaintext ? {} : { tokenFile: xc.tokenFile }), ...(xc.serverName ? { serverName: xc.serverName } : {}),
      },
      identity: identityFromEnv(nodeName, xc.clusterId, `sidecar-accel-${nodeName}`),
      log: log.child({ source: 'xds' }), onChange, noAnswerMs: xc.noAnswerSeconds * 1000,
    });
  } catch (e) {
    throw new StartupError(`xds: ${(e as Error).message}`);
  }
  return { kube, xds };
}

/**
 * Starts them. The xds source never holds readiness back: in a sidecar-only
 * mesh istiod serves no workload API and the kubernetes source is enough.
 */
export function startSources(s: Sources, c: AgentConfig, log: Logger): void {
  if (s.kube) {
    s.kube.start();
    log.info({ nodeName: c.kubernetes.nodeName ?? process.env.NODE_NAME }, 'watching pods of this node');
  }
  if (s.xds) {
    s.xds.start();
    log.info({ address: c.xds.address, plaintext: c.xds.plaintext }, 'subscribing to istiod\'s workload API');
  }
}

export async function stopSources(s: Sources): Promise<void> {
  s.xds?.stop();
  await s.kube?.stop();
}

/** True when `b` asks for other sources than `a` (they are then rebuilt). */
export function sourcesChanged(a: AgentConfig, b: AgentConfig): boolean {
  return JSON.stringify([a.kubernetes, a.xds]) !== JSON.stringify([b.kubernetes, b.xds]);
}
