// Runs every compiled test file (dist/test/**/*.test.js) with node's test
// runner. Kernel suites share the machine's cgroup and bpffs, so files run
// one at a time.
import fs from 'node:fs';
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
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-reporter=spec', ...files], { stdio: 'inherit' });
process.exit(r.status ?? 1);
