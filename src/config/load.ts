// Reading and validating the config file: a result, never a throw, so a bad
// edit can be reported while the last good config stays in force.
import fs from 'node:fs';
import YAML from 'yaml';

import { configSchema, type AgentConfig } from './schema.js';

export type ConfigResult = { ok: true; config: AgentConfig } | { ok: false; error: string };

export function parseConfig(text: string, source = 'config'): ConfigResult {
  let raw: unknown;
  try {
    raw = YAML.parse(text) as unknown;
  } catch (e) {
    return { ok: false, error: `${source}: not valid YAML: ${(e as Error).message.split('\n')[0]}` };
  }
  const r = configSchema.safeParse(raw ?? {});
  if (!r.success) {
    const issues = r.error.issues.map((i) => `${i.path.length ? i.path.join('.') : '(top level)'}: ${i.message}`);
    return { ok: false, error: `${source}: ${issues.join('; ')}` };
  }
  const dup = duplicateWorkload(r.data);
  if (dup) return { ok: false, error: `${source}: workloads: ${dup} is listed twice` };
  return { ok: true, config: r.data };
}

function duplicateWorkload(c: AgentConfig): string | undefined {
  const seen = new Set<string>();
  for (const w of c.workloads) {
    const k = `${w.namespace}/${w.name}`;
    if (seen.has(k)) return k;
    seen.add(k);
  }
  return undefined;
}

export function loadConfigFile(path: string): ConfigResult {
  let text: string;
  try {
    text = fs.readFileSync(path, 'utf8');
  } catch (e) {
    return { ok: false, error: `${path}: cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` };
  }
  return parseConfig(text, path);
}

