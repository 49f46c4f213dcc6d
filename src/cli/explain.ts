// `sidecar-accel explain`: from the manifests a user has (Pod, Namespace, the
// istio ConfigMap), whether that pod would be accelerated and which rule
// decided. A malformed annotation is a warning; an unreadable file an error.
import fs from 'node:fs';
import YAML from 'yaml';
import { z } from 'zod';
import { decide, type Decision, type ObjectMeta } from '../policy/policy.js';
import { InputError } from './errors.js';

export { InputError };

const meta = z.object({
  name: z.string().min(1),
  namespace: z.string().optional(),
  annotations: z.record(z.string(), z.string()).nullish(),
  labels: z.record(z.string(), z.string()).nullish(),
});
const manifest = z.object({ kind: z.string().optional(), metadata: meta, spec: z.object({ hostNetwork: z.boolean().optional() }).loose().optional() });

function readYaml(file: string, what: string): unknown {
  let text: string;
  try { text = fs.readFileSync(file, 'utf8'); } catch (e) { throw new InputError(`${what} ${file}: cannot read (${(e as NodeJS.ErrnoException).code})`); }
  try { return YAML.parse(text) as unknown; } catch (e) { throw new InputError(`${what} ${file}: not YAML or JSON: ${(e as Error).message.split('\n')[0]}`); }
}

function objectMeta(file: string, kind: 'Pod' | 'Namespace'): ObjectMeta {
  const r = manifest.safeParse(readYaml(file, kind));
  if (!r.success) throw new InputError(`${kind} ${file}: ${r.error.issues.map((i) => `${i.path.join('.') || '(top)'}: ${i.message}`).join('; ')}`);
  if (r.data.kind !== undefined && r.data.kind !== kind) throw new InputError(`${file}: kind is ${r.data.kind}, expected ${kind}`);
  const m = r.data.metadata;
  return { name: m.name, namespace: m.namespace, annotations: m.annotations ?? {}, labels: m.labels ?? {}, hostNetwork: r.data.spec?.hostNetwork === true };
}

/** The istio ConfigMap (data.mesh holds MeshConfig as YAML), or a MeshConfig document. */
export function meshFromFile(file: string): unknown {
  const doc = readYaml(file, 'mesh config');
  const cm = z.object({ kind: z.literal('ConfigMap'), data: z.object({ mesh: z.string() }).loose() }).loose().safeParse(doc);
  if (cm.success) {
    try { return YAML.parse(cm.data.data.mesh) as unknown; } catch (e) {
      throw new InputError(`mesh config ${file}: data.mesh is not YAML: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  if (typeof doc === 'object' && doc !== null && (doc as { kind?: unknown }).kind === 'ConfigMap') {
    throw new InputError(`mesh config ${file}: a ConfigMap without data.mesh (expected the "istio" ConfigMap of istio-system)`);
  }
  return doc;
}

export interface ExplainInput { pod: string; namespace?: string; mesh?: string }

export function explain(input: ExplainInput): Decision & { pod: string } {
  const pod = objectMeta(input.pod, 'Pod');
  const ns = input.namespace ? objectMeta(input.namespace, 'Namespace') : undefined;
  const mesh = input.mesh ? meshFromFile(input.mesh) : undefined;
  return { pod: `${pod.namespace ?? ns?.name ?? 'default'}/${pod.name}`, ...decide(pod, ns, mesh) };
}

const RULE_TEXT: Record<Decision['rule'], string> = {
  'ambient': 'the pod is captured by ambient (ztunnel): never accelerated',
  'xds-hbone': 'istiod marks the pod as captured by ztunnel (HBONE tunnel): never accelerated',
  'host-network': 'the pod uses the host network: never accelerated',
  'tproxy-unsupported': 'the pod uses Istio\'s TPROXY interception mode, which is not supported: skipped',
  'no-sidecar': 'the pod has no injected sidecar (no sidecar.istio.io/status): never accelerated',
  'pod-annotation': 'pod annotation sidecar-accel.io/enabled',
  'pod-proxy-config': 'pod annotation proxy.istio.io/config, proxyMetadata.SIDECAR_ACCEL',
  'namespace-annotation': 'namespace annotation sidecar-accel.io/enabled',
  'mesh-config': 'mesh config defaultConfig.proxyMetadata.SIDECAR_ACCEL',
  'agent-default': 'nothing set it: the agent default (off)',
};

export function explainText(r: ReturnType<typeof explain>): string {
  const lines = [`${r.pod}: ${r.enabled ? 'accelerated' : 'not accelerated'}`, `  decided by: ${RULE_TEXT[r.rule]}`];
  if (r.excludePorts.length) lines.push(`  ports never accelerated: ${r.excludePorts.join(', ')}`);
  const direct = [...(r.captures.outbound ? [] : ['outbound']), ...(r.captures.inbound ? [] : ['inbound'])];
  if (r.enabled && direct.length) {
    lines.push(`  its sidecar captures none of its ${direct.join(' or ')} traffic: an application socket to or from no pod of this node is left alone`);
  }
  for (const w of r.warnings) lines.push(`  warning: ${w}`);
  return lines.join('\n') + '\n';
}
