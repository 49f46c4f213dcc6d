import { test } from 'node:test';
import assert from 'node:assert/strict';
import { statusText, type GenerationStatus, type NetnsStatus } from '../../src/cli/status.js';

function generation(enabledNetns: NetnsStatus[]): GenerationStatus {
  return {
    generation: 'g1', pinDir: '/sys/fs/bpf/sidecar-accel/g1', attached: true, sockopsLinked: true, skMsgAttached: true, ingressLinked: true,
    sockets: 0, crossPod: true, sidecarOnly: false, keepaliveIdleSeconds: 3600, enabledNetns,
    counters: null, layoutProblems: [], countersUnreadable: 'not read in this test', countersMissing: [],
  };
}

const plain: NetnsStatus = { netnsCookie: '7', excludePorts: [], crossPod: true, addressesKnown: false, outboundDirect: false, inboundDirect: false, counters: null };

test('status names what sets each enabled netns apart: in-pod only, excluded ports, addresses known, directions not captured', () => {
  const text = statusText([generation([
    plain,
    { ...plain, netnsCookie: '8', crossPod: false, excludePorts: [15020, 9090], addressesKnown: true, outboundDirect: true },
    { ...plain, netnsCookie: '9', addressesKnown: true, inboundDirect: true },
  ])], '/sys/fs/bpf/sidecar-accel');
  const line = text.split('\n').find((l) => l.includes('enabled network namespaces'));
  assert.equal(line, '  enabled network namespaces: 7, 8 (in-pod only; excluding 15020,9090; addresses known; outbound not captured), 9 (addresses known; inbound not captured)');
});

test('status of a netns whose policy this build cannot read shows its cookie alone', () => {
  const unreadable: NetnsStatus = { netnsCookie: '7', excludePorts: null, crossPod: null, addressesKnown: null, outboundDirect: null, inboundDirect: null, counters: null };
  const line = statusText([generation([unreadable])], '/x').split('\n').find((l) => l.includes('enabled network namespaces'));
  assert.equal(line, '  enabled network namespaces: 7');
});
