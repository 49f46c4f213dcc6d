// Runs a command as nobody, as the tests' stand-in for an unprivileged user.
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';

/**
 * nobody keeps CAP_DAC_READ_SEARCH alone: it reads the checkout wherever it
 * lives (a clone under a root-only directory, as mktemp -d makes one), and
 * that is none of the capabilities the agent needs.
 */
export function runAsNobody(command: string, args: string[]): SpawnSyncReturns<string> {
  return spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all,+dac_read_search',
    '--ambient-caps=+dac_read_search', command, ...args], { encoding: 'utf8' });
}

/** Why a test that needs to switch users cannot run, or false. */
export const NEEDS_ROOT: string | false = process.getuid?.() === 0 ? false : 'needs root to switch to an unprivileged user';
