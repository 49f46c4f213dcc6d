// `node --import <this file>`: logs the modules the process resolves (module-log-hooks.ts).
import { register } from 'node:module';

register('./module-log-hooks.js', import.meta.url, { data: { file: process.env.MODULE_LOG } });
