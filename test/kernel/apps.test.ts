// Real Debian applications in the Istio-style pod pair: the client in pod
// "a" dials the service VIP (port 80), the sidecars carry it to the server in
// pod "b" on APP_PORT. Every scenario runs with acceleration OFF and then ON
// (both pods enabled, cross-pod pairing on, so every hop is eligible) and
// what the application saw must be IDENTICAL: bodies and hashes, status
// codes, exit codes, request and error counts. The ON run's per-netns
// counters (and ss per hop where connections are held open) are printed.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { useMesh, APP_PORT, type Mesh } from './mesh.js';
import { kernelSkip, requireKernel } from './gate.js';
import { SERVICE_VIP4 } from '../../lab/topology/topology.js';
import { SERVICE_PORT } from '../../lab/topology/pair.js';
import {
  runIn, bashIn, ok, Server, sampleHops, onOff, assertAccelerated, assertAppLeftAlone, assertSame, sha256File, type RunContext, type Outcome,
} from './apps/harness.js';
import { URLLIB_CLIENT, HALFCLOSE_SERVER, HALFCLOSE_CLIENT } from './apps/scripts.js';

const VIP = SERVICE_VIP4;
const BASE_URL = `http://${VIP}:${SERVICE_PORT}/`;

function installed(bin: string): boolean {
  return spawnSync('bash', ['-c', `command -v "$0"`, bin], { stdio: 'ignore' }).status === 0;
}

/** Skips a suite whose programs are not installed (a failure instead under REQUIRE_KERNEL=1). */
function toolSkip(bins: string[], packages: string): string | false {
  if (kernelSkip) return kernelSkip;
  const missing = bins.filter((b) => !installed(b));
  if (missing.length === 0 || requireKernel) return false;
  return `not installed: ${missing.join(', ')} (Debian packages: ${packages})`;
}

/** Deterministic bytes: a sha256 counter stream. */
function bytesOf(seed: string, size: number): Buffer {
  const out = Buffer.alloc(size);
  for (let off = 0, i = 0; off < size; i++) off += crypto.createHash('sha256').update(`${seed}:${i}`).digest().copy(out, off);
  return out;
}

const sha256 = (b: Buffer | string) => crypto.createHash('sha256').update(b).digest('hex');

describe('real applications behave the same with acceleration on and off', { skip: kernelSkip }, () => {
  const mesh = useMesh({ label: 'apps', crossPod: true, enable: false });

  // The static tree every HTTP server serves, and what each file hashes to.
  const tree: Record<string, Buffer> = {
    'index.html': Buffer.from('<!doctype html><title>sidecar-accel</title><p>index</p>\n'),
    'small.txt': Buffer.from('small\n'.repeat(100)),
    '1m.bin': bytesOf('1m', 1 << 20),
    '10m.bin': bytesOf('10m', 10 << 20),
  };
  const treeSha = Object.fromEntries(Object.entries(tree).map(([k, v]) => [k, sha256(v)]));
  let www = '';

  before(() => {
    www = mesh().topo.file('www');
    fs.mkdirSync(www);
    for (const [name, body] of Object.entries(tree)) fs.writeFileSync(path.join(www, name), body);
  });

  describe('nginx serving a static tree', { skip: toolSkip(['nginx', 'curl', 'wrk'], 'nginx-light curl wrk') }, () => {
    let nginx: Server | undefined;

    before(async () => {
      const m = mesh();
      const dir = m.topo.file('nginx');
      fs.mkdirSync(dir);
      const cfg = path.join(dir, 'nginx.conf');
      fs.writeFileSync(cfg, [
        'daemon off;',
        'master_process on;',
        'worker_processes 1;',
        'user root;', // the topology's temp dir is root's alone
        `pid ${dir}/nginx.pid;`,
        'error_log stderr warn;',
        'events { worker_connections 1024; }',
        'http {',
        '  access_log off;',
        '  sendfile on;',
        '  tcp_nopush on;',
        '  keepalive_timeout 65;',
        '  keepalive_requests 100000;',
        `  client_body_temp_path ${dir}/body;`,
        `  proxy_temp_path ${dir}/proxy;`,
        `  fastcgi_temp_path ${dir}/fastcgi;`,
        `  uwsgi_temp_path ${dir}/uwsgi;`,
        `  scgi_temp_path ${dir}/scgi;`,
        '  types { text/html html; text/plain txt; application/octet-stream bin; }',
        `  server { listen 0.0.0.0:${APP_PORT}; root ${www}; index index.html; }`,
        '}',
        '',
      ].join('\n'));
      nginx = Server.start(m.b, 'nginx', 'nginx', ['-c', cfg, '-p', dir, '-e', 'stderr']);
      await nginx.waitForPort(m.b, APP_PORT, 20_000);
    });

    after(async () => { await nginx?.stop('SIGTERM'); });

    const paths = ['index.html', '1m.bin', '10m.bin', 'small.txt', 'missing'];
    const warmNginx = async (m: Mesh) => ok(await runIn(m.a, 'curl', ['-sS', '-f', '-o', '/dev/null', BASE_URL + 'small.txt'], 30_000), 'warm-up GET');

    async function curl(m: Mesh, ctx: RunContext, tag: string, extra: string[]) {
      const outs = paths.map((p) => m.topo.file(`curl-${tag}-${ctx.mode}-${p}`));
      const o = await runIn(m.a, 'curl', [
        '-sS', '--noproxy', '*', '--http1.1', '--max-time', '60', ...extra,
        '-w', '%{http_code} %{size_download} %{num_connects}\\n',
        ...paths.flatMap((p, i) => ['-o', outs[i]!, BASE_URL + p]),
      ], 90_000);
      const written = o.stdout.trim().split('\n');
      const responses = await Promise.all(paths.map(async (p, i) => {
        const [status, size, connects] = (written[i] ?? '').split(' ');
        const file = outs[i]!;
        const sha = fs.existsSync(file) ? await sha256File(file) : null;
        return { path: p, status, size, connects, sha256: sha, intact: p in treeSha ? sha === treeSha[p] : null };
      }));
      return { exit: o.code, timedOut: o.timedOut, stderr: o.stderr.trim(), responses };
    }

    for (const [tag, extra] of [['keep-alive', []], ['connection-close', ['-H', 'Connection: close']]] as const) {
      test(`curl, several URLs in one invocation (${tag})`, { timeout: 180_000 }, async () => {
        const m = mesh();
        const r = await onOff(m, `nginx curl ${tag}`, (ctx) => curl(m, ctx, tag, [...extra]), { warmup: () => warmNginx(m) });
        console.log(`apps[nginx curl ${tag}] ON result ${JSON.stringify(r.on.responses.map((x) => [x.path, x.status, x.connects, x.intact]))} exit ${r.on.exit}`);
        assertSame(`nginx curl ${tag}`, r);
        assertAccelerated(`nginx curl ${tag}`, r);
        assert.equal(r.off.exit, 0, `curl failed: ${r.off.stderr}`);
        assert.deepEqual(r.off.responses.map((x) => x.intact), [true, true, true, true, null]);
        assert.equal(r.off.responses.at(-1)!.status, '404');
      });
    }

    function parseWrk(o: Outcome) {
      const requests = Number(/(\d+) requests in/.exec(o.stdout)?.[1] ?? 0);
      return {
        exit: o.code,
        timedOut: o.timedOut,
        requestsDone: requests > 0,
        socketErrors: /Socket errors: (.*)/.exec(o.stdout)?.[1]?.trim() ?? 'none',
        non2xx3xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(o.stdout)?.[1] ?? 0),
        stderr: o.stderr.trim(),
      };
    }

    const wrkCases = [
      { tag: 'keep-alive index.html', path: 'index.html', extra: [] as string[], held: true },
      { tag: 'keep-alive 1m.bin', path: '1m.bin', extra: [], held: true },
      { tag: 'connection-close index.html', path: 'index.html', extra: ['-H', 'Connection: close'], held: false },
    ];
    for (const c of wrkCases) {
      test(`wrk -t1 -c4 -d2s (${c.tag})`, { timeout: 120_000 }, async () => {
        const m = mesh();
        const r = await onOff(m, `nginx wrk ${c.tag}`, async (ctx) => {
          const running = runIn(m.a, 'wrk', ['-t1', '-c4', '-d2s', ...c.extra, BASE_URL + c.path], 30_000);
          if (c.held) ctx.hops[c.tag] = await sampleHops(m, running, 4);
          return parseWrk(await running);
        }, { warmup: () => warmNginx(m) });
        console.log(`apps[nginx wrk ${c.tag}] ON ${JSON.stringify(r.on)}`);
        assertSame(`nginx wrk ${c.tag}`, r);
        assertAccelerated(`nginx wrk ${c.tag}`, r);
        assert.deepEqual(r.off, { exit: 0, timedOut: false, requestsDone: true, socketErrors: 'none', non2xx3xx: 0, stderr: '' });
      });
    }
  });

  describe('redis-server with redis-benchmark and redis-cli', { skip: toolSkip(['redis-server', 'redis-benchmark', 'redis-cli'], 'redis-server redis-tools') }, () => {
    let redis: Server | undefined;
    const big = bytesOf('redis-big', 512 << 10).toString('hex'); // 1 MiB of text
    const redisCli = ['-h', VIP, '-p', String(SERVICE_PORT)];

    before(async () => {
      const m = mesh();
      const dir = m.topo.file('redis');
      fs.mkdirSync(dir);
      redis = Server.start(m.b, 'redis-server', 'redis-server', [
        '--port', String(APP_PORT), '--bind', '0.0.0.0', '--save', '', '--appendonly', 'no',
        '--protected-mode', 'no', '--daemonize', 'no', '--dir', dir, '--logfile', '',
      ]);
      await redis.waitForOutput(/Ready to accept connections/, 20_000);
      await redis.waitForPort(m.b, APP_PORT, 10_000);
      fs.writeFileSync(m.topo.file('redis-big'), big);
      const resp = (...args: string[]) => `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;
      const pipe = [resp('FLUSHALL')];
      for (let i = 0; i < 2000; i++) pipe.push(resp('SET', `k:${i}`, `v:${i}:${'x'.repeat(i % 97)}`));
      for (let i = 0; i < 100; i++) pipe.push(resp('INCR', 'counter'));
      for (let i = 0; i < 50; i++) pipe.push(resp('RPUSH', 'list', `item:${i}`));
      fs.writeFileSync(m.topo.file('redis-pipe'), pipe.join(''));
      fs.writeFileSync(m.topo.file('redis-seq'), [
        'DBSIZE', 'GET k:500', 'STRLEN big', 'INCRBY counter 5', 'LRANGE list 0 4', 'MGET k:1 k:2 k:1999',
        'EXISTS big', 'DEL big', 'DBSIZE', 'PING', '',
      ].join('\n'));
    });

    after(async () => { await redis?.stop('SIGTERM'); });
    const warmRedis = async (m: Mesh) => ok(await runIn(m.a, 'redis-cli', [...redisCli, 'PING'], 30_000), 'warm-up PING');

    for (const pipeline of [1, 16]) {
      test(`redis-benchmark -q -n 2000 -t set,get -P ${pipeline}`, { timeout: 120_000 }, async () => {
        const m = mesh();
        const r = await onOff(m, `redis-benchmark -P ${pipeline}`, async () => {
          const o = await runIn(m.a, 'redis-benchmark', [...redisCli, '-q', '-n', '2000', '-t', 'set,get', '-P', String(pipeline)], 60_000);
          const lines = o.stdout.split(/[\r\n]+/);
          return {
            exit: o.code,
            timedOut: o.timedOut,
            completed: lines.map((l) => /^(\w+): [\d.]+ requests per second/.exec(l)?.[1]).filter(Boolean),
            errors: [...lines, ...o.stderr.split('\n')].filter((l) => /error|refused|reset|timeout/i.test(l)),
          };
        }, { warmup: () => warmRedis(m) });
        console.log(`apps[redis-benchmark -P ${pipeline}] ON ${JSON.stringify(r.on)}`);
        assertSame(`redis-benchmark -P ${pipeline}`, r);
        assertAccelerated(`redis-benchmark -P ${pipeline}`, r);
        assert.deepEqual(r.off, { exit: 0, timedOut: false, completed: ['SET', 'GET'], errors: [] });
      });
    }

    test('redis-cli: --pipe, SET/GET of a 1 MiB value, a command sequence', { timeout: 120_000 }, async () => {
      const m = mesh();
      const r = await onOff(m, 'redis-cli', async () => {
        const pipe = await bashIn(m.a, 'exec redis-cli "${@:2}" --pipe < "$1"', [m.topo.file('redis-pipe'), ...redisCli], 60_000);
        const set = await bashIn(m.a, 'exec redis-cli "${@:2}" -x SET big < "$1"', [m.topo.file('redis-big'), ...redisCli], 60_000);
        const get = await runIn(m.a, 'redis-cli', [...redisCli, '--raw', 'GET', 'big'], 60_000);
        const seq = await bashIn(m.a, 'exec redis-cli "${@:2}" < "$1"', [m.topo.file('redis-seq'), ...redisCli], 60_000);
        const brief = (o: Outcome) => ({ exit: o.code, timedOut: o.timedOut, stderr: o.stderr.trim() });
        return {
          pipe: { ...brief(pipe), summary: pipe.stdout.trim().split('\n').at(-1) },
          set: { ...brief(set), reply: set.stdout.trim() },
          get: { ...brief(get), length: get.stdout.length, sha256: sha256(get.stdout), intact: get.stdout === `${big}\n` },
          sequence: { ...brief(seq), output: seq.stdout },
        };
      }, { warmup: () => warmRedis(m) });
      console.log(`apps[redis-cli] ON ${JSON.stringify({ ...r.on, sequence: { ...r.on.sequence, output: r.on.sequence.output.split('\n').length + ' lines' } })}`);
      assertSame('redis-cli', r);
      // redis-cli connects non-blocking, then reads blocking: its hop is left alone.
      assertAppLeftAlone('redis-cli', r, ['a']);
      assert.equal(r.off.pipe.summary, 'errors: 0, replies: 2151');
      assert.equal(r.off.set.reply, 'OK');
      assert.equal(r.off.get.intact, true);
    });
  });

  describe('python3 -m http.server (blocking, one request per connection) with a urllib client', { skip: toolSkip(['python3'], 'python3') }, () => {
    let server: Server | undefined;

    before(async () => {
      const m = mesh();
      server = Server.start(m.b, 'http.server', 'python3', ['-u', '-m', 'http.server', String(APP_PORT), '--bind', '0.0.0.0', '--directory', www]);
      await server.waitForPort(m.b, APP_PORT, 20_000);
    });

    after(async () => { await server?.stop('SIGKILL'); });

    test('urllib.request.urlopen of several files, 10 MiB included: same statuses and sha256', { timeout: 120_000 }, async () => {
      const m = mesh();
      const paths = ['index.html', '1m.bin', '10m.bin', 'small.txt', 'missing', '10m.bin', 'index.html'];
      const r = await onOff(m, 'http.server urllib', async () => {
        const o = await runIn(m.a, 'python3', ['-c', URLLIB_CLIENT, BASE_URL, ...paths], 90_000);
        let responses: unknown = null;
        try { responses = JSON.parse(o.stdout); } catch { /* the outcome fields tell */ }
        return { exit: o.code, timedOut: o.timedOut, stderr: o.stderr.trim().split('\n').at(-1) ?? '', responses };
      });
      console.log(`apps[http.server urllib] ON ${JSON.stringify(r.on).slice(0, 600)}`);
      assertSame('http.server urllib', r);
      assertAppLeftAlone('http.server urllib', r, ['a', 'b']);
      assert.equal(r.off.exit, 0, r.off.stderr);
      const got = r.off.responses as { path: string; status: number; sha256: string }[];
      for (const x of got) {
        if (x.path in treeSha) assert.equal(x.sha256, treeSha[x.path], x.path);
        else assert.equal(x.status, 404);
      }
    });
  });

  describe('PostgreSQL with pgbench', { skip: toolSkip(['pgbench', 'setpriv'], 'postgresql (postgresql-15, postgresql-client-15) util-linux') }, () => {
    const SETUP_BUDGET_MS = 60_000;

    function postgresBin(): string | null {
      const root = '/usr/lib/postgresql';
      if (!fs.existsSync(root)) return null;
      const versions = fs.readdirSync(root).filter((v) => fs.existsSync(path.join(root, v, 'bin', 'postgres')));
      versions.sort((x, y) => Number(y) - Number(x));
      return versions[0] ? path.join(root, versions[0], 'bin') : null;
    }

    test('pgbench -i -s 1, then pgbench -c 2 -t 200 via the VIP: same transactions, no errors', { timeout: 180_000 }, async (t) => {
      const m = mesh();
      const bin = postgresBin();
      const ids = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
      if (!bin || ids.status !== 0) {
        if (requireKernel) assert.fail(`postgres server or user missing (bin ${bin}, id: ${ids.stderr})`);
        t.skip(`PostgreSQL server ${bin ? '' : 'binaries '}${ids.status !== 0 ? 'user "postgres" ' : ''}not installed (Debian package: postgresql)`);
        return;
      }
      const uid = Number(ids.stdout.trim());
      const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim());
      const t0 = performance.now();
      // The unprivileged server must traverse the topology's (root-only) temp dir.
      fs.chmodSync(path.dirname(m.topo.file('x')), 0o711);
      const data = m.topo.file('pgdata');
      fs.mkdirSync(data, { mode: 0o700 });
      fs.chownSync(data, uid, gid);
      const asPostgres = ['setpriv', '--reuid=postgres', '--regid=postgres', '--init-groups', '--'];
      ok(await runIn(m.b, asPostgres[0]!, [...asPostgres.slice(1), path.join(bin, 'initdb'), '-D', data, '-A', 'trust', '-U', 'postgres',
        '-N', '-E', 'UTF8', '--locale=C', '--no-instructions'], 120_000), 'initdb');
      fs.appendFileSync(path.join(data, 'pg_hba.conf'), 'host all all 0.0.0.0/0 trust\nhost all all ::/0 trust\n');
      const pg = Server.start(m.b, 'postgres', 'bash', ['-c', 'exec 2>&1; exec "$@"', 'bash', ...asPostgres, path.join(bin, 'postgres'),
        '-D', data, '-c', 'listen_addresses=0.0.0.0', '-c', `port=${APP_PORT}`, '-c', `unix_socket_directories=${data}`,
        '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', '-c', 'max_connections=20']);
      try {
        await pg.waitForOutput(/database system is ready to accept connections/, 60_000);
        const setupMs = Math.round(performance.now() - t0);
        console.log(`apps[postgresql] initdb and start took ${setupMs} ms`);
        if (setupMs > SETUP_BUDGET_MS) {
          t.skip(`PostgreSQL setup took ${setupMs} ms, over the suite's budget of ${SETUP_BUDGET_MS} ms`);
          return;
        }
        const conn = ['-h', VIP, '-p', String(SERVICE_PORT), '-U', 'postgres'];
        const errorLines = (o: Outcome) => `${o.stdout}\n${o.stderr}`.split('\n').filter((l) => /error|fatal|abort/i.test(l));
        const warmup = async () => ok(await runIn(m.a, 'psql', [...conn, '-c', 'select 1', 'postgres'], 30_000), 'warm-up query');
        const r = await onOff(m, 'pgbench', async (ctx) => {
          const init = await runIn(m.a, 'pgbench', [...conn, '-i', '-s', '1', '-q', 'postgres'], 90_000);
          const running = runIn(m.a, 'pgbench', [...conn, '-c', '2', '-t', '200', 'postgres'], 90_000);
          ctx.hops['pgbench -c 2'] = await sampleHops(m, running, 2);
          const run = await running;
          return {
            init: { exit: init.code, timedOut: init.timedOut, errors: errorLines(init) },
            run: {
              exit: run.code, timedOut: run.timedOut, errors: errorLines(run),
              processed: /number of transactions actually processed: (\S+)/.exec(run.stdout)?.[1] ?? null,
              failed: /number of failed transactions: (\d+)/.exec(run.stdout)?.[1] ?? null,
            },
          };
        }, { warmup });
        console.log(`apps[pgbench] ON ${JSON.stringify(r.on)}`);
        assertSame('pgbench', r);
        assertAccelerated('pgbench', r);
        assert.deepEqual(r.off.run, { exit: 0, timedOut: false, errors: [], processed: '400/400', failed: '0' });
        assert.deepEqual(r.off.init, { exit: 0, timedOut: false, errors: [] });
      } finally {
        await pg.stop('SIGINT');
      }
    });
  });

  describe('blocking half-close client against a blocking reply server', { skip: toolSkip(['python3'], 'python3') }, () => {
    let server: Server | undefined;

    before(async () => {
      const m = mesh();
      server = Server.start(m.b, 'reply server', 'python3', ['-u', '-c', HALFCLOSE_SERVER, String(APP_PORT)]);
      await server.waitForPort(m.b, APP_PORT, 20_000);
    });

    after(async () => { await server?.stop('SIGKILL'); });

    test('200 sequential connections: send, shutdown(SHUT_WR), recv() to EOF: same replies and errors', { timeout: 120_000 }, async () => {
      const m = mesh();
      const firstErrors: Record<string, unknown> = {};
      const r = await onOff(m, 'half-close', async (ctx) => {
        const o = await runIn(m.a, 'python3', ['-c', HALFCLOSE_CLIENT, VIP, String(SERVICE_PORT), '200'], 60_000);
        let summary: Record<string, unknown> | null = null;
        try { summary = JSON.parse(o.stdout) as Record<string, unknown>; } catch { /* the outcome fields tell */ }
        if (summary) { firstErrors[ctx.mode] = summary.firstError; delete summary.firstError; }
        return { exit: o.code, timedOut: o.timedOut, stderr: o.stderr.trim().split('\n').at(-1) ?? '', summary };
      });
      console.log(`apps[half-close] ON ${JSON.stringify(r.on)} first error ON ${JSON.stringify(firstErrors.on)} OFF ${JSON.stringify(firstErrors.off)}`);
      assertSame('half-close', r);
      assertAppLeftAlone('half-close', r, ['a', 'b']);
      assert.deepEqual(r.off.summary, { total: 200, ok: 200, wrongReply: 0, errors: {} });
    });
  });
});
