#!/usr/bin/env node
// The one executable: `sidecar-accel <command>`.
import { parseArgs } from 'node:util';
import { runDemo } from './demo.js';

const USAGE = `usage: sidecar-accel <command> [options]

commands:
  demo [--rounds N] [--seconds S]   two Istio-style pods on this machine, the same exchange
                                    with acceleration off and on, numbers printed live
  help                              this text
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'demo': {
      const { values } = parseArgs({ args: rest, options: { rounds: { type: 'string', default: '3' }, seconds: { type: 'string', default: '2' } } });
      const rounds = Number(values.rounds);
      const seconds = Number(values.seconds);
      if (!Number.isInteger(rounds) || rounds < 1 || !Number.isInteger(seconds) || seconds < 1) {
        process.stderr.write('demo: --rounds and --seconds take whole numbers >= 1\n');
        return 2;
      }
      await runDemo({ rounds, seconds, out: process.stdout });
      return 0;
    }
    case undefined:
    case 'help':
    case '--help':
      process.stdout.write(USAGE);
      return 0;
    default:
      process.stderr.write(`sidecar-accel: unknown command ${JSON.stringify(command)}\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (e: unknown) => {
  process.stderr.write(`sidecar-accel: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
