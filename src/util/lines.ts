// A child process read line by line: wait for a line (an event, never a
// sleep), or for its exit.
import readline from 'node:readline';
import type { ChildProcess } from 'node:child_process';

export class LineProcess {
  readonly lines: string[] = [];
  private stderrText = '';
  private waiters: { pred: (l: string) => boolean; resolve: (l: string) => void }[] = [];
  readonly exited: Promise<number | null>;

  constructor(readonly child: ChildProcess) {
    const rl = readline.createInterface({ input: child.stdout! });
    rl.on('line', (line) => {
      this.lines.push(line);
      this.onLine(line);
      this.waiters = this.waiters.filter((w) => { if (w.pred(line)) { w.resolve(line); return false; } return true; });
    });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => { this.stderrText += d; });
    this.exited = new Promise((resolve) => child.on('exit', (code) => { rl.close(); resolve(code); }));
  }

  /** Hook for subclasses that parse lines. */
  protected onLine(_line: string): void {}

  get stderr(): string {
    return this.stderrText;
  }

  /** The first line (seen or to come) matching pred; rejects if the process exits first. */
  waitForLine(pred: (l: string) => boolean, what = 'line'): Promise<string> {
    const seen = this.lines.find(pred);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      this.waiters.push({ pred, resolve });
      void this.exited.then((code) => reject(new Error(`process exited (${code}) before ${what}; output: ${this.lines.slice(-5).join(' | ').slice(-1000)}; stderr: ${this.stderrText.slice(-1000)}`)));
    });
  }

  /** Waits for exit; a non-zero code is an Error with the tail of stderr. */
  async done(): Promise<string[]> {
    const code = await this.exited;
    if (code !== 0) throw new Error(`process exited ${code}: ${this.stderrText.slice(-2000)}`);
    return this.lines;
  }
}
