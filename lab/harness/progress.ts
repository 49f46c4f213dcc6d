// A one-line progress display on a terminal (redrawn in place); silent when
// the output is not a terminal, so logs stay clean.
export class Progress {
  private timer?: NodeJS.Timeout;
  private started = 0;

  constructor(private readonly out: NodeJS.WritableStream & { isTTY?: boolean }) {}

  /** Shows `label` with a bar filling over `seconds`, until done(). */
  start(label: string, seconds: number): void {
    if (!this.out.isTTY) return;
    this.done();
    this.started = Date.now();
    const draw = () => {
      const t = Math.min((Date.now() - this.started) / 1000, seconds);
      const filled = Math.round((t / seconds) * 20);
      this.out.write(`\r  ${label} [${'#'.repeat(filled)}${'.'.repeat(20 - filled)}] ${t.toFixed(1)}/${seconds} s\x1b[K`);
    };
    draw();
    this.timer = setInterval(draw, 100);
  }

  done(): void {
    if (!this.timer) return;
    clearInterval(this.timer);
    this.timer = undefined;
    this.out.write('\r\x1b[K');
  }
}
