import { test } from 'node:test';
import assert from 'node:assert/strict';
import { renderTable, type SuiteResult } from '../../lab/kernels/report.js';

const suite = (status: SuiteResult['status'], passed: number, failed: number): SuiteResult =>
  ({ name: 'integrity', status, exitCode: failed ? 1 : 0, passed, failed, skipped: 0, failures: failed ? ['tcp_mem pressure'] : [] }) as SuiteResult;

test('a suite run twice shows each run in its own column', () => {
  const table = renderTable([{ spec: '6.12', booted: true, bootSeconds: 5, suites: [suite('pass', 6, 0), suite('fail', 5, 1)], totalSeconds: 345 }],
    ['integrity', 'integrity']);
  const row = table.split('\n')[2] ?? '';
  assert.match(row, /ok 6\/0\/0\s+FAIL 5\/1\/0/);
});

test('a kernel booted a second time says why under the table, and its row shows the second boot', () => {
  const why = 'the first ended before userspace (qemu exit 0); its console ended: Booting from ROM...';
  const table = renderTable([{ spec: '6.12', booted: true, bootSeconds: 7, suites: [suite('pass', 7, 0)], totalSeconds: 900, bootRetry: why }],
    ['integrity']);
  const [, , row, ...notes] = table.split('\n');
  assert.match(row ?? '', /yes 7\.0s.*ok 7\/0\/0/);
  assert.ok(notes.includes(`6.12: booted a second time: ${why}`), table);
});
