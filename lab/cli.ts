// The lab's commands, `demo` and `bench`, as `sidecar-accel demo|bench` runs
// them: src/cli/lab.ts finds this file beside dist/src in a checkout (the
// image has no lab). Each command's modules load only when it runs.
import { UsageError } from '../src/cli/errors.js';
import { parseOptions } from '../src/cli/options.js';
import type { LabCommand, LabEntry } from '../src/cli/lab.js';

let cleanly: { interrupted: boolean } | undefined;

export const interrupted: LabEntry['interrupted'] = () => cleanly?.interrupted === true;

/** A whole number >= 1 given as option `name`, or undefined when absent. */
function whole(command: LabCommand, name: string, x: string | undefined): number | undefined {
  if (x === undefined) return undefined;
  const n = Number(x);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${command}: --${name} takes a whole number >= 1`);
  return n;
}

export const runLabCommand: LabEntry['runLabCommand'] = async (command, rest) => {
  switch (command) {
    case 'demo': {
      const v = parseOptions(rest, { rounds: { type: 'string', default: '3' }, seconds: { type: 'string', default: '2' } });
      const rounds = whole(command, 'rounds', v.rounds)!;
      const seconds = whole(command, 'seconds', v.seconds)!;
      const [{ runDemo }, harness] = await Promise.all([import('./demo.js'), import('./harness/interruptible.js')]);
      cleanly = harness;
      await runDemo({ rounds, seconds, out: process.stdout });
      return 0;
    }
    case 'bench': {
      const v = parseOptions(rest, {
        quick: { type: 'boolean', default: false }, json: { type: 'string' }, md: { type: 'string' }, chart: { type: 'string' },
        cpus: { type: 'string' }, rounds: { type: 'string' }, seconds: { type: 'string' },
      });
      const rounds = whole(command, 'rounds', v.rounds);
      const seconds = whole(command, 'seconds', v.seconds);
      if (v.cpus !== undefined && !/^\d+([-,]\d+)*$/.test(v.cpus)) throw new UsageError('bench: --cpus takes a CPU list such as 0 or 0-1 or 0,1');
      const [{ runBench }, harness] = await Promise.all([import('../bench/suite/run.js'), import('./harness/interruptible.js')]);
      cleanly = harness;
      await runBench({
        quick: v.quick === true, out: process.stdout,
        ...(v.json ? { json: v.json } : {}), ...(v.md ? { md: v.md } : {}), ...(v.chart ? { chart: v.chart } : {}),
        ...(v.cpus ? { cpus: v.cpus } : {}), ...(rounds ? { rounds } : {}), ...(seconds ? { seconds } : {}),
      });
      return 0;
    }
  }
};
