// The agent's workload sources as a config builds them: a kubeconfig the
// client library would refuse at every request is refused once, at start.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as k8s from '@kubernetes/client-node';
import { FakeApiServer } from './fake-apiserver.js';
import { NEEDS_ROOT, runAsNobody } from './nobody.js';
import { loadKubeConfig } from '../../src/agent/sources.js';
import { StartupError } from '../../src/agent/checks.js';

const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');

/** A kubeconfig file for `server`, removed by the returned function. */
function kubeconfigFile(server: string, skipTlsVerify: boolean): { file: string; remove: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sa-kubeconfig-'));
  fs.chmodSync(dir, 0o755);
  const file = path.join(dir, 'kubeconfig');
  fs.writeFileSync(file, [
    'apiVersion: v1', 'kind: Config', 'current-context: proxy',
    `clusters: [{name: proxied, cluster: {server: "${server}"${skipTlsVerify ? ', insecure-skip-tls-verify: true' : ''}}}]`,
    'users: [{name: me, user: {}}]',
    'contexts: [{name: proxy, context: {cluster: proxied, user: me}}]', '',
  ].join('\n'), { mode: 0o644 });
  return { file, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

test('an http:// kubeconfig server (kubectl proxy) is refused with one message naming the fix, and works with it', async () => {
  const api = new FakeApiServer();
  await api.start();
  api.put('/api/v1/namespaces', { metadata: { name: 'shop' } });
  const plain = kubeconfigFile(api.url, false);
  const opted = kubeconfigFile(api.url, true);
  try {
    assert.throws(() => loadKubeConfig(plain.file), (e: unknown) => e instanceof StartupError
      && e.message === `kubernetes: ${plain.file}: cluster "proxied" has a plain HTTP server (${api.url}); `
        + 'the Kubernetes client refuses it unless that cluster sets insecure-skip-tls-verify: true (kubectl proxy, for one, serves plain HTTP)');
    const list = await loadKubeConfig(opted.file).makeApiClient(k8s.CoreV1Api).listNamespace();
    assert.deepEqual(list.items.map((n) => n.metadata?.name), ['shop']);
  } finally {
    plain.remove();
    opted.remove();
    await api.stop();
  }
});

test('a kubeconfig whose current context names no cluster is refused by name', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sa-kubeconfig-'));
  const file = path.join(dir, 'kubeconfig');
  fs.writeFileSync(file, 'apiVersion: v1\nkind: Config\ncurrent-context: gone\nclusters: []\nusers: []\ncontexts: [{name: gone, context: {cluster: nowhere, user: me}}]\n');
  try {
    assert.throws(() => loadKubeConfig(file), /kubernetes: .*kubeconfig: its current context \("gone"\) names no cluster/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the agent with an http:// kubeconfig refuses with one line before touching the kernel', { skip: NEEDS_ROOT }, () => {
  const kube = kubeconfigFile('http://127.0.0.1:8001', false);
  const cfg = path.join(path.dirname(kube.file), 'agent.yaml');
  fs.writeFileSync(cfg, `api: {listen: 127.0.0.1:15999}\nkubernetes: {enabled: true, nodeName: node-1, kubeconfig: ${kube.file}}\n`, { mode: 0o644 });
  try {
    // Unprivileged: had the check come after the capability check, this would be that refusal instead.
    const r = runAsNobody(process.execPath, [cli, 'agent', '--config', cfg]);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /^sidecar-accel: kubernetes: .*kubeconfig: cluster "proxied" has a plain HTTP server \(http:\/\/127\.0\.0\.1:8001\)/);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  } finally {
    kube.remove();
  }
});
