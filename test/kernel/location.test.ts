// The fixtures start wherever the tests run from: a checkout under a root-only
// directory (mode 700, as mktemp -d makes one) must not stop the sidecars,
// which run as the proxy uid and cannot enter it.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { assertKernelAccess, kernelSkip } from './gate.js';
import { createSidecarPair } from '../../lab/topology/pair.js';

describe('tests from a root-only directory', { skip: kernelSkip }, () => {
  test('the sidecar pair starts with the working directory one the proxy uid cannot enter', async () => {
    assertKernelAccess();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sa-cwd-'));
    assert.equal(fs.statSync(dir).mode & 0o777, 0o700);
    const cwd = process.cwd();
    process.chdir(dir);
    try {
      const { topo } = await createSidecarPair('cwd');
      await topo.destroy();
    } finally {
      process.chdir(cwd);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
