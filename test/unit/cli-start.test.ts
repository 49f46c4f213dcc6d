// The CLI imports a command's modules only when that command runs: help,
// explain and status start without the agent's client libraries (Kubernetes,
// fastify, gRPC, protobufjs, Prometheus, pino), which cost most of a second.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const cli = path.resolve(here, '../../src/cli/main.js');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sa-cli-start-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));

const HEAVY = ['@kubernetes/client-node', 'fastify', '@grpc/grpc-js', 'protobufjs', 'prom-client', 'pino'];

/** Runs the CLI; returns its exit code and the packages (under node_modules) and own modules it resolved. */
function loads(args: string[]): { status: number | null; stderr: string; packages: Set<string>; own: string[] } {
  const log = path.join(dir, `modules-${args[0]}.log`);
  fs.rmSync(log, { force: true });
  const r = spawnSync(process.execPath, ['--import', path.join(here, 'module-log.js'), cli, ...args], { encoding: 'utf8', env: { ...process.env, MODULE_LOG: log } });
  const urls = fs.existsSync(log) ? fs.readFileSync(log, 'utf8').trim().split('\n') : [];
  const packages = new Set(urls.flatMap((u) => /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(u)?.[1] ?? []));
  const own = urls.filter((u) => u.includes('/dist/src/')).map((u) => u.slice(u.indexOf('/dist/src/') + '/dist/src/'.length));
  return { status: r.status, stderr: r.stderr, packages, own };
}

function assertLight(what: string, packages: Set<string>): void {
  const heavy = HEAVY.filter((p) => packages.has(p));
  assert.deepEqual(heavy, [], `${what} loaded ${heavy.join(', ')}`);
}

test('help loads no package at all', () => {
  const r = loads(['help']);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual([...r.packages], []);
  assert.ok(r.own.includes('cli/main.js'), 'the module log works');
});

test('a command\'s --help prints the usage and exits 0, starting nothing', () => {
  const help = new Set(loads(['help']).own);
  for (const args of [['status', '--help'], ['agent', '-h'], ['conns', '--json', '--help']]) {
    const r = loads(args);
    assert.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
    assert.deepEqual([...r.packages], [], `${args.join(' ')} loaded packages`);
    assert.deepEqual(r.own.filter((m) => !help.has(m)), [], `${args.join(' ')} loaded more than help does`);
  }
  const out = spawnSync(process.execPath, [cli, 'status', '--help'], { encoding: 'utf8' });
  assert.match(out.stdout, /^usage: sidecar-accel <command> \[options\]/);
  assert.equal(out.stderr, '');
});

test('explain loads what reads manifests, none of the agent\'s client libraries', () => {
  const pod = path.join(dir, 'pod.yaml');
  fs.writeFileSync(pod, 'apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: shop, annotations: {sidecar.istio.io/status: "{}"}}\nspec: {}\n');
  const r = loads(['explain', '--pod', pod]);
  assert.equal(r.status, 0, r.stderr);
  assert.ok(r.packages.has('yaml') && r.own.includes('cli/explain.js'), 'explain ran');
  assertLight('explain', r.packages);
});

test('status reads the pins without the agent\'s client libraries', () => {
  // Whether or not anything is pinned here, status ran once it loaded its module.
  const r = loads(['status', '--json']);
  assert.ok(r.own.includes('cli/status.js'), `status ran: ${r.stderr}`);
  assert.ok(!r.own.includes('agent/agent.js'), 'status does not load the agent');
  assertLight('status', r.packages);
});

test('conns reads the kernel without the agent\'s client libraries; a malformed --pod is a usage error', () => {
  const dirArg = path.join(dir, 'no-pins');
  const cfg = path.join(dir, 'conns.yaml');
  // Nothing pinned there: it stops after loading its modules, with that one line.
  fs.writeFileSync(cfg, `api:\n  listen: 127.0.0.1:1\ndatapath:\n  pinDir: ${dirArg}\n`);
  const r = loads(['conns', '--config', cfg]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /nothing pinned under .*no-pins: sidecar-accel is not installed on this node/);
  assert.ok(r.own.includes('conns/kernel.js'), `conns ran: ${r.stderr}`);
  assert.ok(!r.own.includes('agent/agent.js'), 'conns does not load the agent');
  assertLight('conns', r.packages);
  const bad = loads(['conns', '--pod', 'just-a-name']);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--pod takes NAMESPACE\/NAME/);
});
