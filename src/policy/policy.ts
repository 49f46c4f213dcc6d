// Whether a pod is accelerated, and which rule decided: a pure function of
// the pod, its namespace and the mesh config (docs/design.md 6). Malformed input
// is a warning and counts as absent; it never throws.
import YAML from 'yaml';
import {
  ANNOTATION_AMBIENT_REDIRECTION, ANNOTATION_ENABLED, ANNOTATION_EXCLUDE_PORTS, ANNOTATION_PROXY_CONFIG,
  ANNOTATION_INCLUDE_INBOUND_PORTS, ANNOTATION_INCLUDE_OUTBOUND_IP_RANGES, ANNOTATION_INCLUDE_OUTBOUND_PORTS,
  ANNOTATION_INTERCEPTION_MODE, ANNOTATION_SIDECAR_STATUS, LABEL_DATAPLANE_MODE, MAX_EXCLUDE_PORTS, PROXY_METADATA_KEY,
} from './annotations.js';

export interface ObjectMeta {
  name: string;
  /** Pods only: shares the node's network namespace. */
  hostNetwork?: boolean;
  /** Pods only: istiod's tunnel protocol for this pod (xds source), when istiod knows it. */
  tunnel?: string;
  namespace?: string;
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
}

/** Istio MeshConfig as far as we read it; anything else in it is ignored. */
export type MeshConfig = unknown;

export type Rule =
  | 'ambient'
  | 'xds-hbone'
  | 'host-network'
  | 'tproxy-unsupported'
  | 'no-sidecar'
  | 'pod-annotation'
  | 'pod-proxy-config'
  | 'namespace-annotation'
  | 'mesh-config'
  | 'agent-default';

export interface Decision {
  enabled: boolean;
  rule: Rule;
  /** Ports never paired in this pod (sidecar-accel.io/exclude-ports). */
  excludePorts: number[];
  /** Which of its applications' TCP its sidecar captures (captureOf). */
  captures: Capture;
  warnings: string[];
}

/** Whether a pod's sidecar captures any of its applications' outbound, and inbound, TCP. */
export interface Capture { outbound: boolean; inbound: boolean }

/**
 * From Istio's annotations: no capture at all (interceptionMode NONE), or
 * none of one direction (an empty include list: no outbound IP range and no
 * outbound port, or no inbound port). Anything else, absent or unreadable
 * included, counts as captured: the datapath then registers the
 * application's sockets as before, so a wrong guess here can only cost an
 * unpaired socket its registration, never pair a wrong one.
 */
export function captureOf(pod: ObjectMeta): Capture {
  const a = pod.annotations ?? {};
  if (a[ANNOTATION_INTERCEPTION_MODE] === 'NONE') return { outbound: false, inbound: false };
  const none = (key: string) => a[key] !== undefined && a[key].trim() === '';
  const noPorts = (key: string) => a[key] === undefined || a[key].trim() === '';
  return {
    outbound: !(none(ANNOTATION_INCLUDE_OUTBOUND_IP_RANGES) && noPorts(ANNOTATION_INCLUDE_OUTBOUND_PORTS)),
    inbound: !none(ANNOTATION_INCLUDE_INBOUND_PORTS),
  };
}

/** Go's strconv.ParseBool, which Istio uses for boolean metadata. */
export function parseBool(v: string): boolean | undefined {
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(v)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(v)) return false;
  return undefined;
}

function boolSetting(value: unknown, where: string, warnings: string[]): boolean | undefined {
  if (value === undefined) return undefined;
  const b = typeof value === 'string' ? parseBool(value.trim()) : typeof value === 'boolean' ? value : undefined;
  if (b === undefined) warnings.push(`${where}: ${JSON.stringify(value)} is not true or false; ignored`);
  return b;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** proxyMetadata.SIDECAR_ACCEL of a ProxyConfig object, if set. */
function proxyMetadataValue(proxyConfig: unknown, where: string, warnings: string[]): unknown {
  if (proxyConfig === undefined || proxyConfig === null) return undefined;
  if (!isRecord(proxyConfig)) {
    warnings.push(`${where}: not a ProxyConfig object; ignored`);
    return undefined;
  }
  const md = proxyConfig.proxyMetadata;
  if (md === undefined || md === null) return undefined;
  if (!isRecord(md)) {
    warnings.push(`${where}.proxyMetadata: not a map; ignored`);
    return undefined;
  }
  return md[PROXY_METADATA_KEY];
}

/** Parses the proxy.istio.io/config annotation (YAML, which includes JSON). */
export function parseProxyConfigAnnotation(text: string, warnings: string[]): unknown {
  try {
    return YAML.parse(text) as unknown;
  } catch (e) {
    warnings.push(`pod annotation ${ANNOTATION_PROXY_CONFIG}: not YAML or JSON (${(e as Error).message.split('\n')[0]}); ignored`);
    return undefined;
  }
}

/** "3306, 5432" -> [3306, 5432]; malformed -> a warning and no exclusions. */
export function parseExcludePorts(text: string | undefined, warnings: string[]): number[] {
  if (text === undefined || text.trim() === '') return [];
  const parts = text.split(',').map((p) => p.trim()).filter((p) => p !== '');
  const ports = parts.map((p) => (/^\d{1,5}$/.test(p) ? Number(p) : NaN));
  if (ports.some((p) => !(p >= 1 && p <= 65535))) {
    warnings.push(`pod annotation ${ANNOTATION_EXCLUDE_PORTS}: ${JSON.stringify(text)} is not a comma-separated list of ports 1-65535; ignored`);
    return [];
  }
  const unique = [...new Set(ports)].sort((a, b) => a - b);
  if (unique.length > MAX_EXCLUDE_PORTS) {
    warnings.push(`pod annotation ${ANNOTATION_EXCLUDE_PORTS}: at most ${MAX_EXCLUDE_PORTS} ports, got ${unique.length}; ignored`);
    return [];
  }
  return unique;
}

export function isAmbient(pod: ObjectMeta): boolean {
  return pod.labels?.[LABEL_DATAPLANE_MODE] === 'ambient'
    || pod.annotations?.[ANNOTATION_AMBIENT_REDIRECTION] === 'enabled';
}

/**
 * Precedence, first match wins: pod annotation, pod ProxyConfig annotation,
 * namespace annotation, MeshConfig defaultConfig, the agent's default.
 * Only pods with an injected sidecar are candidates; ambient pods never are.
 */
export function decide(pod: ObjectMeta, namespace: ObjectMeta | undefined, mesh: MeshConfig, agentDefault = false): Decision {
  const warnings: string[] = [];
  const a = pod.annotations ?? {};
  const excludePorts = parseExcludePorts(a[ANNOTATION_EXCLUDE_PORTS], warnings);
  const captures = captureOf(pod);
  const result = (enabled: boolean, rule: Rule): Decision => ({ enabled, rule, excludePorts, captures, warnings });

  if (isAmbient(pod)) return result(false, 'ambient');
  // istiod says ztunnel captures it, whatever its labels say: its traffic is tunnelled.
  if (pod.tunnel !== undefined && pod.tunnel !== 'NONE') return result(false, 'xds-hbone');
  // The node's own netns: enabling it would touch every host socket.
  if (pod.hostNetwork) return result(false, 'host-network');
  // Istio's TPROXY capture keeps original addresses on Envoy's sockets; its
  // rules are not part of the verified datapath, so such pods are skipped.
  if (a[ANNOTATION_INTERCEPTION_MODE] === 'TPROXY') return result(false, 'tproxy-unsupported');
  if (a[ANNOTATION_SIDECAR_STATUS] === undefined) return result(false, 'no-sidecar');

  const podFlag = boolSetting(a[ANNOTATION_ENABLED], `pod annotation ${ANNOTATION_ENABLED}`, warnings);
  if (podFlag !== undefined) return result(podFlag, 'pod-annotation');

  if (a[ANNOTATION_PROXY_CONFIG] !== undefined) {
    const pc = parseProxyConfigAnnotation(a[ANNOTATION_PROXY_CONFIG], warnings);
    const v = proxyMetadataValue(pc, `pod annotation ${ANNOTATION_PROXY_CONFIG}`, warnings);
    const b = boolSetting(v, `pod annotation ${ANNOTATION_PROXY_CONFIG} proxyMetadata.${PROXY_METADATA_KEY}`, warnings);
    if (b !== undefined) return result(b, 'pod-proxy-config');
  }

  const nsFlag = boolSetting(namespace?.annotations?.[ANNOTATION_ENABLED], `namespace annotation ${ANNOTATION_ENABLED}`, warnings);
  if (nsFlag !== undefined) return result(nsFlag, 'namespace-annotation');

  if (mesh !== undefined && mesh !== null) {
    const dc = isRecord(mesh) ? mesh.defaultConfig : undefined;
    if (!isRecord(mesh)) warnings.push('mesh config: not a MeshConfig object; ignored');
    const v = proxyMetadataValue(dc, 'mesh config defaultConfig', warnings);
    const b = boolSetting(v, `mesh config defaultConfig.proxyMetadata.${PROXY_METADATA_KEY}`, warnings);
    if (b !== undefined) return result(b, 'mesh-config');
  }
  return result(agentDefault, 'agent-default');
}
