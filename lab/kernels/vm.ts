// One guest boot: two virtiofsd (the host's root, read-only in the guest; the
// run's job directory, writable) and qemu with the serial console on its
// stdout. The console is the event stream: guest/run.sh prints KMATRIX-*
// marker lines, this file waits for them (bounded by timers), never for a
// fixed time.
import fs from 'node:fs';
import path from 'node:path';
import { daemon, type Cleanup, type Daemon } from './proc.js';

export type Accel = 'kvm' | 'tcg';

/** qemu-system-common's C virtiofsd (bookworm; tested) first, then the Rust package's (untested). */
export const VIRTIOFSD_CANDIDATES = ['/usr/lib/qemu/virtiofsd', '/usr/libexec/virtiofsd'];

export function virtiofsdPath(): string {
  const p = VIRTIOFSD_CANDIDATES.find((c) => fs.existsSync(c));
  if (!p) throw new Error(`virtiofsd not found (${VIRTIOFSD_CANDIDATES.join(', ')}): apt-get install qemu-system-common`);
  return p;
}

export interface BootOptions {
  vmlinuz: string;
  initramfs: string;
  /** Host directory shared writable with the guest (tag kmjob). */
  jobDir: string;
  /** Where the sockets go; removed by the caller's cleanup. */
  runDir: string;
  accel: Accel;
  cpus: number;
  memMiB: number;
  /** From qemu's start to the KMATRIX-BOOTED marker. */
  bootTimeoutMs: number;
  /** From qemu's start to its exit. */
  totalTimeoutMs: number;
  consoleLog: string;
  /** Each console line, as it arrives (progress output). */
  onLine?: (line: string) => void;
}

export interface BootResult {
  /** ms from qemu's start to KMATRIX-BOOTED, null when it never came. */
  bootMs: number | null;
  guestRelease: string | null;
  totalMs: number;
  /** Which timer ended the boot, if one did. */
  timedOut: 'boot' | 'total' | null;
  qemuExit: number | string;
  /** Every KMATRIX-* marker seen, in order. */
  markers: string[];
  /** qemu's own complaints (stderr), e.g. "KVM internal error". */
  qemuStderr: string;
}

/** Starts virtiofsd on `source` and resolves once it listens (its "Waiting for vhost-user" line). */
async function startVirtiofsd(source: string, socket: string, cleanup: Cleanup): Promise<Daemon> {
  const bin = virtiofsdPath();
  // The default namespace sandbox fails here (EBUSY); chroot is enough for a
  // test VM. Log level info (the default): its "Waiting for vhost-user socket
  // connection" line is the ready event. qemu's own C virtiofsd (bookworm)
  // takes -o options; the Rust one (package virtiofsd, trixie on) its own flags.
  const args = bin === '/usr/lib/qemu/virtiofsd'
    ? [`--socket-path=${socket}`, '-o', `source=${source}`, '-o', 'sandbox=chroot', '-o', 'cache=auto']
    : [`--socket-path=${socket}`, `--shared-dir=${source}`, '--sandbox=chroot', '--cache=auto'];
  const d = daemon(bin, args);
  cleanup.add(`virtiofsd ${source}`, async () => { await d.stop(); fs.rmSync(socket, { force: true }); });
  let err = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`virtiofsd for ${source} did not start listening in 15 s:\n${err}`)), 15_000);
    d.child.stderr!.setEncoding('utf8').on('data', (s: string) => {
      if (err.length < 65536) err += s; // keeps draining the pipe either way
      if (/waiting for vhost-user socket connection/i.test(err)) { clearTimeout(timer); resolve(); }
    });
    void d.exited.then((code) => { clearTimeout(timer); reject(new Error(`virtiofsd for ${source} exited (${code}):\n${err}`)); });
  });
  return d;
}

/** A console line as text: terminal control sequences (SeaBIOS, the tty) would garble it. */
export function consoleLine(raw: string): string {
  return raw.replace(/\r/g, '').replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '');
}

export async function bootGuest(o: BootOptions, cleanup: Cleanup): Promise<BootResult> {
  await startVirtiofsd('/', path.join(o.runDir, 'root.sock'), cleanup);
  await startVirtiofsd(o.jobDir, path.join(o.runDir, 'job.sock'), cleanup);

  // Without ERMS/FSRM the guest kernel copies user data with rep movsq or
  // 8-byte moves instead of rep movsb, which TCG emulates one byte at a time:
  // measured on 6.12, one hops test 79 s -> 44 s (system time 50 s -> 18 s).
  // What the suites check (BPF, sockets) does not depend on either flag.
  const cpu = o.accel === 'kvm' ? ['-accel', 'kvm', '-cpu', 'host'] : ['-accel', 'tcg,thread=multi', '-cpu', 'max,-erms,-fsrm'];
  const args = [
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot', '-monitor', 'none',
    ...cpu, '-smp', String(o.cpus), '-m', `${o.memMiB}M`,
    // vhost-user-fs needs guest RAM that virtiofsd can map: a shared memfd.
    '-object', `memory-backend-memfd,id=mem,size=${o.memMiB}M,share=on`, '-numa', 'node,memdev=mem',
    '-kernel', o.vmlinuz, '-initrd', o.initramfs,
    // panic=-1 + -no-reboot: a panic ends qemu at once instead of hanging.
    '-append', 'console=ttyS0,115200 panic=-1 loglevel=4 random.trust_cpu=on edd=off',
    '-chardev', 'stdio,id=con,signal=off', '-serial', 'chardev:con',
    '-chardev', `socket,id=fsroot,path=${path.join(o.runDir, 'root.sock')}`,
    '-device', 'vhost-user-fs-pci,chardev=fsroot,tag=kmroot',
    '-chardev', `socket,id=fsjob,path=${path.join(o.runDir, 'job.sock')}`,
    '-device', 'vhost-user-fs-pci,chardev=fsjob,tag=kmjob',
    // Entropy from the host: node/openssl must not block at start on old kernels.
    '-device', 'virtio-rng-pci',
  ];
  const start = Date.now();
  // stdin is a pipe never written to: qemu's stdio chardev would read EOF from /dev/null.
  const qemu = daemon('qemu-system-x86_64', args, { stdin: 'pipe' });
  cleanup.add('qemu', () => qemu.stop(3000));
  const log = fs.createWriteStream(o.consoleLog);
  cleanup.add('console log', () => new Promise<void>((r) => log.end(r)));

  const res: BootResult = {
    bootMs: null, guestRelease: null, totalMs: 0, timedOut: null, qemuExit: 'running', markers: [], qemuStderr: '',
  };
  qemu.child.stderr!.setEncoding('utf8').on('data', (s: string) => { res.qemuStderr += s; log.write(`[qemu stderr] ${s}`); });
  let partial = '';
  qemu.child.stdout!.setEncoding('utf8').on('data', (s: string) => {
    log.write(s);
    partial += s;
    const lines = partial.split(/\r?\n/);
    partial = lines.pop()!;
    for (const raw of lines) {
      const line = consoleLine(raw);
      o.onLine?.(line);
      // Kernel messages share the console: a marker may not start its line.
      const m = /(KMATRIX-[A-Z-]+)(.*)$/.exec(line);
      if (!m) continue;
      res.markers.push(m[1]! + m[2]!);
      if (m[1] === 'KMATRIX-BOOTED' && res.bootMs === null) {
        res.bootMs = Date.now() - start;
        res.guestRelease = m[2]!.trim().split(/\s+/)[0] ?? null;
        clearTimeout(bootTimer);
      }
    }
  });

  const bootTimer = setTimeout(() => { res.timedOut = 'boot'; void qemu.stop(3000); }, o.bootTimeoutMs);
  const totalTimer = setTimeout(() => { res.timedOut ??= 'total'; void qemu.stop(3000); }, o.totalTimeoutMs);
  try {
    res.qemuExit = await qemu.exited;
  } finally {
    clearTimeout(bootTimer);
    clearTimeout(totalTimer);
  }
  res.totalMs = Date.now() - start;
  // On disk before the caller reads it (a second end() from the cleanup is a no-op).
  await new Promise<void>((r) => log.end(r));
  return res;
}
