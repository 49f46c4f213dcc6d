// `sidecar-accel conns` against ss on the real kernel: it lists exactly the
// connected TCP sockets ss shows in each enabled pod's netns (same socket
// cookies, same addresses), pairs them into connections, and says per
// direction whether it is redirected or on TCP, and why.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Pod } from '../../lab/topology/topology.js';
import { collectConns, type ConnsReport } from '../../src/conns/kernel.js';
import type { ConnEnd, Connection } from '../../src/conns/connections.js';
import { PROXY_UID } from '../../lab/topology/topology.js';
import { useMesh, APP_PORT, type Mesh } from './mesh.js';
import { kernelSkip } from './gate.js';

interface SsSocket { state: string; local: string; remote: string; cookie: string }

/** `ss -tnie` in the pod: every connected TCP socket with its cookie (sk:, hex). */
async function ssSockets(pod: Pod): Promise<SsSocket[]> {
  const { stdout } = await pod.exec('ss', ['-Htnie']);
  const out: SsSocket[] = [];
  for (const line of stdout.split('\n')) {
    if (!line || /^\s/.test(line)) continue; // the -i line of the socket above
    const f = line.trim().split(/\s+/);
    const sk = /\bsk:([0-9a-f]+)\b/.exec(line);
    if (!sk || f.length < 5) throw new Error(`ss line not understood: ${line}`);
    // ss writes a v4-mapped address as [::ffff:a.b.c.d]:port; conns as a.b.c.d:port.
    const addr = (s: string) => s.replace(/^\[::ffff:([0-9.]+)\]/, '$1');
    out.push({ state: f[0]!, local: addr(f[3]!), remote: addr(f[4]!), cookie: BigInt(`0x${sk[1]}`).toString() });
  }
  return out;
}

function report(m: Mesh): ConnsReport {
  const names = new Map([[m.cookieA, 'test/a'], [m.cookieB, 'test/b']]);
  return collectConns({ pinRoot: m.pinRoot, cgroupPath: m.topo.cgroupDir, podOf: (c) => names.get(c) ?? null });
}

/** The ends conns lists in one pod equal the sockets ss lists there: same set, same addresses and state. */
async function assertSameAsSs(m: Mesh, r: ConnsReport, pod: Pod, name: string): Promise<void> {
  const ends = r.connections.flatMap((c) => c.ends).filter((e) => e.pod === name);
  const ss = await ssSockets(pod);
  const mine = ends.map((e) => ({ state: e.tcpState, local: e.local, remote: e.remote, cookie: e.sockCookie })).sort((x, y) => x.cookie.localeCompare(y.cookie));
  assert.deepEqual(mine, [...ss].sort((x, y) => x.cookie.localeCompare(y.cookie)), `conns and ss disagree in ${name}`);
  assert.ok(r.problems.length === 0, `problems: ${r.problems.join('; ')}`);
  void m;
}

/** The one connection with an end matching `pred`. */
function connWith(r: ConnsReport, pred: (e: ConnEnd) => boolean, what: string): Connection {
  const found = r.connections.filter((c) => c.ends.some(pred));
  assert.equal(found.length, 1, `${what}: ${found.length} connections (${JSON.stringify(r.connections.map((c) => c.ends.map((e) => `${e.pod} ${e.local}->${e.remote}`)))})`);
  return found[0]!;
}

/** Python lines that open listener `l` on 127.0.0.1:port (the module socket imported). */
const pythonListener = (port: number) => [
  'l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)',
  `l.bind(("127.0.0.1", ${port})); l.listen()`,
];

const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../src/cli/main.js');

/** `sidecar-accel conns` on the mesh's pins, no agent running (nothing listens on the API port given). */
function runCli(m: Mesh, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sa-conns-'));
  try {
    const cfg = path.join(dir, 'config.yaml');
    fs.writeFileSync(cfg, `api:\n  listen: 127.0.0.1:1\ndatapath:\n  pinDir: ${m.pinRoot}\n  cgroup: ${m.topo.cgroupDir}\n`);
    return spawnSync(process.execPath, [cli, 'conns', '--config', cfg, ...args], { encoding: 'utf8' });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('conns: connections as the kernel holds them', { skip: kernelSkip }, () => {
  const mesh = useMesh({ label: 'conns' });

  test('through both sidecars: the in-pod hops redirected both ways, the pod-to-pod hop on TCP (cross-pod off)', async () => {
    const m = mesh();
    const server = m.startPeer(m.b, ['server', '--listen', `0.0.0.0:${APP_PORT}`, '--bytes', '200000', '--end-after-peer', '1']);
    await server.ready();
    await m.learnListener();
    const client = m.startPeer(m.a, ['client', '--connect', m.vip(), '--bytes', '300000', '--hold', '1', '--expect', '200000']);
    try {
      await client.waitFor((o) => o.event === 'holding', 'holding');
      const r = report(m);
      await assertSameAsSs(m, r, m.a, 'test/a');
      await assertSameAsSs(m, r, m.b, 'test/b');
      // Pod a: the app (not the proxy uid) dialled the service VIP; its sidecar accepted it.
      const app = connWith(r, (e) => e.pod === 'test/a' && e.uid !== PROXY_UID && e.remote === m.vip(), 'the app\'s connection in pod a');
      assert.equal(app.pairedBy, 'key');
      assert.deepEqual(app.ends.map((e) => [e.pod, e.role, e.uid === PROXY_UID]), [['test/a', 'client', false], ['test/a', 'server', true]]);
      for (const e of app.ends) assert.equal(e.sends.mode, 'redirected', `${e.role} -> other: ${JSON.stringify(e.sends)}`);
      // The sidecars' hop: from pod a's address to pod b's app port, one end in each pod.
      const hop = connWith(r, (e) => e.pod === 'test/a' && e.remote === `${m.b.ip4}:${APP_PORT}`, 'the sidecars\' hop');
      assert.deepEqual(hop.ends.map((e) => e.pod), ['test/a', 'test/b']);
      for (const e of hop.ends) {
        assert.equal(e.sends.mode, 'tcp');
        assert.equal(e.sends.reason, 'cross-pod', JSON.stringify(e.sends));
        assert.ok(e.sends.tcpBytesSinceRegistered! > 0, 'its bytes went over TCP');
      }
      // Pod b: its sidecar dialled the app server.
      const inb = connWith(r, (e) => e.pod === 'test/b' && e.uid !== PROXY_UID && e.local === `${m.b.ip4}:${APP_PORT}`, 'the app server\'s connection in pod b');
      for (const e of inb.ends) assert.equal(e.sends.mode, 'redirected', JSON.stringify(e.sends));
      assert.equal(r.connections.length, 3, 'three hops, nothing else');
      // The command: the same connections; without an agent, pods go by netns cookie, and it says why.
      const out = runCli(m, ['--json']);
      assert.equal(out.status, 0, out.stderr);
      const j = JSON.parse(out.stdout) as { connections: { ends: { sockCookie: string; pod: string | null; sends: { mode: string } }[] }[]; problems: string[] };
      assert.deepEqual(j.connections.map((c) => c.ends.map((e) => [e.sockCookie, e.sends.mode])).sort(),
        r.connections.map((c) => c.ends.map((e) => [e.sockCookie, e.sends.mode])).sort());
      assert.ok(j.connections.every((c) => c.ends.every((e) => e.pod === null)));
      assert.match(j.problems.join('\n'), /pods are shown by netns cookie: the agent's API .* did not answer/);
      const text = runCli(m, []);
      assert.equal(text.status, 0, text.stderr);
      assert.match(text.stdout, /client -> server: redirected/);
      assert.match(text.stdout, /TCP: cross-pod \(inferred\)/);
      const unknown = runCli(m, ['--pod', 'ns/none']);
      assert.equal(unknown.status, 1);
      assert.match(unknown.stderr, /pod ns\/none is not an enabled pod on this node/);
    } finally {
      client.child.kill('SIGUSR1');
    }
    await client.finished();
    server.child.kill('SIGTERM');
  });

  test('a direction moved to TCP mid-stream (netns disabled for a while) is on TCP; the other stays as it was', async () => {
    const m = mesh();
    const port = 9870;
    const p = m.startCase(m.a, 'toggle', port);
    try {
      await p.waitFor((o) => o.event === 'phase' && o.n === 0);
      const loop = (r: ConnsReport) => connWith(r, (e) => e.pod === 'test/a' && e.remote === `127.0.0.1:${port}`, 'the case\'s connection');
      const before = report(m);
      await assertSameAsSs(m, before, m.a, 'test/a');
      const [c0, s0] = loop(before).ends;
      assert.equal(c0!.sends.mode, 'redirected', JSON.stringify(c0!.sends));
      assert.equal(s0!.sends.mode, 'idle', 'the server never sends');

      m.dp.disable(m.cookieA, { keepCounters: true });
      p.child.kill('SIGUSR1');
      await p.waitFor((o) => o.event === 'phase' && o.n === 1);
      m.dp.enable(m.cookieA);
      const after = report(m);
      await assertSameAsSs(m, after, m.a, 'test/a');
      const conn = loop(after);
      assert.equal(conn.pairedBy, 'key');
      const [c1, s1] = conn.ends;
      assert.equal(c1!.role, 'client');
      assert.equal(c1!.sends.mode, 'tcp');
      // Why it left the redirect is not kept per socket: said so, not guessed.
      assert.equal(c1!.sends.reason, 'unrecorded');
      assert.equal(c1!.sends.basis, 'inferred');
      assert.ok(c1!.sends.tcpBytesSinceRegistered! > 0);
      assert.equal(s1!.sends.mode, 'idle');
    } finally {
      p.child.kill('SIGUSR1');
    }
    await p.finished();
  });

  test('a paired direction whose reader turned TCP_INQ on goes to TCP, and conns names the option', async () => {
    const m = mesh();
    const port = 9872;
    const script = [
      'import json, select, signal, socket',
      ...pythonListener(port),
      'def pair():',
      '    c = socket.socket(); c.setblocking(False)', // non-blocking when established: registered
      `    c.connect_ex(("127.0.0.1", ${port})); select.select([], [c], [])`,
      '    s, _ = l.accept(); s.setblocking(False)',
      '    return c, s',
      'def read(sock, n):',
      '    got = b""',
      '    while len(got) < n:',
      '        select.select([sock], [], []); got += sock.recv(n - len(got))',
      '    return got',
      // The first connection shows the listener's sockets are read non-blocking (I6): the next one registers.
      'c0, s0 = pair(); s0.send(b"l"); read(c0, 1); c0.close(); s0.close()',
      'c, s = pair()',
      'c.send(b"a"); assert read(s, 1) == b"a"',
      's.setsockopt(socket.IPPROTO_TCP, 36, 1)', // TCP_INQ
      'c.send(b"b"); assert read(s, 1) == b"b"',
      'print(json.dumps({"event": "ready"}), flush=True)',
      'signal.pause()',
    ].join('\n');
    const before = m.dp.netnsCounters(m.cookieA)!;
    const p = m.start(m.a, 'python3', ['-c', script]);
    try {
      await p.ready();
      const after = m.dp.netnsCounters(m.cookieA)!;
      assert.equal(after.fallbackSocketOption - before.fallbackSocketOption, 1n, 'the second message fell back for the option');
      const r = report(m);
      await assertSameAsSs(m, r, m.a, 'test/a');
      const conn = connWith(r, (e) => e.pod === 'test/a' && e.remote === `127.0.0.1:${port}` && e.tcpState === 'ESTAB', 'the paired connection');
      assert.equal(conn.pairedBy, 'key');
      const [c, s] = conn.ends;
      assert.deepEqual([c!.role, c!.sends.mode, c!.sends.reason, c!.sends.basis, c!.sends.tcpBytesSinceRegistered], ['client', 'tcp', 'socket-option', 'inferred', 1]);
      assert.match(c!.sends.detail, /the other end has TCP_INQ set/);
      assert.equal(s!.sends.mode, 'idle', JSON.stringify(s!.sends));
    } finally {
      p.child.kill('SIGKILL');
    }
  });

  test('blocking sockets are never registered: both directions on TCP with the reason each socket recorded', async () => {
    const m = mesh();
    const port = 9871;
    const script = [
      'import socket, signal',
      ...pythonListener(port),
      `c = socket.create_connection(("127.0.0.1", ${port}))`, // no timeout: a blocking socket
      's, _ = l.accept()',
      'c.sendall(b"x" * 1000); s.recv(1000)', // the server never sends: its listener stays unlearned
      'print(\'{"event":"ready"}\', flush=True)',
      'signal.pause()',
    ].join('\n');
    const p = m.start(m.a, 'python3', ['-c', script]);
    try {
      await p.ready();
      const r = report(m);
      await assertSameAsSs(m, r, m.a, 'test/a');
      const conn = connWith(r, (e) => e.pod === 'test/a' && e.remote === `127.0.0.1:${port}`, 'the blocking connection');
      assert.equal(conn.pairedBy, 'addresses', 'neither end has a key');
      const [c, s] = conn.ends;
      assert.equal(c!.local, s!.remote);
      assert.deepEqual([c!.sends.mode, c!.sends.reason, c!.sends.basis], ['tcp', 'blocking', 'recorded']);
      assert.deepEqual([s!.sends.mode, s!.sends.reason, s!.sends.basis], ['tcp', 'unknown-reader', 'recorded']);
    } finally {
      p.child.kill('SIGKILL');
    }
  });
});
