// The bench's own logic, without a kernel: the interleaving, what counts as a
// verified round, the aggregation into medians and ratios, and reading wrk.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { roundOrder } from '../../bench/suite/run.js';
import { SCENARIOS, SCENARIO_SPECS, notApplicable, workloadPoints } from '../../bench/suite/scenarios.js';
import { hopLinks, judge, LINK_HEADER_BYTES, SYN_EXTRA_BYTES, type HopTraffic } from '../../bench/suite/verify.js';
import { aggregate, headlines, markdown, type RawSample, type Report } from '../../bench/suite/report.js';
import { COUNTER_NAMES, type Counters } from '../../src/datapath/layout.js';
import { parseWrk } from '../../lab/measure/tools.js';

test('every round runs every scenario once, baselines and accel as two groups whose order alternates', () => {
  for (let round = 1; round <= 6; round++) {
    const order = roundOrder(round);
    assert.deepEqual([...order].sort(), [...SCENARIOS].sort());
    const withAgent = order.map((s) => SCENARIO_SPECS[s].agent !== null);
    // one switch of the agent per round: [off off off on on on] or the reverse
    assert.equal(withAgent.filter((x, i) => i > 0 && x !== withAgent[i - 1]).length, 1);
    assert.equal(withAgent[0], round % 2 === 0);
  }
  // the order inside a group rotates, so no scenario always runs first
  assert.notEqual(roundOrder(1)[0], roundOrder(3)[0]);
});

test('the workloads are the ones the protocol names; uds-floor skips what has no unix-socket tool', () => {
  const pts = workloadPoints();
  assert.deepEqual([...new Set(pts.map((p) => p.workload))], ['rr', 'http', 'crr', 'stream']);
  assert.deepEqual(pts.filter((p) => p.workload === 'rr').map((p) => `${p.conns}/${p.size}`),
    ['1/64', '1/1024', '1/16384', '16/64', '16/1024', '16/16384']);
  assert.ok(notApplicable('uds-floor', 'http'));
  assert.equal(notApplicable('uds-floor', 'stream'), null, 'rr streams over a unix socket too');
  assert.equal(notApplicable('uds-floor', 'rr'), null);
  assert.equal(notApplicable('accel', 'stream'), null);
});

const zero = (): Counters => Object.fromEntries(COUNTER_NAMES.map((k) => [k, 0n])) as Counters;
/** `payload` bytes over TCP on the hop links in `segs` data segments, with one pure ACK per segment. */
const hops = (payload: number, segs: number, opens = 0): HopTraffic => {
  const headerBytes = (2 * segs + opens) * LINK_HEADER_BYTES.lo!;
  return { bytes: payload + headerBytes + opens * SYN_EXTRA_BYTES, headerBytes, opens, dataSegments: segs };
};

test('an accel round counts only if the programs redirected at least 95% of the bytes on its expected hops', () => {
  const c = { ...zero(), redirectedMessages: 1000n, redirectedBytes: 1_000_000n };
  assert.equal(judge('in-pod', hops(0, 0), c).ok, true, 'nothing on TCP');
  assert.equal(judge('in-pod', hops(0, 40, 100), c).share, 1, 'pure ACKs and handshakes (SYN options and all) carry no payload');
  assert.equal(judge('in-pod', hops(50_000, 40), c).ok, true, '95.2%');
  assert.equal(judge('in-pod', hops(60_000, 40), c).ok, false, '94.3%');
  assert.equal(judge('all', hops(60_000, 40), c).share!.toFixed(3), '0.943');
  assert.equal(judge('in-pod', hops(0, 0), zero()).ok, false, 'nothing redirected is no proof');
  assert.equal(judge('in-pod', null, c).ok, false, 'no link counters is no proof');
  // The links' estimate must fit in the data segments nstat saw: else the header arithmetic is off.
  const v = judge('in-pod', { bytes: 200_000, headerBytes: 52, opens: 0, dataSegments: 1 }, c);
  assert.equal(v.ok, false);
  assert.match(v.detail, /disagree/);
  assert.match(judge('in-pod', hops(50_000, 40), c).detail, /^95\.2% of the bytes on the in-pod hops redirected/);
  assert.deepEqual(hopLinks('in-pod'), ['lo']);
  assert.deepEqual(hopLinks('all'), ['lo', 'eth0']);
});

test('an unpaired round counts only if the programs ran and paired nothing', () => {
  assert.equal(judge('unpaired', null, { ...zero(), fallbackNoPeer: 5n, tcpMessages: 900n }).ok, true);
  assert.equal(judge('unpaired', null, { ...zero(), fallbackNeverPairs: 5n }).ok, true, 'sockets left alone are seen');
  assert.equal(judge('unpaired', null, { ...zero(), fallbackNoPeer: 5n, redirectedMessages: 1n, socketsPaired: 1n }).ok, false);
  assert.equal(judge('unpaired', null, zero()).ok, false, 'the programs must have seen the traffic');
  assert.equal(judge('unpaired', null, null).ok, false);
});

function sample(over: Partial<RawSample>): RawSample {
  return {
    round: 1, scenario: 'istio-iptables', workload: 'rr', conns: 1, size: 64, p50_us: 100, p90_us: 150, p99_us: 300,
    rps: 7000, gbps: null, cpu_us_per_req: 200, tcp_data_segs_per_req: 6, redirected_share: null,
    connect_p50_us: null, request_p50_us: null, close_p50_us: null, verified: true, verification: 'baseline', ...over,
  };
}

test('results are medians over verified rounds, with the spread and the discarded rounds counted', () => {
  const raw = [
    sample({ round: 1, p50_us: 100 }), sample({ round: 2, p50_us: 120 }), sample({ round: 3, p50_us: 110 }),
    sample({ scenario: 'accel', round: 1, p50_us: 80 }), sample({ scenario: 'accel', round: 2, p50_us: 90 }),
    sample({ scenario: 'accel', round: 3, p50_us: 10, verified: false, verification: '50.0% of the bytes on the in-pod hops redirected' }),
  ];
  const res = aggregate(raw);
  const base = res.find((r) => r.scenario === 'istio-iptables')!;
  const accel = res.find((r) => r.scenario === 'accel')!;
  assert.equal(base.p50_us, 110);
  assert.deepEqual(base.spread.p50_us, [100, 120]);
  assert.equal(accel.p50_us, 85, 'the unverified 10 us round is not counted');
  assert.deepEqual([accel.rounds_used, accel.rounds_discarded], [2, 1]);
  const h = headlines(res).find((x) => x.what.startsWith('accel / istio-iptables, rr 64 B p50, 1 conn'))!;
  assert.equal(h.ratio, 85 / 110);
  assert.equal(headlines(res).find((x) => x.what.includes('stream'))!.ratio, null, 'no stream result, no ratio');
  const rep: Report = {
    kernel: 'k', cpus: 2, cpu_model: 'm', date: '2026-11-25T00:00:00Z', rounds: 3, seconds_per_measurement: 1, quick: true,
    cpu_pinning: null, tools: { rr: 'rr', http: 'wrk', crr: 'rr', stream: 'iperf3' }, results: res, raw,
  };
  const md = markdown(rep);
  assert.match(md, /\| accel \/ istio-iptables, rr 64 B p50, 1 conn \| 0\.77x \|/);
  assert.match(md, /round 3 accel rr conns 1 size 64 \(measured p50 10\.0 us, 7,000 req\/s, not counted\): 50\.0% of the bytes/);
});

test('crr rows carry the medians of a connection\'s parts, and the Markdown shows them per scenario', () => {
  const crr = (scenario: RawSample['scenario'], round: number, connect: number, request: number, close: number) =>
    sample({ scenario, round, workload: 'crr', connect_p50_us: connect, request_p50_us: request, close_p50_us: close });
  const raw = [
    crr('istio-iptables', 1, 26, 290, 14), crr('istio-iptables', 2, 28, 300, 15), crr('istio-iptables', 3, 27, 295, 13),
    crr('accel', 1, 37, 340, 17), crr('accel', 2, 36, 330, 16),
    { ...crr('accel', 3, 1, 1, 1), verified: false, verification: 'discarded' },
    sample({ round: 1 }),
  ];
  const res = aggregate(raw);
  const accel = res.find((r) => r.scenario === 'accel' && r.workload === 'crr')!;
  assert.deepEqual([accel.connect_p50_us, accel.request_p50_us, accel.close_p50_us], [36.5, 335, 16.5], 'the discarded round is not counted');
  assert.equal(res.find((r) => r.workload === 'rr')!.connect_p50_us, null, 'rr has no parts');
  const md = markdown({
    kernel: 'k', cpus: 2, cpu_model: 'm', date: '2026-12-02T00:00:00Z', rounds: 3, seconds_per_measurement: 1, quick: true,
    cpu_pinning: null, tools: { rr: 'rr', http: 'wrk', crr: 'rr', stream: 'rr' }, results: res, raw,
  });
  assert.match(md, /\| scenario \| connect us \| request us \| close us \|\n\|---\|---:\|---:\|---:\|\n\| istio-iptables \| 27\.0 \| 295\.0 \| 14\.0 \|\n\| accel \| 36\.5 \| 335\.0 \| 16\.5 \|/);
});

test('wrk reports are read in their units, and any error fails the measurement', () => {
  const report = `Running 1s test @ http://10.96.0.10:80/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   412.01us  200.11us   5.76ms   90.00%
    Req/Sec    12.50k     1.00k   13.00k    80.00%
  Latency Distribution
     50%  380.00us
     75%  450.00us
     90%  600.00us
     99%    1.21ms
  12516 requests in 1.00s, 0.96MB read
Requests/sec:  12500.00
Transfer/sec:    0.96MB
`;
  assert.deepEqual(parseWrk(report), { requests: 12516, seconds: 1, p50_us: 380, p90_us: 600, p99_us: 1210 });
  assert.throws(() => parseWrk(report.replace('Requests/sec', '  Socket errors: connect 0, read 3, write 0, timeout 0\nRequests/sec')), /errors/);
  assert.throws(() => parseWrk(report.replace('  Non', '').replace(/ {5}99%.*\n/, '')), /no 99% latency/);
});
