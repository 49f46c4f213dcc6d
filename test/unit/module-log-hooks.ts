// Module hooks (registered by module-log.ts) that append every module URL a
// process resolves to the file named in MODULE_LOG: what a command loads.
import fs from 'node:fs';
import type { InitializeHook, ResolveHook } from 'node:module';

let file: string | undefined;

export const initialize: InitializeHook<{ file?: string }> = (data) => { file = data.file; };

export const resolve: ResolveHook = async (specifier, context, next) => {
  const r = await next(specifier, context);
  if (file) fs.appendFileSync(file, `${r.url}\n`);
  return r;
};
