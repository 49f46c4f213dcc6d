// The one door from the product into the lab. `demo` and `bench` build pods
// and measure on this machine: they are the lab's (lab/, bench/), which a
// source checkout has and the agent image does not. The lab's entry is looked
// for beside dist/src at run time, so nothing under src/ imports the lab and
// the image, which ships dist/src alone, still answers these commands plainly.
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';

export type LabCommand = 'demo' | 'bench';

/** What lab/cli.ts exports; it checks itself against this type. */
export interface LabEntry {
  /** Runs a lab command with its own arguments; resolves to the exit code. */
  runLabCommand(command: LabCommand, rest: string[]): Promise<number>;
  /** True once Ctrl-C started the command's cleanup: what fails after it is the cleanup's echo. */
  interrupted(): boolean;
}

/** dist/lab/cli.js of the checkout this dist/src was built in. */
const entry = new URL('../../lab/cli.js', import.meta.url);

export async function loadLab(command: LabCommand): Promise<LabEntry> {
  if (!fs.existsSync(fileURLToPath(entry))) {
    throw new Error(`${command} is part of the lab, which this installation does not have (no ${fileURLToPath(entry)}): run it from a source checkout (npm run ${command})`);
  }
  const lab = await import(entry.href) as Partial<LabEntry>;
  if (typeof lab.runLabCommand !== 'function' || typeof lab.interrupted !== 'function') {
    throw new Error(`${fileURLToPath(entry)} is not the lab's entry of this build (rebuild: npm run build)`);
  }
  return lab as LabEntry;
}
