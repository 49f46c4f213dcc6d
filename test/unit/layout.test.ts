// The TypeScript codecs against the compiled object's BTF, and the codecs'
// own round trips. Needs the built object, not root.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native, defaultObjectPath } from '../../src/datapath/native.js';
import { loadRefusal } from '../../src/datapath/datapath.js';
import {
  encodePodAddress, decodePodAddress,
  EXPECTED_LAYOUTS, COUNTER_NAMES, layoutMismatches, encodeNetnsPolicy, decodeNetnsPolicy,
  encodeConfig, decodeConfig, addPerCpuCounters, zeroCounters, MAX_EXCLUDE_PORTS, sumPerCpuU64,
  COUNTER_TS_NAMES, counterIndexes, addPerCpuCountersAt, ROLE_CLIENT, ROLE_SERVER, NETNS_ENABLED, NETNS_CROSS_POD,
  CFG_CROSS_POD, CFG_SIDECAR_ONLY, LISTENER_NONBLOCKING, LISTENER_BLOCKING,
} from '../../src/datapath/layout.js';

test('every codec matches the BTF of the built BPF object', () => {
  for (const name of Object.keys(EXPECTED_LAYOUTS)) {
    assert.deepEqual(layoutMismatches(name, native().structLayout(defaultObjectPath, name)), [], name);
  }
});

test('a drifted layout is reported field by field', () => {
  const real = native().structLayout(defaultObjectPath, 'accel_conn_key');
  const drifted = {
    size: real.size + 8,
    members: real.members.map((m) => (m.name === 'client_port' ? { ...m, offset: m.offset + 2 } : m))
      .concat([{ name: 'extra', offset: 40, size: 8 }]),
  };
  const problems = layoutMismatches('accel_conn_key', drifted);
  assert.equal(problems.length, 3, problems.join('\n'));
  assert.match(problems.join('\n'), /size 48, codec expects 40/);
  assert.match(problems.join('\n'), /client_port: offset 34/);
  assert.match(problems.join('\n'), /member extra has no codec/);
});

test('a field that was padding in older builds reads their layout as this one, and nothing else does', () => {
  const real = native().structLayout(defaultObjectPath, 'accel_config');
  const older = { size: real.size, members: real.members.map((m) => (m.name === 'backpressure_holdoff_ms' ? { ...m, name: 'pad0' } : m)) };
  assert.deepEqual(layoutMismatches('accel_config', older), []);
  const moved = { size: real.size, members: real.members.map((m) => (m.name === 'backpressure_holdoff_ms' ? { ...m, name: 'pad0', offset: 8 } : m)) };
  assert.match(layoutMismatches('accel_config', moved).join('\n'), /backpressure_holdoff_ms: offset 8/);
  const both = { size: real.size, members: real.members.concat([{ name: 'pad0', offset: 12, size: 4 }]) };
  assert.match(layoutMismatches('accel_config', both).join('\n'), /member pad0 has no codec/);
});

test('the counter enum of the object has one slot per counter name', () => {
  const c = native().structLayout(defaultObjectPath, 'accel_counters');
  assert.equal(c.size, 8 * COUNTER_NAMES.length);
});

test('counter names, roles and flag bits are the object\'s own enums, read from its BTF', () => {
  const e = (name: string) => {
    const v = native().enumValues(defaultObjectPath, name);
    assert.ok(v, `enum ${name} is in the object's BTF`);
    return new Map(v.map((x) => [x.name, x.value]));
  };
  const counters = e('accel_counter');
  for (const [c, ts] of Object.entries(COUNTER_TS_NAMES)) assert.equal(COUNTER_NAMES[counters.get(c)!], ts, `${c} is slot ${counters.get(c)}`);
  assert.equal(counters.get('ACCEL_CNT_MAX'), COUNTER_NAMES.length);
  assert.deepEqual([ROLE_CLIENT, ROLE_SERVER], [e('accel_role').get('ACCEL_ROLE_CLIENT'), e('accel_role').get('ACCEL_ROLE_SERVER')]);
  assert.deepEqual([NETNS_ENABLED, NETNS_CROSS_POD], [e('accel_netns_flag').get('ACCEL_NETNS_ENABLED'), e('accel_netns_flag').get('ACCEL_NETNS_CROSS_POD')]);
  assert.deepEqual([CFG_CROSS_POD, CFG_SIDECAR_ONLY], [e('accel_cfg_flag').get('ACCEL_CFG_CROSS_POD'), e('accel_cfg_flag').get('ACCEL_CFG_SIDECAR_ONLY')]);
  assert.deepEqual([LISTENER_NONBLOCKING, LISTENER_BLOCKING],
    [e('accel_listener_flag').get('ACCEL_LISTENER_NONBLOCKING'), e('accel_listener_flag').get('ACCEL_LISTENER_BLOCKING')]);
  assert.equal(native().enumValues(defaultObjectPath, 'no_such_enum'), null);
});

test('another generation\'s counters are placed by name: its order, its missing and unknown ones', () => {
  const slot = 8 * 3;
  const { indexes, missing, unknown } = counterIndexes([
    { name: 'ACCEL_CNT_REDIRECTED_BYTES', value: 0 }, { name: 'ACCEL_CNT_GONE', value: 1 }, { name: 'ACCEL_CNT_SOCKETS_PAIRED', value: 2 }, { name: 'ACCEL_CNT_MAX', value: 3 },
  ]);
  assert.deepEqual([...indexes], [['redirectedBytes', 0], ['socketsPaired', 2]]);
  assert.deepEqual(unknown, ['ACCEL_CNT_GONE']);
  assert.equal(missing.length, COUNTER_NAMES.length - 2);
  const buf = Buffer.alloc(2 * slot);
  buf.writeBigUInt64LE(4n, 0);
  buf.writeBigUInt64LE(9n, 8);
  buf.writeBigUInt64LE(1n, slot + 16);
  const c = zeroCounters();
  addPerCpuCountersAt(c, buf, 2, slot, indexes);
  assert.equal(c.redirectedBytes, 4n);
  assert.equal(c.socketsPaired, 1n);
  assert.equal(c.socketsSeen, 0n, 'the unknown slot is not taken for another counter');
  assert.throws(() => addPerCpuCountersAt(zeroCounters(), buf, 2, slot, new Map([['socketsSeen', 3]])), /outside a 24-byte slot/);
});

test('netns policy round-trips and refuses bad ports', () => {
  for (const crossPod of [true, false]) {
    for (const addressesKnown of [true, false]) {
      for (const [outboundDirect, inboundDirect] of [[false, false], [true, false], [false, true], [true, true]] as const) {
        const p = { enabled: true, excludePorts: [80, 3306, 65535], crossPod, addressesKnown, outboundDirect, inboundDirect };
        assert.deepEqual(decodeNetnsPolicy(encodeNetnsPolicy(p)), p);
      }
    }
  }
  assert.throws(() => encodeNetnsPolicy({ enabled: true, excludePorts: [0], crossPod: true }), /bad port 0/);
  assert.throws(() => encodeNetnsPolicy({ enabled: true, excludePorts: [70000], crossPod: true }), /bad port 70000/);
  assert.throws(() => encodeNetnsPolicy({ enabled: true, crossPod: true, excludePorts: Array.from({ length: MAX_EXCLUDE_PORTS + 1 }, (_, i) => i + 1) }),
    /at most 16 excluded ports/);
});

test('node config round-trips', () => {
  for (const c of [{ crossPod: true, keepaliveIdleSeconds: 3600, proxyUid: 1337, sidecarOnly: false, backpressureHoldoffMs: 0 },
    { crossPod: false, keepaliveIdleSeconds: 0, proxyUid: 2000, sidecarOnly: true, backpressureHoldoffMs: 3_600_000 }]) {
    assert.deepEqual(decodeConfig(encodeConfig(c)), c);
  }
  const defaults = decodeConfig(encodeConfig({ crossPod: false, keepaliveIdleSeconds: 0 }));
  assert.equal(defaults.proxyUid, 1337, 'Istio\'s proxy uid by default');
  assert.equal(defaults.backpressureHoldoffMs, 10_000, 'a 10 s hold-off after a backpressure fallback by default');
});

test('per-CPU counters are summed over every CPU slot', () => {
  const slot = 8 * COUNTER_NAMES.length;
  const buf = Buffer.alloc(slot * 3);
  buf.writeBigUInt64LE(5n, 0 * slot + 8 * COUNTER_NAMES.indexOf('redirectedBytes'));
  buf.writeBigUInt64LE(7n, 2 * slot + 8 * COUNTER_NAMES.indexOf('redirectedBytes'));
  buf.writeBigUInt64LE(1n, 1 * slot + 8 * COUNTER_NAMES.indexOf('socketsPaired'));
  const c = zeroCounters();
  addPerCpuCounters(c, buf, 3, slot);
  assert.equal(c.redirectedBytes, 12n);
  assert.equal(c.socketsPaired, 1n);
  assert.equal(c.fallbackNoPeer, 0n);
});

test('a refused load is one line naming what the kernel lacks, not a verifier log', () => {
  // As libbpf reports them on Debian's 5.10 and 6.1 (kernel matrix, lab/kernels).
  const v510 = 'bpf_object__load: Invalid argument\nlibbpf: prog \'accel_sockops\': BPF program load failed: Invalid argument\nlibbpf: -- BEGIN PROG LOAD LOG --\n0: (bf) r6 = r1\n...\n37: (85) call unknown#122\nunknown func bpf_get_netns_cookie#122\n-- END PROG LOAD LOG --';
  assert.equal(loadRefusal(v510), 'this kernel cannot run sidecar-accel: its BPF verifier does not let sockops/sk_msg programs call bpf_get_netns_cookie (the programs need Linux 5.15 or later)');
  const v61 = 'bpf_object__load: No such process\nlibbpf: prog \'accel_msg\': relo #12: failed to resolve CO-RE relocation <byte_off> [91] struct sk_psock.msg_tot_len (0:27 @ offset 400)\nlibbpf: prog \'accel_msg\': failed to relocate: No such process';
  assert.equal(loadRefusal(v61), 'this kernel cannot run sidecar-accel: its BTF lacks struct sk_psock.msg_tot_len, which the programs read');
  // Seen while building the ingress gate: a cast inside BPF_CORE_READ relocated our own struct.
  const own = "45: <invalid CO-RE relocation>\nfailed to resolve CO-RE relocation <byte_off> [49] struct accel_peer_info.psock (0:0 @ offset 0)\nlibbpf: prog 'accel_ingress': failed to load: -22";
  assert.match(loadRefusal(own), /^the BPF object is broken \(a CO-RE relocation against its own struct accel_peer_info.psock\)/);
  assert.doesNotMatch(loadRefusal('bpf_object__load: Permission denied (EPERM)'), /\n/);
  // What Debian's 5.10.262 says first about this object (kernel matrix).
  assert.match(loadRefusal('libbpf: prog \'accel_sockops\': -- BEGIN PROG LOAD LOG --\nfunc#0 @0\nBPF_STX uses reserved fields\n-- END PROG LOAD LOG --'), /^this kernel cannot run sidecar-accel: its BPF verifier lacks atomic fetch operations/);
});

test('a value of another length than the codec reads is refused, never decoded', () => {
  const policy = encodeNetnsPolicy({ enabled: true, excludePorts: [], crossPod: false });
  assert.throws(() => decodeNetnsPolicy(policy.subarray(0, policy.length - 2)), /accel_netns_policy: 38 bytes, the codec reads 40/);
  const cfg = encodeConfig({ crossPod: false, keepaliveIdleSeconds: 0 });
  assert.throws(() => decodeConfig(Buffer.concat([cfg, Buffer.alloc(8)])), /accel_config: 24 bytes, the codec reads 16/);
  const slot = 8 * COUNTER_NAMES.length;
  // Counters of a layout with one counter fewer: two CPUs of 8 bytes less each.
  assert.throws(() => addPerCpuCounters(zeroCounters(), Buffer.alloc(2 * (slot - 8)), 2, slot), /accel_counters \(2 CPUs\)/);
  assert.throws(() => addPerCpuCounters(zeroCounters(), Buffer.alloc(2 * (slot - 8)), 2, slot - 8), /hold fewer than/);
  assert.throws(() => sumPerCpuU64(Buffer.alloc(8), 2), /per-CPU u64 \(2 CPUs\): 8 bytes, the codec reads 16/);
  assert.equal(sumPerCpuU64(Buffer.from([1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]), 2), 3n);
});

test('pod addresses encode as the kernel keys them: IPv6 bytes, IPv4 v4-mapped; anything else is refused', () => {
  assert.equal(encodePodAddress('10.44.0.2').toString('hex'), '00000000000000000000ffff0a2c0002');
  assert.equal(encodePodAddress('fd44::1').toString('hex'), 'fd440000000000000000000000000001');
  assert.equal(encodePodAddress('::6').toString('hex'), '00000000000000000000000000000006');
  assert.equal(encodePodAddress('1:2:3:4:5:6:7:8').toString('hex'), '00010002000300040005000600070008');
  assert.equal(encodePodAddress('::ffff:10.1.2.3').toString('hex'), encodePodAddress('10.1.2.3').toString('hex'));
  assert.equal(encodePodAddress('64:ff9b::1.2.3.4').toString('hex'), '0064ff9b000000000000000001020304');
  for (const ip of ['10.44.0.2', 'fd44::1', '::6', '1:2:3:4:5:6:7:8', '2001:db8::']) assert.equal(decodePodAddress(encodePodAddress(ip)), ip);
  for (const bad of ['', '10.1.2', 'fd44::1::2', 'fe80::1%eth0', 'host', '10.0.0.256']) assert.throws(() => encodePodAddress(bad), RangeError, bad);
});

