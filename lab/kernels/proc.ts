// Child processes and cleanup. Every long-lived child (qemu, virtiofsd) is
// started under `setpriv --pdeathsig SIGKILL`, so even a SIGKILL of this tool
// takes them down with it; a normal end, an error or Ctrl-C runs the cleanup
// stack, which stops them and removes what was created.
import { spawn, type ChildProcess } from 'node:child_process';

export interface RunResult { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

/** Runs a short command to its end (bounded by timeoutMs), collecting its output. */
export function run(cmd: string, args: string[], opts: { cwd?: string; timeoutMs: number }): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    const timer = setTimeout(() => {
      stderr += `\n(${cmd} killed after ${opts.timeoutMs} ms)`;
      child.kill('SIGKILL');
    }, opts.timeoutMs);
    child.on('error', (e) => { clearTimeout(timer); live.delete(child); reject(e); });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      live.delete(child);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Children not yet reaped: the last-resort exit handler kills them. */
const live = new Set<ChildProcess>();
process.on('exit', killAll);

/** SIGKILLs every child still running (short commands included: apt, cpio...). */
export function killAll(): void {
  for (const c of live) c.kill('SIGKILL');
}

export interface Daemon {
  child: ChildProcess;
  /** Resolves with the exit code (or signal name) when the process has ended. */
  exited: Promise<number | string>;
  /** SIGTERM, then SIGKILL if it is still there after graceMs; resolves once it is gone. */
  stop(graceMs?: number): Promise<void>;
}

/** Starts a long-lived child that dies with this process (PR_SET_PDEATHSIG). */
export function daemon(cmd: string, args: string[], opts: { stdin?: 'pipe' | 'ignore' } = {}): Daemon {
  const child = spawn('setpriv', ['--pdeathsig', 'SIGKILL', '--', cmd, ...args], {
    stdio: [opts.stdin ?? 'ignore', 'pipe', 'pipe'],
  });
  live.add(child);
  const exited = new Promise<number | string>((resolve) => {
    child.on('error', () => { live.delete(child); resolve('spawn-error'); });
    child.on('exit', (code, signal) => { live.delete(child); resolve(code ?? signal ?? 'unknown'); });
  });
  const stop = async (graceMs = 5000) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  };
  return { child, exited, stop };
}

/** A LIFO of undo steps; run() runs each once, even if one of them fails. */
export class Cleanup {
  private steps: { what: string; fn: () => unknown }[] = [];

  add(what: string, fn: () => unknown): void {
    this.steps.push({ what, fn });
  }

  async run(log: (s: string) => void): Promise<void> {
    while (this.steps.length) {
      const s = this.steps.pop()!;
      try {
        await s.fn();
      } catch (e) {
        log(`cleanup: ${s.what}: ${(e as Error).message}`);
      }
    }
  }
}
