// The Kubernetes annotations and labels sidecar-accel reads (docs/design.md 6).
export const ANNOTATION_ENABLED = 'sidecar-accel.io/enabled';
export const ANNOTATION_EXCLUDE_PORTS = 'sidecar-accel.io/exclude-ports';
/** Istio's per-pod ProxyConfig override, YAML or JSON. */
export const ANNOTATION_PROXY_CONFIG = 'proxy.istio.io/config';
/** Written by Istio's sidecar injector: the pod has a sidecar. */
export const ANNOTATION_SIDECAR_STATUS = 'sidecar.istio.io/status';
/** Ambient (ztunnel) capture: the pod's sockets are ztunnel's business. */
export const LABEL_DATAPLANE_MODE = 'istio.io/dataplane-mode';
export const ANNOTATION_AMBIENT_REDIRECTION = 'ambient.istio.io/redirection';
/** The ProxyConfig proxyMetadata key that switches acceleration. */
export const PROXY_METADATA_KEY = 'SIDECAR_ACCEL';
export const MAX_EXCLUDE_PORTS = 16;
/** Istio's capture mode of a pod: REDIRECT (default), TPROXY or NONE (no capture rules). */
export const ANNOTATION_INTERCEPTION_MODE = 'sidecar.istio.io/interceptionMode';
/**
 * Istio's capture scope (istio-iptables -i, -o, -b): an empty value captures
 * none of that traffic; absent, the injector's default ('*': all) applies.
 */
export const ANNOTATION_INCLUDE_OUTBOUND_IP_RANGES = 'traffic.sidecar.istio.io/includeOutboundIPRanges';
export const ANNOTATION_INCLUDE_OUTBOUND_PORTS = 'traffic.sidecar.istio.io/includeOutboundPorts';
export const ANNOTATION_INCLUDE_INBOUND_PORTS = 'traffic.sidecar.istio.io/includeInboundPorts';
