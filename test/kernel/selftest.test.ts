// Where the start-up self-test runs its peer. The programs linked to a cgroup
// see the sockets of every cgroup below it, so the peer stays in the agent's
// own cgroup (the agent is always below the host's root, where it links);
// it is never moved into the cgroup the programs are linked to.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { cgroup2Root, cgroupPathOf } from '../../src/datapath/mounts.js';
import { Datapath } from '../../src/datapath/datapath.js';
import { runSelfTest } from '../../src/agent/selftest.js';
import { uninstallAll } from '../../src/cli/status.js';
import { destroyCgroup } from '../../src/datapath/cgroup.js';
import { LineProcess } from '../../src/util/lines.js';
import { kernelSkip, assertKernelAccess, scaled } from './gate.js';

const runner = path.join(path.dirname(fileURLToPath(import.meta.url)), '../peers/selftest-runner.js');

describe('the self-test runs its peer where the agent is', { skip: kernelSkip }, () => {
  const tag = crypto.randomBytes(3).toString('hex');
  let mount: string;
  let linked: string;
  const pinRoot = `/sys/fs/bpf/sast${tag}`;
  /** The cgroup path as /proc/<pid>/cgroup shows a directory under the mount. */
  const shown = (dir: string) => '/' + path.relative(mount, dir);

  before(() => {
    assertKernelAccess();
    mount = cgroup2Root();
    linked = path.join(mount, `sast${tag}`);
    fs.mkdirSync(linked);
  });
  after(async () => {
    uninstallAll(pinRoot, linked);
    await destroyCgroup(linked);
  });

  test('an agent below the linked cgroup: the peer runs in the agent\'s own cgroup, not the linked one', { timeout: scaled(120_000) }, async () => {
    const agentCgroup = path.join(linked, 'agent');
    fs.mkdirSync(agentCgroup);
    const child = spawn('bash', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', agentCgroup, process.execPath, runner, linked, pinRoot],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    const lines = await new LineProcess(child).done();
    const r = JSON.parse(lines.at(-1) ?? '{}') as { mode: string; peerCgroup: string | null; failed: string[] };
    assert.equal(r.peerCgroup, shown(agentCgroup));
    // The programs, linked above it, saw the peer's sockets there.
    assert.ok(!r.failed.includes('paired'), `failed: ${r.failed.join(', ')}`);
    assert.equal(fs.readFileSync(path.join(linked, 'cgroup.procs'), 'utf8'), '', 'nothing was moved into the linked cgroup');
  });

  test('an agent outside the linked cgroup: the peer runs in a leaf below it, removed after', { timeout: scaled(120_000) }, async () => {
    const own = cgroupPathOf();
    assert.ok(own !== undefined && !own.startsWith(shown(linked)), `this test runs outside ${linked} (in ${own})`);
    const dp = Datapath.open({ cgroupPath: linked, pinRoot });
    try {
      const r = await runSelfTest(dp);
      assert.match(r.peerCgroup ?? '', new RegExp(`^${shown(linked)}/sa-selftest-[0-9a-f]{6}$`));
      assert.ok(!r.checks.some((c) => c.name === 'paired' && !c.ok), JSON.stringify(r.checks));
      assert.deepEqual(fs.readdirSync(linked, { withFileTypes: true }).filter((e) => e.isDirectory() && e.name.startsWith('sa-selftest-')).map((e) => e.name), [],
        'the leaf is gone');
    } finally {
      dp.uninstall();
    }
  });
});
