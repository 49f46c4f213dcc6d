// Runs every compiled test file (dist/test/**/*.test.js) with node's test
// runner. Kernel suites share the machine's cgroup and bpffs, so files run
// one at a time.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';

function find(dir) {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? find(p) : e.name.endsWith('.test.js') ? [p] : [];
  });
}

const only = process.argv.slice(2);
const files = [...find('dist/test/unit'), ...find('dist/test/kernel')].sort()
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)));
if (files.length === 0) {
  console.error('run-tests: no test files found under dist/test (did the build run?)');
  process.exit(1);
}
// A run killed before its finally (SIGKILL, a timeout) leaves pods behind.
if (process.getuid?.() === 0) {
  const { sweepStaleTopologies } = await import('../dist/lab/topology/sweep.js');
  const swept = await sweepStaleTopologies();
  if (swept.length) console.log(`run-tests: removed leftovers of killed runs: ${swept.join(', ')}`);
}

// spec for people on stdout, TAP to a file for the closing summary line.
const tap = path.join(os.tmpdir(), `sidecar-accel-tests-${process.pid}.tap`);
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1',
  '--test-reporter=spec', '--test-reporter-destination=stdout',
  '--test-reporter=tap', `--test-reporter-destination=${tap}`, ...files], { stdio: 'inherit' });
const text = fs.existsSync(tap) ? fs.readFileSync(tap, 'utf8') : '';
fs.rmSync(tap, { force: true });
const count = (name) => Number(new RegExp(`^# ${name} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
const [pass, fail, skipped, todo, cancelled] = ['pass', 'fail', 'skipped', 'todo', 'cancelled'].map(count);
if (todo) console.log(`(${todo} todo: known deviations, run and reported above; counted as skipped below)`);
console.log(`tests: ${pass} passed, ${fail + cancelled} failed, ${skipped + todo} skipped`);
process.exit(r.status ?? 1);
