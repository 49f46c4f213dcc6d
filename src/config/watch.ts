// Hot reload: the config file is re-read when it changes (watched through
// its directory, since editors and ConfigMap mounts replace the file) and on
// SIGHUP. A bad version is reported and the last good one stays in force.
import fs from 'node:fs';
import path from 'node:path';
import { EventEmitter } from 'node:events';
import { loadConfigFile, parseConfig } from './load.js';
import type { AgentConfig } from './schema.js';

export interface ConfigWatcherEvents {
  config: [AgentConfig];
  invalid: [string];
}

export class ConfigWatcher extends EventEmitter<ConfigWatcherEvents> {
  private watcher?: fs.FSWatcher;
  private lastText?: string;
  private readonly onHup = () => this.reload('SIGHUP');

  constructor(readonly file: string, public current: AgentConfig) {
    super();
    this.lastText = this.read();
  }

  private read(): string | undefined {
    try { return fs.readFileSync(this.file, 'utf8'); } catch { return undefined; }
  }

  start(): void {
    const dir = path.dirname(path.resolve(this.file));
    const base = path.basename(this.file);
    this.watcher = fs.watch(dir, (_event, name) => {
      // ConfigMap volumes swap a ..data symlink; any change in the directory may be ours.
      if (name === null || name === base || name.startsWith('..')) this.reload('file change');
    });
    process.on('SIGHUP', this.onHup);
  }

  stop(): void {
    this.watcher?.close();
    process.off('SIGHUP', this.onHup);
  }

  /** Re-reads the file; emits `config` when it changed and is valid, `invalid` when it is not. */
  reload(reason: string): void {
    const text = this.read();
    if (reason !== 'SIGHUP' && text === this.lastText) return;
    // An editor that truncates, then writes, shows an empty file in between:
    // "every default" would drop every workload. Wait for its next change
    // (an empty file on purpose is applied on SIGHUP).
    if (reason !== 'SIGHUP' && text === '') return;
    this.lastText = text;
    // The text just read, not a second read that could see another version.
    const r = text === undefined ? loadConfigFile(this.file) : parseConfig(text, this.file);
    if (r.ok) {
      this.current = r.config;
      this.emit('config', r.config);
    } else {
      this.emit('invalid', `${r.error} (on ${reason}; keeping the last good config)`);
    }
  }
}
