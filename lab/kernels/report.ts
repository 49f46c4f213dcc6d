// Reads what a guest left in its job directory and renders the matrix.
import fs from 'node:fs';
import path from 'node:path';

export interface SuiteResult {
  /** The --tests entry: filters passed to scripts/run-tests.js ("" = all). */
  name: string;
  status: 'pass' | 'fail' | 'timeout' | 'not-run';
  exitCode: number | null;
  passed: number | null;
  failed: number | null;
  skipped: number | null;
  /** Names of failing tests (from the spec reporter's ✖ lines), at most 20. */
  failures: string[];
  /** Without a closing line (killed): tests finished so far, and the last one (the next one hung). */
  finishedSoFar?: { passed: number; failed: number; last: string | null };
  log: string;
}

export interface LoadResult {
  ok: boolean;
  error?: string;
  ms?: number;
  /** When refused: the verifier's last words, from bpftool's full log. */
  verifier?: string[];
  /** The agent's start-up self-test on this kernel: its mode and what failed. */
  selfTest?: { mode: string; failed: string[] };
}

export interface KernelResult {
  spec: string;
  suite?: string;
  release?: string;
  packageVersion?: string;
  accel?: string;
  booted: boolean;
  bootSeconds?: number;
  load?: LoadResult;
  suites: SuiteResult[];
  /** Whole kernel: fetch + initramfs + boot + tests. */
  totalSeconds: number;
  guestSeconds?: number;
  error?: string;
  /** Why the first boot was retried: it ended before the guest's userspace said a word. */
  bootRetry?: string;
  logDir?: string;
}

const SUMMARY = /^tests: (\d+) passed, (\d+) failed, (\d+) skipped\s*$/m;

export function readSuite(jobDir: string, i: number, name: string, logDir: string): SuiteResult {
  const logPath = path.join(jobDir, `suite-${i}.log`);
  const rcPath = path.join(jobDir, `suite-${i}.rc`);
  const text = fs.existsSync(logPath) ? fs.readFileSync(logPath, 'utf8') : '';
  const rc = fs.existsSync(rcPath) ? Number(fs.readFileSync(rcPath, 'utf8').trim()) : null;
  const all = [...text.matchAll(new RegExp(SUMMARY.source, 'gm'))];
  const last = all[all.length - 1];
  const failures = [...new Set([...text.matchAll(/^\s*✖ (.+?)(?: \([\d.]+m?s\))?$/gm)]
    .map((m) => m[1]!).filter((n) => n !== 'failing tests:'))].slice(0, 20);
  const done = [...text.matchAll(/^\s*([✔✖]) (.+?)(?: \([\d.]+m?s\))?$/gm)];
  const finishedSoFar = last ? undefined : {
    passed: done.filter((m) => m[1] === '✔').length,
    failed: done.filter((m) => m[1] === '✖').length,
    last: done.length ? done[done.length - 1]![2]! : null,
  };
  const status = rc === null ? 'not-run' : rc === 124 || rc === 137 ? 'timeout' : rc === 0 ? 'pass' : 'fail';
  return {
    name, status, exitCode: rc,
    passed: last ? Number(last[1]) : null, failed: last ? Number(last[2]) : null, skipped: last ? Number(last[3]) : null,
    failures, ...(finishedSoFar && text ? { finishedSoFar } : {}), log: path.join(logDir, `suite-${i}.log`),
  };
}

export function readLoad(jobDir: string): LoadResult | undefined {
  const p = path.join(jobDir, 'load.json');
  if (!fs.existsSync(p)) return undefined;
  const line = fs.readFileSync(p, 'utf8').trim().split('\n').pop() ?? '';
  try {
    const r = JSON.parse(line) as LoadResult;
    const v = path.join(jobDir, 'verifier.log');
    if (!r.ok && fs.existsSync(v)) r.verifier = verifierVerdict(fs.readFileSync(v, 'utf8'));
    return r;
  } catch {
    const err = fs.existsSync(path.join(jobDir, 'load.log')) ? fs.readFileSync(path.join(jobDir, 'load.log'), 'utf8') : '';
    return { ok: false, error: `probe crashed: ${err.trim().split('\n').slice(-3).join(' | ') || '(no output)'}` };
  }
}

/** The lines just before libbpf's "-- END PROG LOAD LOG --" (the reason), or its last error lines. */
export function verifierVerdict(text: string): string[] {
  const lines = text.split('\n');
  const end = lines.findIndex((l) => l.includes('-- END PROG LOAD LOG --'));
  if (end > 0) {
    const prog = /prog '([^']+)'/.exec(lines[end]!)?.[1];
    // The reason is the last words that are not an instruction dump or statistics.
    const tail = lines.slice(Math.max(0, end - 8), end)
      .filter((l) => l.trim() && !/^(processed \d+ insns|verification time|stack depth|\d+: |; )/.test(l)).slice(-3);
    return prog ? [`prog ${prog}:`, ...tail] : tail;
  }
  return lines.filter((l) => /error|fail|invalid/i.test(l)).slice(-4);
}

function cell(s: SuiteResult): string {
  const counts = s.passed !== null ? ` ${s.passed}/${s.failed}/${s.skipped}`
    : s.finishedSoFar ? ` ${s.finishedSoFar.passed}/${s.finishedSoFar.failed}/? so far` : '';
  return s.status === 'pass' ? `ok${counts}` : `${s.status.toUpperCase()}${counts}`;
}

/** A plain-text table; suite cells read "ok passed/failed/skipped". */
export function renderTable(results: KernelResult[], suiteNames: string[]): string {
  const head = ['kernel', 'release', 'package', 'accel', 'booted', 'loads', 'self-test', ...suiteNames.map((n) => n || 'all tests'), 'total'];
  const rows = results.map((r) => [
    r.spec, r.release ?? '-', r.packageVersion ?? '-', r.accel ?? '-',
    r.booted ? `yes ${r.bootSeconds?.toFixed(1)}s` : 'NO',
    r.load ? (r.load.ok ? 'yes' : 'NO') : '-',
    r.load?.selfTest?.mode ?? '-',
    // By position: one --tests entry may repeat (a suite run twice).
    ...suiteNames.map((_, i) => { const s = r.suites[i]; return s ? cell(s) : '-'; }),
    `${r.totalSeconds.toFixed(0)}s`,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  const fmt = (row: string[]) => row.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  const lines = [fmt(head), fmt(widths.map((w) => '-'.repeat(w))), ...rows.map(fmt)];
  // What a cell cannot hold: errors, refusals, failing test names.
  for (const r of results) {
    if (r.bootRetry) lines.push(`${r.spec}: booted a second time: ${r.bootRetry}`);
    if (r.error) lines.push(`${r.spec}: ${r.error}`);
    if (r.load && !r.load.ok) {
      lines.push(`${r.spec}: not served: ${(r.load.error ?? '').split('\n')[0]}`);
      for (const v of r.load.verifier ?? []) lines.push(`${r.spec}:   verifier: ${v}`);
    }
    for (const f of r.load?.selfTest?.failed ?? []) lines.push(`${r.spec}: self-test: ${f}`);
    for (const s of r.suites) {
      for (const f of s.failures) lines.push(`${r.spec} ${s.name || 'all'}: ✖ ${f}`);
      if (s.status === 'timeout') {
        lines.push(`${r.spec} ${s.name || 'all'}: timed out; last test finished: ${s.finishedSoFar?.last ?? '(none)'} (the one after it hung)`);
      }
    }
    if (r.logDir) lines.push(`${r.spec}: logs in ${r.logDir}`);
  }
  lines.push('(suite cells: passed/failed/skipped from the last "tests:" line of scripts/run-tests.js)');
  return lines.join('\n');
}
