/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The one definition of every map key and value sidecar-accel shares between
 * the kernel programs and the agent. The TypeScript codecs in
 * src/datapath/layout.ts are checked against the BTF of the loaded object at
 * start, so a change here that is not mirrored there refuses to start instead
 * of silently reading the wrong bytes.
 *
 * The includer provides __u8.. __u64 (vmlinux.h in BPF, linux/types.h elsewhere).
 */
#ifndef SIDECAR_ACCEL_MAPS_H
#define SIDECAR_ACCEL_MAPS_H

/*
 * Roles and flag bits are enums, not macros, so that they reach the object's
 * BTF: each struct below carries a zero-length member of its enum type (an
 * anchor; no byte of the layout changes), and the agent's build generates its
 * TypeScript constants from that BTF (scripts/gen-btf.mjs).
 */
enum accel_role { ACCEL_ROLE_CLIENT = 1, ACCEL_ROLE_SERVER = 2 };

/*
 * One end of one TCP connection, as both ends can compute it on their own.
 * Addresses are IPv6; IPv4 is stored v4-mapped (::ffff:a.b.c.d) so a dual-stack
 * socket and a plain IPv4 socket of the same connection compute the same key.
 */
struct accel_conn_key {
	__u64 scope;         /* 0 (node-wide) for a client address known as a pod's, else its netns cookie */
	__u32 client_ip[4];  /* the active opener's address: shared by both ends under REDIRECT */
	__u32 client_seq;    /* client snd_nxt at ESTABLISHED == server rcv_nxt (ISN + 1) */
	__u32 server_seq;    /* server snd_nxt at ESTABLISHED == client rcv_nxt */
	__u16 client_port;   /* host byte order */
	__u8 role;           /* which end this entry is: ACCEL_ROLE_* */
	__u8 pad0;
	__u32 pad1;
	enum accel_role btf_anchor[0];  /* BTF only: zero bytes */
};

/*
 * Bits of accel_peer_info.gate, the one word both ends of a pair write, and
 * only with atomic operations: it decides which of "the peer redirects to
 * this socket" and "this socket leaves sock_hash" comes first (I5).
 */
#define GATE_CLAIMED 1u  /* set by the peer before its first redirect here, cleared when none can be in flight */
#define GATE_LEAVING 2u  /* set by this socket: no redirect may choose it any more */

/*
 * What a sender needs of the other end, published by that end when it
 * registers (kernel only: the map is not pinned, the agent never reads it).
 * `sk` is a kernel address, read only with bpf_probe_read_kernel: a stale
 * one (peer closed) can only turn a redirect into a fallback, since the
 * redirect itself goes through sock_hash. (Looking the peer up in sock_hash
 * instead would take a socket reference, which sk_msg and sockops programs
 * cannot release: they have no bpf_sk_release.)
 */
struct accel_peer_info {
	__u64 sk;            /* struct sock * of that end: the socket its sock_hash entry holds */
	__u64 netns_cookie;  /* its netns, to honour its own enable flag */
	__u32 gate;          /* GATE_*: atomic only, written by both ends */
	__u32 pad0;
	/*
	 * Written by the other end only (the sender to this one), under its own
	 * lock: after its backpressure fallback, bpf_ktime_get_ns() before which
	 * its direction stays on TCP (accel_config.backpressure_holdoff_ms).
	 */
	__u64 resume_after_ns;
};

/*
 * An address the agent knows as one pod's own (its pod IPs), IPv4 v4-mapped
 * like accel_conn_key.client_ip; the value is that pod's netns cookie. Only
 * such an address is unique on the node: any other client address (loopback,
 * Istio's inbound passthrough source 127.0.0.6 / ::6, the same in every pod)
 * gets a key scoped to its netns.
 */
struct accel_pod_addr {
	__u32 ip[4];
};

#define ACCEL_MAX_EXCLUDE_PORTS 16
enum accel_netns_flag {
	ACCEL_NETNS_ENABLED = 1,
	ACCEL_NETNS_CROSS_POD = 2,  /* a mesh workload known on this node: may pair with another pod's (cross-pod on) */
	ACCEL_NETNS_ADDRS_KNOWN = 4, /* its pod addresses are in pod_addrs: a sidecar socket to no pod of this node is not registered */
	/*
	 * Its sidecar captures none of its applications' outbound (inbound) TCP
	 * (Istio's interceptionMode NONE, or nothing included): an application's
	 * client (accepted) socket then names its true other end, and is judged
	 * by it as a sidecar's is. Only with ACCEL_NETNS_ADDRS_KNOWN.
	 */
	ACCEL_NETNS_OUTBOUND_DIRECT = 8,
	ACCEL_NETNS_INBOUND_DIRECT = 16,
};

/* Per network namespace policy, written by the agent; absent == disabled. */
struct accel_netns_policy {
	__u32 flags;                                     /* ACCEL_NETNS_* */
	__u32 exclude_count;                             /* used entries of exclude_ports */
	__u16 exclude_ports[ACCEL_MAX_EXCLUDE_PORTS];    /* host order; never paired */
	enum accel_netns_flag btf_anchor[0];             /* BTF only: zero bytes */
};

enum accel_cfg_flag {
	ACCEL_CFG_CROSS_POD = 1,
	ACCEL_CFG_SIDECAR_ONLY = 2,  /* the self-test found this kernel unable to serve an application's socket transparently */
};

/* Node-wide settings, index 0 of an array map. */
struct accel_config {
	__u32 flags;             /* ACCEL_CFG_* */
	__u32 keepalive_idle_s;  /* 0: leave keepalive alone; see bpf/sidecar_accel.bpf.c */
	__u32 proxy_uid;         /* the sidecar's uid (Istio: 1337); its sockets are event-driven */
	__u32 backpressure_holdoff_ms; /* after a backpressure fallback, TCP at least this long (I2, sidecar_accel.bpf.c) */
	enum accel_cfg_flag btf_anchor[0];  /* BTF only: zero bytes */
};

/*
 * What the sockets accepted on one listener (netns, port) were seen doing,
 * learned from their first sends: a server accepts all its connections one
 * way. Bits of a u32 value keyed by struct accel_listener_key.
 */
enum accel_listener_flag {
	ACCEL_LISTENER_NONBLOCKING = 1,  /* an accepted socket was seen with O_NONBLOCK */
	ACCEL_LISTENER_BLOCKING = 2,     /* one was seen without: the listener's sockets are never paired */
};

struct accel_listener_key {
	__u64 netns_cookie;
	__u16 port;          /* host order */
	__u16 pad0;
	__u32 pad1;
	enum accel_listener_flag btf_anchor[0];  /* BTF only: zero bytes */
};

/* Counter indexes, of the per-CPU global array and of each per-netns entry. */
enum accel_counter {
	ACCEL_CNT_SOCKETS_SEEN = 0,      /* established sockets in enabled netns */
	ACCEL_CNT_SOCKETS_REGISTERED,    /* of those, put in the sockhash (pairable) */
	ACCEL_CNT_SOCKETS_PAIRED,        /* sockets that redirected their first message */
	ACCEL_CNT_PAIRING_MISSES,        /* first message found no peer: TCP for good */
	ACCEL_CNT_REDIRECTED_MSGS,
	ACCEL_CNT_REDIRECTED_BYTES,
	ACCEL_CNT_TCP_MSGS,              /* messages TCP carried on a registered socket */
	ACCEL_CNT_FALLBACK_NO_PEER,
	ACCEL_CNT_FALLBACK_BACKPRESSURE,
	ACCEL_CNT_FALLBACK_EXCLUDED,     /* excluded port: never registered */
	ACCEL_CNT_FALLBACK_DISABLED,     /* netns disabled while the socket lived */
	ACCEL_CNT_FALLBACK_ULP,          /* a ULP (kTLS) on either end */
	ACCEL_CNT_FALLBACK_EARLY_DATA,   /* bytes went over TCP before ESTABLISHED (TFO) */
	ACCEL_CNT_FALLBACK_REPAIR,       /* TCP_REPAIR socket: never registered */
	ACCEL_CNT_FALLBACK_KEY_CONFLICT, /* the key was taken (EEXIST): never registered */
	ACCEL_CNT_FALLBACK_CROSS_POD,    /* the other end is in another pod, cross-pod off */
	ACCEL_CNT_SOCKETS_RELEASED,      /* registered, sent over TCP, cannot pair: back to plain TCP */
	ACCEL_CNT_FALLBACK_BLOCKING,     /* the application reads it blocking: never registered */
	ACCEL_CNT_FALLBACK_UNKNOWN_READER, /* accepted on a listener not (yet) seen event-driven */
	ACCEL_CNT_FALLBACK_TURNED_BLOCKING, /* registered, then made blocking: withdrawn to plain TCP */
	ACCEL_CNT_FALLBACK_SIDECAR_ONLY, /* an application's socket on a kernel in sidecar-only mode */
	ACCEL_CNT_FALLBACK_MEMORY_PRESSURE, /* TCP memory under pressure: the kernel could refuse the redirect */
	ACCEL_CNT_TCP_HELD_BACK,         /* TCP segments not accepted while redirected bytes were unread (I7) */
	ACCEL_CNT_FALLBACK_MAP_FULL,     /* sock_hash or peer_info full (E2BIG): never registered */
	ACCEL_CNT_FALLBACK_SOCKET_BUSY,  /* another sockmap user's programs own the socket (EBUSY): never registered */
	ACCEL_CNT_FALLBACK_INSERT_FAILED, /* sock_hash or peer_info refused it otherwise (ENOMEM, ...): never registered */
	ACCEL_CNT_LEAVE_DEFERRED,        /* a socket's leave waited for its peer's redirects to it to end (I5) */
	ACCEL_CNT_SOCKETS_WITHDRAWN,     /* turned blocking, then out of sock_hash: plain TCP from then on (I6) */
	ACCEL_CNT_DIRECTIONS_RESUMED,    /* a direction on TCP came back to redirect: its receiver had read every TCP byte (I2) */
	ACCEL_CNT_FALLBACK_NEVER_PAIRS,  /* a sidecar's socket whose other end is no socket of this node's pods: never registered */
	ACCEL_CNT_FALLBACK_SOCKET_OPTION, /* an option only TCP honours: the reader's SO_RCVLOWAT > 1, SO_PEEK_OFF, TCP_INQ, rx timestamps; the writer's SO_ZEROCOPY, tx timestamps */
	ACCEL_CNT_MAX
};

struct accel_counters {
	__u64 v[ACCEL_CNT_MAX];
	enum accel_counter btf_anchor[0];  /* BTF only: zero bytes; names each slot of v */
};

/*
 * Per-socket state the datapath keeps with the socket (sk_storage, freed
 * with it). Here, not in sidecar_accel.bpf.c, because the read-only iterator
 * of `sidecar-accel conns` (conns_iter.bpf.c) reads the same map.
 */
#define SOCK_REGISTERED 1u  /* in sock_hash under key */
#define SOCK_TX_CLEAN 4u    /* nothing of ours had gone over TCP at ESTABLISHED, or was unread at the last resume (I2) */
#define SOCK_PAIRED 8u      /* counting only: first redirect already counted */
#define SOCK_APP 16u        /* not the sidecar's: its reader is checked at every send (I6) */
#define SOCK_LEARN 32u      /* accepted, not registered: its first send teaches the listener's style */
#define SOCK_TURNED_BLOCKING 64u /* its application made it blocking: withdrawn for good */
#define SOCK_SEEN_NONBLOCKING 128u /* its file was seen O_NONBLOCK (an accepted one may start blocking) */
#define SOCK_CLAIMS_PEER 256u /* it set GATE_CLAIMED in its peer's accel_peer_info and has not cleared it (I5) */
#define SOCK_LEAVE_PENDING 512u /* it is to leave sock_hash once its peer's claim and its queue allow (I5) */

struct sock_state {
	struct accel_conn_key key;  /* this end, netns scope */
	__u64 netns_cookie;
	__u32 base_write_seq;       /* write_seq at ESTABLISHED, or at the last return from TCP to redirect */
	__u32 flags;                /* SOCK_*: written by this socket's own programs, under its lock */
};

#endif
