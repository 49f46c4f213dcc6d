// Runs a command to completion; a non-zero exit is an Error carrying stderr.
import { spawn } from 'node:child_process';

export class CommandError extends Error {
  constructor(readonly command: string[], readonly code: number | null, readonly stderr: string) {
    super(`${command.join(' ')} exited ${code}: ${stderr.trim().slice(0, 2000)}`);
    this.name = 'CommandError';
  }
}

export interface RunOptions { input?: string; allowFail?: boolean }
export interface RunResult { code: number | null; stdout: string; stderr: string }

export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0 && !opts.allowFail) reject(new CommandError([cmd, ...args], code, stderr));
      else resolve({ code, stdout, stderr });
    });
    if (child.stdin) {
      child.stdin.on('error', () => { /* the command did not read its input: its exit code tells */ });
      child.stdin.end(opts.input);
    }
  });
}
