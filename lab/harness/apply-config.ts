// Drives a running agent the way an operator does, by rewriting its config
// file, and waits for the reconcile that the hot reload triggers: the demo
// and the bench switch scenarios this way and never sleep.
import fs from 'node:fs';
import { once } from 'node:events';
import type { Agent } from '../../src/agent/agent.js';
import type { WorkloadStatus } from '../../src/reconcile/reconciler.js';

/**
 * Writes `text` to `file` and resolves once a reconcile reports a state for
 * which `settled` holds (at once if the file already has that text and the
 * current state is settled).
 */
export async function applyAgentConfig(agent: Agent, file: string, text: string,
  settled: (ws: WorkloadStatus[]) => boolean): Promise<void> {
  if (fs.existsSync(file) && fs.readFileSync(file, 'utf8') === text && settled(agent.workloads())) return;
  const done = (async () => {
    for (;;) {
      const [ws] = await once(agent.events, 'reconciled') as [WorkloadStatus[]];
      if (settled(ws)) return;
    }
  })();
  fs.writeFileSync(file, text);
  await done;
}
