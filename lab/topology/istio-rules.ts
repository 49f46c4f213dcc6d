// Istio's sidecar capture rules (REDIRECT mode), as istio-iptables writes
/** The uid and gid Istio runs its proxy as; the capture rules exempt them. */
export const PROXY_UID = 1337;

// them, in iptables-restore form. Nothing is changed (docs/design.md 7).
export function istioCaptureRules(family: 4 | 6): string {
  const inboundSrc = family === 4 ? '127.0.0.6/32' : '::6/128';
  const localhost = family === 4 ? '127.0.0.1/32' : '::1/128';
  const ownerRules = (kind: 'uid' | 'gid') => [
    `-A ISTIO_OUTPUT -o lo ! -d ${localhost} -p tcp ! --dport 15008 -m owner --${kind}-owner 1337 -j ISTIO_IN_REDIRECT`,
    `-A ISTIO_OUTPUT -o lo -m owner ! --${kind}-owner 1337 -j RETURN`,
    `-A ISTIO_OUTPUT -m owner --${kind}-owner 1337 -j RETURN`,
  ];
  return [
    '*nat',
    ':PREROUTING ACCEPT [0:0]',
    ':INPUT ACCEPT [0:0]',
    ':OUTPUT ACCEPT [0:0]',
    ':POSTROUTING ACCEPT [0:0]',
    ':ISTIO_INBOUND - [0:0]',
    ':ISTIO_REDIRECT - [0:0]',
    ':ISTIO_IN_REDIRECT - [0:0]',
    ':ISTIO_OUTPUT - [0:0]',
    '-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN',
    '-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001',
    '-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006',
    '-A PREROUTING -p tcp -j ISTIO_INBOUND',
    '-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN',
    '-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN',
    '-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN',
    '-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT',
    '-A OUTPUT -j ISTIO_OUTPUT',
    `-A ISTIO_OUTPUT -o lo -s ${inboundSrc} -j RETURN`,
    ...ownerRules('uid'),
    ...ownerRules('gid'),
    `-A ISTIO_OUTPUT -d ${localhost} -j RETURN`,
    '-A ISTIO_OUTPUT -j ISTIO_REDIRECT',
    'COMMIT',
    '',
  ].join('\n');
}
