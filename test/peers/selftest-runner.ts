// Runs the agent's self-test on a datapath linked to the cgroup given as the
// first argument (pins under the second), from whatever cgroup this process
// was started in, and prints one JSON line: the mode, where the self-test's
// peer ran, and which checks failed. Uninstalls what it loaded.
import { Datapath } from '../../src/datapath/datapath.js';
import { runSelfTest } from '../../src/agent/selftest.js';

const [cgroupPath, pinRoot] = process.argv.slice(2);
if (!cgroupPath || !pinRoot) {
  console.error('usage: selftest-runner <cgroup dir> <pin root>');
  process.exit(2);
}
const dp = Datapath.open({ cgroupPath, pinRoot });
try {
  const r = await runSelfTest(dp);
  process.stdout.write(JSON.stringify({ mode: r.mode, peerCgroup: r.peerCgroup, failed: r.checks.filter((c) => !c.ok).map((c) => c.name) }) + '\n');
} finally {
  dp.uninstall();
}
