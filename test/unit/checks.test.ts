// Start-up checks that read the machine, fed with made-up machines.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { NEEDS_ROOT, runAsNobody } from './nobody.js';
import { checkCapabilities, checkKernel, effectiveCaps, StartupError } from '../../src/agent/checks.js';

test('kernels older than 5.15 are refused by name', () => {
  assert.throws(() => checkKernel('5.10.0-28-amd64'), (e: unknown) => e instanceof StartupError && /kernel 5\.10\.0-28-amd64 is too old: the programs need 5\.15\+/.test(e.message));
  assert.throws(() => checkKernel('4.19.0'), /too old/);
  assert.throws(() => checkKernel('garbage'), /cannot read the kernel version/);
});

test('missing capabilities are listed with the reason each is needed', () => {
  const all = (1n << 39n) | (1n << 38n) | (1n << 12n) | (1n << 21n);
  assert.doesNotThrow(() => checkCapabilities(all));
  assert.throws(() => checkCapabilities(all & ~(1n << 38n)), /missing capabilities: CAP_PERFMON \(the programs read kernel memory/);
  assert.throws(() => checkCapabilities(0n), /CAP_BPF .*CAP_PERFMON .*CAP_NET_ADMIN .*CAP_SYS_ADMIN/);
  assert.equal(effectiveCaps('Name:\tx\nCapEff:\t000001ffffffffff\n'), 0x1ffffffffffn);
});

test('the agent run as an unprivileged user refuses with one line', { skip: NEEDS_ROOT }, () => {
  const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');
  const cfg = path.join(os.tmpdir(), `sa-checks-${process.pid}.yaml`);
  fs.writeFileSync(cfg, 'api: {listen: 127.0.0.1:15999}\n', { mode: 0o644 });
  try {
    const r = runAsNobody(process.execPath, [cli, 'agent', '--config', cfg]);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /^sidecar-accel: missing capabilities: CAP_BPF/);
    assert.equal(r.stderr.trim().split('\n').length, 1);
  } finally {
    fs.rmSync(cfg, { force: true });
  }
});
