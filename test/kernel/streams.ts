// Matching the two ends' reports of stream-peer runs.
import assert from 'node:assert/strict';

export interface Report { role: string; id: string; peerId: string; sentBytes: number; sentSha: string; recvBytes: number; recvSha: string; error?: string }

/**
 * Asserts every client stream met exactly one server stream with equal bytes
 * both ways. `context` (the datapath's counters, say) is added to a failure's
 * message: a rare loss is diagnosed from that one run.
 */
export function assertStreamsIntact(clients: Report[], servers: Report[], expected: number, context?: () => string): void {
  try {
    checkStreams(clients, servers, expected);
  } catch (e) {
    // A new error: the runner prints the stack, which holds the message it was made with.
    if (context && e instanceof assert.AssertionError) {
      throw new assert.AssertionError({ message: `${e.message}\n${context()}`, actual: e.actual, expected: e.expected, operator: e.operator });
    }
    throw e;
  }
}

function checkStreams(clients: Report[], servers: Report[], expected: number): void {
  const errors = [...clients, ...servers].filter((r) => r.error);
  assert.deepEqual(errors, [], 'streams ended with errors');
  assert.equal(clients.length, expected, 'client streams');
  assert.equal(servers.length, expected, 'server streams');
  const byPeer = new Map(servers.map((s) => [s.peerId, s]));
  for (const c of clients) {
    const s = byPeer.get(c.id);
    assert.ok(s, `client stream ${c.id} has no server end`);
    assert.equal(s.id, c.peerId, `stream ${c.id}: ends disagree on identity`);
    assert.equal(s.recvBytes, c.sentBytes, `stream ${c.id}: client -> server length`);
    assert.equal(s.recvSha, c.sentSha, `stream ${c.id}: client -> server bytes differ`);
    assert.equal(c.recvBytes, s.sentBytes, `stream ${c.id}: server -> client length`);
    assert.equal(c.recvSha, s.sentSha, `stream ${c.id}: server -> client bytes differ`);
  }
}

export function reports(lines: Record<string, unknown>[], role: string): Report[] {
  return lines.filter((o) => o.role === role) as unknown as Report[];
}
