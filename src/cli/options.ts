// Option parsing shared by every command, the lab's included: strict (an
// unknown option or a positional is a usage error), values typed from the spec.
import { parseArgs } from 'node:util';
import { UsageError } from './errors.js';

export type OptionSpec = Record<string, { type: 'string' | 'boolean'; default?: string | boolean }>;

export function parseOptions<T extends OptionSpec>(rest: string[], options: T) {
  try {
    return parseArgs({ args: rest, options, strict: true, allowPositionals: false }).values;
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}
