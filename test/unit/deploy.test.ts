// deploy/ rendered with `kubectl kustomize`, every object validated against
// its Kubernetes schema (kubernetes-models), then what the manifests must
// guarantee checked on the rendered objects.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Service } from 'kubernetes-models/v1/Service';
import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { ClusterRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole';
import { ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import { Role } from 'kubernetes-models/rbac.authorization.k8s.io/v1/Role';
import { RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding';
import { ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor';
import { parseConfig } from '../../src/config/load.js';

const deploy = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../deploy');

type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> }; [k: string]: unknown };
const MODELS: Record<string, new (o: never) => { validate(): void }> = {
  'v1/Namespace': Namespace, 'v1/ServiceAccount': ServiceAccount, 'v1/ConfigMap': ConfigMap, 'v1/Service': Service,
  'apps/v1/DaemonSet': DaemonSet,
  'rbac.authorization.k8s.io/v1/ClusterRole': ClusterRole, 'rbac.authorization.k8s.io/v1/ClusterRoleBinding': ClusterRoleBinding,
  'rbac.authorization.k8s.io/v1/Role': Role, 'rbac.authorization.k8s.io/v1/RoleBinding': RoleBinding,
  'monitoring.coreos.com/v1/ServiceMonitor': ServiceMonitor,
};

function render(dir: string): Obj[] {
  const r = spawnSync('kubectl', ['kustomize', path.join(deploy, dir)], { encoding: 'utf8' });
  assert.equal(r.error, undefined, 'kubectl not found (npm run setup installs kubernetes-client)');
  assert.equal(r.status, 0, r.stderr);
  return YAML.parseAllDocuments(r.stdout).map((d) => d.toJS() as Obj).filter(Boolean);
}

const find = (objs: Obj[], kind: string, name?: string) => {
  const o = objs.find((x) => x.kind === kind && (name === undefined || x.metadata.name === name));
  assert.ok(o, `no ${kind} ${name ?? ''}`);
  // Rendered manifests are plain data, walked by field path in the assertions.
  return o as Obj & Record<string, any>;
};

for (const dir of ['base', 'overlays/privileged', 'overlays/metrics', 'uninstall']) {
  test(`deploy/${dir}: renders, and every object is valid for its schema`, () => {
    const objs = render(dir);
    assert.ok(objs.length > 0);
    for (const o of objs) {
      const Model = MODELS[`${o.apiVersion}/${o.kind}`];
      assert.ok(Model, `no schema known for ${o.apiVersion} ${o.kind}`);
      assert.doesNotThrow(() => new Model(o as never).validate(), `${o.kind} ${o.metadata.name}`);
    }
  });
}

test('the agent config in the ConfigMap is valid for the agent itself', () => {
  const cm = find(render('base'), 'ConfigMap', 'sidecar-accel');
  const r = parseConfig(cm.data['config.yaml'], 'configmap');
  assert.ok(r.ok, r.ok ? '' : r.error);
  assert.equal(r.config.kubernetes.enabled, true);
  assert.equal(r.config.kubernetes.hostProc, '/host/proc');
  assert.equal(r.config.datapath.requireRootCgroup, true);
  assert.equal(r.config.xds.enabled, true);
  assert.equal(r.config.xds.plaintext, false, 'istiod is reached over TLS');
});

test('the DaemonSet: the capabilities it needs, the host mounts, the node name, hitless rolling updates', () => {
  const ds = find(render('base'), 'DaemonSet');
  const pod = ds.spec.template.spec;
  const c = pod.containers[0];
  assert.deepEqual(c.securityContext.capabilities.drop, ['ALL']);
  for (const cap of ['BPF', 'PERFMON', 'NET_ADMIN', 'SYS_ADMIN']) assert.ok(c.securityContext.capabilities.add.includes(cap), cap);
  assert.equal(c.securityContext.privileged, false);
  assert.equal(c.securityContext.seccompProfile.type, 'Unconfined', 'bpf(2) must not be blocked by seccomp');
  const mounts = Object.fromEntries(c.volumeMounts.map((m: { mountPath: string; name: string }) => [m.mountPath, m]));
  assert.ok(mounts['/sys/fs/bpf'] && mounts['/host/sys/fs/cgroup'] && mounts['/host/proc']);
  const vols = Object.fromEntries(pod.volumes.map((v: { name: string; hostPath?: { path: string } }) => [v.name, v.hostPath?.path]));
  assert.equal(vols[mounts['/sys/fs/bpf'].name], '/sys/fs/bpf');
  assert.equal(vols[mounts['/host/proc'].name], '/proc');
  assert.deepEqual(c.env.find((e: { name: string }) => e.name === 'NODE_NAME').valueFrom, { fieldRef: { fieldPath: 'spec.nodeName' } });
  assert.equal(ds.spec.updateStrategy.type, 'RollingUpdate');
  assert.equal(c.lifecycle, undefined, 'no hook may uninstall on a rollout');
  assert.equal(c.readinessProbe.httpGet.path, '/readyz');
  assert.equal(c.livenessProbe.httpGet.path, '/healthz');
  assert.deepEqual(pod.tolerations, [{ operator: 'Exists' }]);
  assert.equal(pod.serviceAccountName, 'sidecar-accel');
  // The xds source: istiod's CA and an istio-ca token where the config expects them.
  const cm = find(render('base'), 'ConfigMap', 'sidecar-accel');
  const cfg = parseConfig(cm.data['config.yaml'], 'configmap');
  assert.ok(cfg.ok);
  const mountedAt = (file: string) => c.volumeMounts.find((m: { mountPath: string }) => file.startsWith(`${m.mountPath}/`));
  const caVol = pod.volumes.find((v: { name: string }) => v.name === mountedAt(cfg.config.xds.caFile)?.name);
  assert.equal(caVol.configMap.name, 'istio-ca-root-cert');
  assert.equal(caVol.configMap.optional, true, 'the agent starts without Istio installed');
  const tokVol = pod.volumes.find((v: { name: string }) => v.name === mountedAt(cfg.config.xds.tokenFile)?.name);
  const sat = tokVol.projected.sources[0].serviceAccountToken;
  assert.equal(sat.audience, 'istio-ca');
  assert.equal(`${mountedAt(cfg.config.xds.tokenFile).mountPath}/${sat.path}`, cfg.config.xds.tokenFile);
  for (const [name, field] of [['POD_NAME', 'metadata.name'], ['POD_NAMESPACE', 'metadata.namespace'], ['INSTANCE_IP', 'status.podIP']]) {
    assert.deepEqual(c.env.find((e: { name: string }) => e.name === name).valueFrom, { fieldRef: { fieldPath: field } });
  }
});

test('RBAC is read-only: pods and namespaces cluster-wide, ConfigMaps only in istio-system', () => {
  const objs = render('base');
  const cr = find(objs, 'ClusterRole');
  assert.deepEqual(cr.rules, [{ apiGroups: [''], resources: ['pods', 'namespaces'], verbs: ['get', 'list', 'watch'] }]);
  const role = find(objs, 'Role');
  assert.equal(role.metadata.namespace, 'istio-system');
  assert.deepEqual(role.rules, [{ apiGroups: [''], resources: ['configmaps'], verbs: ['get', 'list', 'watch'] }]);
  for (const kind of ['ClusterRoleBinding', 'RoleBinding']) {
    assert.deepEqual(find(objs, kind).subjects, [{ kind: 'ServiceAccount', name: 'sidecar-accel', namespace: 'sidecar-accel' }]);
  }
});

test('metrics: the Service selects the agents, the ServiceMonitor selects the Service', () => {
  const objs = render('overlays/metrics');
  const ds = find(objs, 'DaemonSet');
  const svc = find(objs, 'Service');
  const podLabels = ds.spec.template.metadata.labels;
  for (const [k, v] of Object.entries(svc.spec.selector)) assert.equal(podLabels[k], v);
  const sm = find(objs, 'ServiceMonitor');
  for (const [k, v] of Object.entries(sm.spec.selector.matchLabels)) assert.equal(svc.metadata.labels?.[k], v);
  assert.equal(sm.spec.endpoints[0].port, svc.spec.ports[0].name);
});

test('the privileged overlay: privileged, and bidirectional bpffs so the agent can mount it', () => {
  const c = find(render('overlays/privileged'), 'DaemonSet').spec.template.spec.containers[0];
  assert.equal(c.securityContext.privileged, true);
  assert.equal(c.volumeMounts.find((m: { mountPath: string }) => m.mountPath === '/sys/fs/bpf').mountPropagation, 'Bidirectional');
});

test('uninstall runs `sidecar-accel uninstall` on every node against the agent\'s pin directory', () => {
  const objs = render('uninstall');
  const ds = find(objs, 'DaemonSet');
  const init = ds.spec.template.spec.initContainers[0];
  assert.equal(init.args[0], 'uninstall');
  assert.deepEqual(ds.spec.template.spec.tolerations, [{ operator: 'Exists' }]);
  const mine = YAML.parse(find(objs, 'ConfigMap').data['config.yaml']) as { datapath: { pinDir: string; cgroup: string } };
  const agent = YAML.parse(find(render('base'), 'ConfigMap').data['config.yaml']) as { datapath: { pinDir: string; cgroup: string } };
  assert.deepEqual(mine.datapath, { pinDir: agent.datapath.pinDir, cgroup: agent.datapath.cgroup });
});
