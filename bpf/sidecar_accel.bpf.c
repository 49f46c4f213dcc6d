// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * sidecar-accel datapath: pair the two local ends of one TCP connection and
 * move every later sendmsg straight into the peer's receive queue.
 *
 * sockops registers each established socket of an enabled network namespace
 * in sock_hash under a key both ends compute on their own (the client address
 * and the handshake's sequence numbers, DESIGN.md 4.1). sk_msg, run on every
 * send of a registered socket, redirects to the other end when that keeps the
 * byte stream exact, and otherwise lets TCP carry the data for good.
 *
 * Invariants (DESIGN.md 4), referred to below by number:
 *  I1 a message goes only to the socket registered as the other end of the
 *     same connection (same scope, client address/port and both ISNs);
 *  I2 a direction goes TCP -> redirect only once its receiver's application
 *     has read every byte the direction sent over TCP (the receiver reads its
 *     redirect queue first, so a redirected byte would overtake bytes TCP
 *     still holds) and cannot be waiting inside TCP's own recvmsg, which never
 *     looks at the redirect queue (receiver_caught_up);
 *  I3 a redirect never grows the receiver's redirect queue past its rcvbuf;
 *  I4 sockets of disabled or unknown netns, TCP_REPAIR sockets, ULP sockets
 *     and excluded ports are left exactly as the kernel made them;
 *  I5 a socket leaves sock_hash (which frees its psock and every byte queued
 *     in it) only under its own lock, with nothing queued for it and no
 *     redirect to it in flight or to come: when it can never pair
 *     (release_unpairable) or its application turned blocking (withdraw);
 *     otherwise the kernel unlinks it when it closes. A sender's redirect
 *     leaves the sender's lock before it takes the receiver's to enqueue, so
 *     "in flight" is settled by the gate word in the receiver's peer_info entry
 *     (claim_peer, release_claim, leave_sockhash);
 *  I6 only sockets whose application never waits in a blocking recv() are
 *     registered: a sockhash socket reads through tcp_bpf_recvmsg, whose
 *     blocking wait returns EAGAIN on a wakeup without data (a signal, an
 *     RST, the ACK of its own FIN) where TCP waits or reports the error;
 *  I8 nothing is redirected where a socket option asks what only TCP gives:
 *     a reader's SO_RCVLOWAT above 1, SO_PEEK_OFF, TCP_INQ or receive
 *     timestamps, a writer's SO_ZEROCOPY or transmit timestamps. Checked at
 *     every send, so an option set while redirected bytes are unread does
 *     not apply to those (README, limitations).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include "accel_maps.h"
#include "sock_options.h"

#define AF_INET 2
#define AF_INET6 10
#define SK_USER_DATA_PSOCK 4UL
#define SOCK_RCVBUF_LOCK 2
#define SK_USER_DATA_PTRMASK (~7UL)
/* A volatile read keeps each context load at its own constant offset. */
#define CTX(x) (*(volatile typeof(x) *)&(x))
#define SOL_SOCKET 1
#define SO_KEEPALIVE 9
#define SOL_TCP 6
#define TCP_KEEPIDLE 4
#define TCP_KEEPINTVL 5
#define O_NONBLOCK 04000
#define ETH_P_IP 0x0800
#define RCV_SHUTDOWN 1
#define ETH_P_IPV6 0x86DD
#define E2BIG 7
#define EBUSY 16
#define EEXIST 17

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#ifdef ACCEL_BUILD_VARIANT
/* Only changes the object's bytes (and so its generation); see bpf/Makefile. */
__attribute__((section(".comment.variant"), used)) static const char build_variant[] = ACCEL_BUILD_VARIANT;
#endif

/* Sizes of sock_hash and peer_info: the defaults; the agent sets its own before load. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, struct accel_conn_key);
	__type(value, __u64);
} sock_hash SEC(".maps");

/*
 * One entry per registered socket, under its key (struct accel_peer_info).
 * A plain hash, never LRU: an evicted live entry would hide its socket from
 * its peer. Not preallocated: an entry a sender still holds after its
 * socket deleted it is never handed to another socket meanwhile, so an
 * atomic on its gate can only reach the socket it was meant for. Every
 * registered socket's entry goes when it leaves sock_hash or closes
 * (STATE_CB). Full, a new socket is not registered (counted) and stays on TCP.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 131072);
	__type(key, struct accel_conn_key);
	__type(value, struct accel_peer_info);
} peer_info SEC(".maps");

/* Written by the agent: the node's pod addresses (struct accel_pod_addr). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct accel_pod_addr);
	__type(value, __u64);
} pod_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sock_state);
} sock_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct accel_netns_policy);
} netns_policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct accel_config);
} accel_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ACCEL_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* LRU: a forgotten listener is learned again, its sockets left alone meanwhile. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct accel_listener_key);
	__type(value, __u32);
} listener_style SEC(".maps");

/* Entries are created and removed by the agent with the netns policy. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct accel_counters);
} netns_counters SEC(".maps");

static __always_inline void count(__u64 netns, __u32 idx, __u64 n)
{
	__u64 *g = bpf_map_lookup_elem(&counters, &idx);
	struct accel_counters *c;

	if (g)
		*g += n;
	c = bpf_map_lookup_elem(&netns_counters, &netns);
	if (c && idx < ACCEL_CNT_MAX)
		c->v[idx] += n;
}

/*
 * The per-message pair (messages, bytes) of a redirect in one look-up per
 * map: they sit next to each other in both, and a redirect is the hot path.
 */
static __always_inline void count_redirect(__u64 netns, __u64 bytes)
{
	__u32 idx = ACCEL_CNT_REDIRECTED_MSGS;
	__u64 *g = bpf_map_lookup_elem(&counters, &idx);
	struct accel_counters *c;

	if (g)
		*g += 1;
	idx = ACCEL_CNT_REDIRECTED_BYTES;
	g = bpf_map_lookup_elem(&counters, &idx);
	if (g)
		*g += bytes;
	c = bpf_map_lookup_elem(&netns_counters, &netns);
	if (c) {
		c->v[ACCEL_CNT_REDIRECTED_MSGS] += 1;
		c->v[ACCEL_CNT_REDIRECTED_BYTES] += bytes;
	}
}

/* IPv4 becomes ::ffff:a.b.c.d so both families of one connection agree. */
static __always_inline void set_ip(__u32 dst[4], bool v4, __u32 ip4, const __u32 ip6[4])
{
	dst[0] = v4 ? 0 : ip6[0];
	dst[1] = v4 ? 0 : ip6[1];
	dst[2] = v4 ? bpf_htonl(0xffff) : ip6[2];
	dst[3] = v4 ? ip4 : ip6[3];
}

/* 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104: unique only inside one netns. */
static __always_inline bool is_loopback(const __u32 ip[4])
{
	if (ip[0] || ip[1])
		return false;
	if (ip[2] == bpf_htonl(0xffff))
		return (bpf_ntohl(ip[3]) >> 24) == 127;
	return ip[2] == 0 && ip[3] == bpf_htonl(1);
}

/*
 * I1: a client address the agent knows as a pod's own is unique on the node;
 * on the client's side, only inside that pod's netns. Anything else may be
 * the same in many pods (loopback, Istio's passthrough source ::6 and
 * 127.0.0.6): its key is scoped to the netns.
 */
static __always_inline bool unique_on_node(const __u32 ip[4], __u64 netns, __u8 role)
{
	__u64 *owner;

	if (is_loopback(ip))
		return false;
	owner = bpf_map_lookup_elem(&pod_addrs, ip);
	return owner && (role == ACCEL_ROLE_SERVER || *owner == netns);
}

static __always_inline bool port_excluded(const struct accel_netns_policy *p, __u16 port)
{
	for (int i = 0; i < ACCEL_MAX_EXCLUDE_PORTS; i++) {
		if (i >= p->exclude_count)
			break;
		if (p->exclude_ports[i] == port)
			return true;
	}
	return false;
}

/*
 * Two ways to read a socket. Our own comes from bpf_skc_to_tcp_sock: a BTF
 * pointer, whose fields the program loads directly (an inline load, CO-RE
 * relocated, that reads 0 if it faults). The peer is an address kept in
 * peer_info, read with bpf_probe_read_kernel (BPF_CORE_READ), a helper call
 * each. The per-message path reads its own socket the first way: the
 * profile of a redirected rr showed the helper's copies as the largest
 * per-message cost of the programs.
 */
static __always_inline bool has_ulp(struct tcp_sock *tp)
{
	return BPF_CORE_READ(tp, inet_conn.icsk_ulp_ops) != NULL;
}

static __always_inline bool own_has_ulp(struct tcp_sock *tp)
{
	return tp->inet_conn.icsk_ulp_ops != NULL;
}

/* I8, the reader: any option its reads would not get from redirected bytes (sock_options.h). */
static __always_inline bool reader_wants_tcp(struct sock *sk)
{
	return reader_rcvlowat_set(sk) || reader_peek_off_set(sk) || reader_inq_set(sk) ||
	       reader_rx_timestamps_set(sk);
}

/* I8, the writer: any option its sends would not get redirected (sock_options.h). */
static __always_inline bool writer_wants_tcp(struct tcp_sock *tp)
{
	return writer_zerocopy_set(tp) || writer_tx_timestamps_set(tp);
}

static __always_inline struct sk_psock *psock_of(struct tcp_sock *tp)
{
	return (struct sk_psock *)((unsigned long)BPF_CORE_READ(tp, inet_conn.icsk_inet.sk.sk_user_data) &
				   SK_USER_DATA_PTRMASK);
}

/* Nothing redirected to this socket is waiting to be read. */
static __always_inline bool ingress_empty(struct sk_psock *psock)
{
	return BPF_CORE_READ(psock, ingress_msg.next) == &psock->ingress_msg;
}

#define READER_BLOCKING 0
#define READER_NONBLOCKING 1
#define READER_UNKNOWN 2  /* no file: accepted by the kernel, not yet by accept(), or orphaned */

/* How the application reads this socket, from its file's O_NONBLOCK. */
static __always_inline int reader_style(struct sock *sk)
{
	struct socket *so = BPF_CORE_READ(sk, sk_socket);
	struct file *f;

	if (!so)
		return READER_UNKNOWN;
	f = BPF_CORE_READ(so, file);
	if (!f)
		return READER_UNKNOWN;
	return (BPF_CORE_READ(f, f_flags) & O_NONBLOCK) ? READER_NONBLOCKING : READER_BLOCKING;
}

/* reader_style of our own socket, by direct loads. */
static __always_inline int own_reader_style(struct tcp_sock *tp)
{
	struct socket *so = tp->inet_conn.icsk_inet.sk.sk_socket;
	struct file *f;

	if (!so)
		return READER_UNKNOWN;
	f = so->file;
	if (!f)
		return READER_UNKNOWN;
	return (f->f_flags & O_NONBLOCK) ? READER_NONBLOCKING : READER_BLOCKING;
}

static __always_inline struct accel_listener_key listener_key(__u64 netns, __u16 port)
{
	struct accel_listener_key k = {};

	k.netns_cookie = netns;
	k.port = port;
	return k;
}

/*
 * I6: may this socket be registered? Returns ACCEL_CNT_MAX if so, else the
 * fallback counter of why not. A connecting socket has its file: its own
 * O_NONBLOCK decides. An accepted one has none before accept(): the
 * sidecar's (its listener's uid) is event-driven like Envoy; an
 * application's is registered only when its listener's accepted sockets
 * were seen non-blocking and never blocking.
 */
static __always_inline __u32 reader_refusal(int style, __u8 role, __u64 netns, __u16 port, bool sidecar)
{
	struct accel_listener_key lk;
	__u32 *seen;

	switch (style) {
	case READER_NONBLOCKING:
		return ACCEL_CNT_MAX;
	case READER_BLOCKING:
		return ACCEL_CNT_FALLBACK_BLOCKING;
	}
	if (sidecar)
		return ACCEL_CNT_MAX;
	if (role != ACCEL_ROLE_SERVER)
		return ACCEL_CNT_FALLBACK_BLOCKING;
	lk = listener_key(netns, port);
	seen = bpf_map_lookup_elem(&listener_style, &lk);
	if (!seen)
		return ACCEL_CNT_FALLBACK_UNKNOWN_READER;
	return *seen == ACCEL_LISTENER_NONBLOCKING ? ACCEL_CNT_MAX : ACCEL_CNT_FALLBACK_BLOCKING;
}

/*
 * Two ends in different pods may pair: cross-pod pairing is on for the node
 * and both network namespaces are mesh workloads the agent knows on this node
 * (ACCEL_NETNS_CROSS_POD). The callers have the two policies at hand; an
 * absent one (NULL) is a disabled netns: never.
 */
static __always_inline bool cross_pod_allowed(const struct accel_netns_policy *pa,
					      const struct accel_netns_policy *pb)
{
	struct accel_config *cfg;
	__u32 zero = 0;

	if (!pa || !pb || !(pa->flags & ACCEL_NETNS_CROSS_POD) || !(pb->flags & ACCEL_NETNS_CROSS_POD))
		return false;
	cfg = bpf_map_lookup_elem(&accel_cfg, &zero);
	return cfg && (cfg->flags & ACCEL_CFG_CROSS_POD);
}

/*
 * Can the other end of this socket be a socket of this node's enabled pods?
 * Only when it is in its own pod (loopback, Istio's passthrough source ::6,
 * or one of its pod's addresses) or, with cross-pod pairing on for both, in
 * another pod the agent knows on this node. A sidecar's upstream to anywhere
 * else, or its inbound socket from a client elsewhere, never pairs:
 * registering it would only cost its connection a psock (set up, torn down,
 * and its first sends through tcp_bpf_sendmsg). Asked only where the agent
 * published the pod's addresses (ACCEL_NETNS_ADDRS_KNOWN), of a sidecar's
 * socket, and of an application's only where its sidecar captures none of
 * that direction (ACCEL_NETNS_*_DIRECT): under capture its client socket
 * names the service address, and its accepted one the original client, while
 * the other end is its own sidecar's.
 */
static __always_inline bool may_ever_pair(const __u32 remote[4], __u64 netns,
					  const struct accel_netns_policy *policy)
{
	__u64 *owner;

	if (is_loopback(remote) || (!remote[0] && !remote[1] && !remote[2] && remote[3] == bpf_htonl(6)))
		return true;
	owner = bpf_map_lookup_elem(&pod_addrs, remote);
	if (!owner)
		return false;
	return *owner == netns || cross_pod_allowed(policy, bpf_map_lookup_elem(&netns_policy, owner));
}

static __always_inline void register_socket(struct bpf_sock_ops *skops, __u8 role)
{
	__u64 netns = bpf_get_netns_cookie(skops);
	struct accel_peer_info info = {};
	struct accel_netns_policy *policy;
	struct accel_config *cfg;
	struct sock_state *st;
	struct tcp_sock *tp;
	struct bpf_sock *sk;
	__u32 lip4, rip4, lip6[4], rip6[4];
	__u32 zero = 0, refusal;
	__u16 port;
	bool v4, sidecar;
	int style;
	long err;

	if (skops->family != AF_INET && skops->family != AF_INET6)
		return;
	/* I4: a netns the agent has not enabled is never touched. */
	policy = bpf_map_lookup_elem(&netns_policy, &netns);
	if (!policy || !(policy->flags & ACCEL_NETNS_ENABLED))
		return;
	count(netns, ACCEL_CNT_SOCKETS_SEEN, 1);

	sk = skops->sk;
	if (!sk)
		return;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return;
	/* I4: a restored socket's sequence numbers are chosen, not random. */
	if (BPF_CORE_READ_BITFIELD_PROBED(tp, repair)) {
		count(netns, ACCEL_CNT_FALLBACK_REPAIR, 1);
		return;
	}
	if (own_has_ulp(tp)) {
		count(netns, ACCEL_CNT_FALLBACK_ULP, 1);
		return;
	}
	/* The service port is the one the client dialled / the server accepted on. */
	port = role == ACCEL_ROLE_CLIENT ? (__u16)bpf_ntohl(skops->remote_port)
					 : (__u16)skops->local_port;
	if (port_excluded(policy, port)) {
		count(netns, ACCEL_CNT_FALLBACK_EXCLUDED, 1);
		return;
	}
	cfg = bpf_map_lookup_elem(&accel_cfg, &zero);
	sidecar = cfg && tp->inet_conn.icsk_inet.sk.sk_uid.val == cfg->proxy_uid;
	/* I6: this kernel shows an application something TCP would not (self-test). */
	if (!sidecar && (!cfg || (cfg->flags & ACCEL_CFG_SIDECAR_ONLY))) {
		count(netns, ACCEL_CNT_FALLBACK_SIDECAR_ONLY, 1);
		return;
	}
	/* Context fields are read at constant offsets only (verifier rule). */
	rip4 = CTX(skops->remote_ip4);
	rip6[0] = CTX(skops->remote_ip6[0]);
	rip6[1] = CTX(skops->remote_ip6[1]);
	rip6[2] = CTX(skops->remote_ip6[2]);
	rip6[3] = CTX(skops->remote_ip6[3]);
	v4 = skops->family == AF_INET;
	if ((policy->flags & ACCEL_NETNS_ADDRS_KNOWN) &&
	    (sidecar || (policy->flags & (role == ACCEL_ROLE_CLIENT ? ACCEL_NETNS_OUTBOUND_DIRECT
								    : ACCEL_NETNS_INBOUND_DIRECT)))) {
		__u32 remote[4];

		set_ip(remote, v4, rip4, rip6);
		if (!may_ever_pair(remote, netns, policy)) {
			count(netns, ACCEL_CNT_FALLBACK_NEVER_PAIRS, 1);
			return;
		}
	}

	st = bpf_sk_storage_get(&sock_state, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!st)
		return;
	__builtin_memset(st, 0, sizeof(*st));
	st->netns_cookie = netns;
	st->key.role = role;
	if (!sidecar)
		st->flags |= SOCK_APP;
	style = own_reader_style(tp);
	refusal = reader_refusal(style, role, netns, port, sidecar);
	if (style == READER_NONBLOCKING)
		st->flags |= SOCK_SEEN_NONBLOCKING;
	if (refusal < ACCEL_CNT_MAX) {
		count(netns, refusal, 1);
		/*
		 * Its first send with a file attached teaches how this listener's
		 * sockets are read (a listener seen blocking stays so: nothing to learn).
		 */
		if (refusal == ACCEL_CNT_FALLBACK_UNKNOWN_READER) {
			st->flags |= SOCK_LEARN;
			bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
							 BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG);
		}
		return;
	}
	lip4 = CTX(skops->local_ip4);
	lip6[0] = CTX(skops->local_ip6[0]);
	lip6[1] = CTX(skops->local_ip6[1]);
	lip6[2] = CTX(skops->local_ip6[2]);
	lip6[3] = CTX(skops->local_ip6[3]);
	if (role == ACCEL_ROLE_CLIENT) {
		set_ip(st->key.client_ip, v4, lip4, lip6);
		st->key.client_port = (__u16)skops->local_port;
		st->key.client_seq = skops->snd_nxt;
		st->key.server_seq = skops->rcv_nxt;
	} else {
		set_ip(st->key.client_ip, v4, rip4, rip6);
		st->key.client_port = (__u16)bpf_ntohl(skops->remote_port);
		st->key.client_seq = skops->rcv_nxt;
		st->key.server_seq = skops->snd_nxt;
	}
	/*
	 * I1: a client address not known as a pod's is unique only inside its
	 * netns, so its key carries the netns cookie; a pod address is unique on
	 * the node, and a node-wide key lets sidecars of two pods meet (used only
	 * when cross-pod pairing is on, checked at send time). One key per socket:
	 * the kernel refuses a second sockhash entry for a socket whose psock has
	 * a msg prog.
	 */
	st->key.scope = unique_on_node(st->key.client_ip, netns, role) ? 0 : netns;
	/*
	 * I2: bytes this end queued or sent before ESTABLISHED (TCP Fast Open data
	 * in the SYN, or queued behind it) are already TCP's; this direction stays
	 * TCP. The other direction may still be redirected.
	 */
	st->base_write_seq = tp->write_seq;
	if (skops->data_segs_out == 0 && st->base_write_seq == skops->snd_nxt &&
	    !BPF_CORE_READ_BITFIELD_PROBED(tp, syn_data))
		st->flags |= SOCK_TX_CLEAN;
	else
		count(netns, ACCEL_CNT_FALLBACK_EARLY_DATA, 1);

	/*
	 * I1: a taken key means two sockets claim one identity: pair neither anew.
	 * Each refusal is counted for what it is: a full map is capacity
	 * (datapath.sockHashEntries), a socket another sockmap user holds is not
	 * ours to take.
	 */
	err = bpf_sock_hash_update(skops, &sock_hash, &st->key, BPF_NOEXIST);
	if (err) {
		count(netns, err == -E2BIG ? ACCEL_CNT_FALLBACK_MAP_FULL :
			     err == -EBUSY ? ACCEL_CNT_FALLBACK_SOCKET_BUSY :
			     err == -EEXIST ? ACCEL_CNT_FALLBACK_KEY_CONFLICT : ACCEL_CNT_FALLBACK_INSERT_FAILED, 1);
		st->flags = 0;
		return;
	}
	info.sk = (unsigned long)tp;
	info.netns_cookie = netns;
	/*
	 * No peer can find this socket without its peer_info entry, so nothing
	 * was redirected to it yet: without one it leaves sock_hash at once (I5).
	 */
	err = bpf_map_update_elem(&peer_info, &st->key, &info, BPF_ANY);
	if (err) {
		bpf_map_delete_elem(&sock_hash, &st->key);
		count(netns, err == -E2BIG ? ACCEL_CNT_FALLBACK_MAP_FULL : ACCEL_CNT_FALLBACK_INSERT_FAILED, 1);
		st->flags = 0;
		return;
	}
	st->flags |= SOCK_REGISTERED;
	count(netns, ACCEL_CNT_SOCKETS_REGISTERED, 1);
	/*
	 * To give up its claim on its peer when it closes (STATE_CB), to release
	 * a socket that cannot pair (RTT_CB), and at its TCP segments
	 * (HDR_OPT_LEN_CB): an application's socket is withdrawn at its first one
	 * after it turned blocking (I6), and a claim or a leave that had to wait
	 * is settled (I5).
	 */
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG |
					 BPF_SOCK_OPS_RTT_CB_FLAG | BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG);

	if (!cfg)
		return;
	/*
	 * A paired connection sends no packets, so the pod's conntrack entry can
	 * expire and the final FIN would then miss the NAT (DESIGN.md 4.8).
	 * Keepalive probes, sent only while TCP sees the connection idle, keep
	 * the entry fresh. Only a socket whose other end is already registered
	 * (the second of the two to register) gets them: probes from one end
	 * refresh the entry both ways, and a socket that never pairs keeps TCP's
	 * own behaviour. An application that set keepalive keeps its settings.
	 */
	if (cfg->keepalive_idle_s) {
		struct accel_conn_key peer_key = st->key;
		int on = 0, idle = cfg->keepalive_idle_s;

		peer_key.role = role == ACCEL_ROLE_CLIENT ? ACCEL_ROLE_SERVER : ACCEL_ROLE_CLIENT;
		if (bpf_map_lookup_elem(&peer_info, &peer_key) &&
		    !bpf_getsockopt(skops, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) && !on) {
			on = 1;
			/* After a probe the timer re-arms at the interval, not the idle time. */
			if (!bpf_setsockopt(skops, SOL_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) &&
			    !bpf_setsockopt(skops, SOL_TCP, TCP_KEEPINTVL, &idle, sizeof(idle)))
				bpf_setsockopt(skops, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
		}
	}
}

/* The socket's state and its tcp_sock, for a sockops callback; false if either is missing. */
static __always_inline bool state_of(struct bpf_sock_ops *skops, struct sock_state **st, struct tcp_sock **tp)
{
	struct bpf_sock *sk = skops->sk;

	if (!sk)
		return false;
	*st = bpf_sk_storage_get(&sock_state, sk, 0, 0);
	*tp = bpf_skc_to_tcp_sock(sk);
	return *st && *tp;
}

/*
 * I2: this socket's direction has never put a byte on TCP, judged from the
 * kernel's own sequence space, not from a flag of ours.
 */
static __always_inline bool tx_clean(const struct sock_state *st, struct tcp_sock *tp)
{
	return (st->flags & SOCK_TX_CLEAN) && tp->write_seq == st->base_write_seq;
}

static __always_inline struct accel_conn_key peer_key_of(const struct sock_state *st)
{
	struct accel_conn_key k = st->key;

	k.role = st->key.role == ACCEL_ROLE_CLIENT ? ACCEL_ROLE_SERVER : ACCEL_ROLE_CLIENT;
	return k;
}

/*
 * I5: no thread is inside this socket's tcp_bpf_sendmsg but the caller's own
 * (`self`: 1 from sk_msg, which runs inside it; 0 from sockops). Each such
 * thread holds a psock reference for the whole call, its redirect's enqueue
 * included; the psock's other references are its map links, of which ours
 * is the only one (a socket another sockmap user holds is never registered;
 * more links only make this say "busy"). No psock: nobody holds one.
 */
static __always_inline bool sender_idle(struct tcp_sock *tp, int self)
{
	struct sk_psock *psock = psock_of(tp);
	int refs, links;

	if (!psock)
		return true;
	refs = BPF_CORE_READ(psock, refcnt.refs.counter);
	links = BPF_CORE_READ(psock, link.next) != &psock->link;
	return refs == links + self;
}

/*
 * I5: a redirect may choose the peer only while this socket holds a claim on
 * it (GATE_CLAIMED in the peer's peer_info gate), taken by an atomic
 * operation on the same word the peer sets GATE_LEAVING in with one:
 * whichever comes first wins, so a peer that leaves never has a redirect of
 * ours on its way. Only this socket sets or clears its peer's GATE_CLAIMED
 * (a key has one owner, I1), always under its own lock.
 */
static __always_inline bool claim_peer(struct sock_state *st, struct accel_peer_info *peer)
{
	__u32 old;

	if (st->flags & SOCK_CLAIMS_PEER)
		return !(peer->gate & GATE_LEAVING);
	old = __sync_fetch_and_or(&peer->gate, GATE_CLAIMED);
	if (old & GATE_LEAVING) {
		__sync_fetch_and_and(&peer->gate, ~GATE_CLAIMED);
		return false;
	}
	st->flags |= SOCK_CLAIMS_PEER;
	return true;
}

/*
 * I5: gives the claim up once none of this socket's redirects can be in
 * flight (sender_idle); its next redirect claims again. `settled_only`: only
 * when it will not need the claim soon (its direction is on TCP, or its peer
 * is leaving or gone), so that a busy paired socket keeps it.
 */
static __always_inline void release_claim(struct sock_state *st, struct tcp_sock *tp, int self, bool settled_only)
{
	struct accel_peer_info *peer;
	struct accel_conn_key peer_key;

	if (!(st->flags & SOCK_CLAIMS_PEER) || !sender_idle(tp, self))
		return;
	peer_key = peer_key_of(st);
	peer = bpf_map_lookup_elem(&peer_info, &peer_key);
	if (settled_only && peer && !(peer->gate & GATE_LEAVING) && tx_clean(st, tp))
		return;
	if (peer)
		__sync_fetch_and_and(&peer->gate, ~GATE_CLAIMED);
	st->flags &= ~SOCK_CLAIMS_PEER;
}

/*
 * I5: out of sock_hash, and so back to plain TCP. GATE_LEAVING goes up
 * first (in its peer_info entry): from then on no redirect may choose it. It leaves only
 * when its peer holds no claim (no redirect of the peer's in flight), it
 * holds none itself (none of its own in flight, so its peer can leave too
 * one day) and nothing redirected to it is unread. Every enqueue to it
 * happens under its lock, which the callers (sockops) hold, and before its
 * sender's claim could be given up: so the queue check sees all of them.
 * Otherwise the leave is pending and tried again at its next TCP segment.
 */
static __always_inline bool leave_sockhash(struct bpf_sock_ops *skops, struct sock_state *st, struct tcp_sock *tp)
{
	struct sk_psock *psock = psock_of(tp);
	struct accel_peer_info *own;
	__u32 old;

	own = bpf_map_lookup_elem(&peer_info, &st->key);
	if (!psock || !own)
		return false;
	old = __sync_fetch_and_or(&own->gate, GATE_LEAVING);
	release_claim(st, tp, 0, false);
	if ((old & GATE_CLAIMED) || (st->flags & SOCK_CLAIMS_PEER) || !ingress_empty(psock) ||
	    bpf_map_delete_elem(&sock_hash, &st->key)) {
		if (!(st->flags & SOCK_LEAVE_PENDING)) {
			st->flags |= SOCK_LEAVE_PENDING;
			count(st->netns_cookie, ACCEL_CNT_LEAVE_DEFERRED, 1);
			bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
							 BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG);
		}
		return false;
	}
	bpf_map_delete_elem(&peer_info, &st->key);
	st->flags &= ~(SOCK_REGISTERED | SOCK_LEAVE_PENDING);
	count(st->netns_cookie, (st->flags & SOCK_TURNED_BLOCKING) ? ACCEL_CNT_SOCKETS_WITHDRAWN : ACCEL_CNT_SOCKETS_RELEASED, 1);
	return true;
}

/*
 * The first RTT sample after ESTABLISHED is an ACK of data this socket sent
 * over TCP (a paired socket sends none). A socket in the sockhash sends
 * through the psock's slower path; if it can never pair, it goes back to
 * plain TCP here, where the kernel allows a sockhash delete.
 */
static __always_inline void release_unpairable(struct bpf_sock_ops *skops)
{
	struct accel_peer_info *peer;
	struct accel_conn_key peer_key;
	struct bpf_sock *sk = skops->sk;
	struct sock_state *st;
	struct tcp_sock *tp;

	/* One look is enough: what this socket is does not change later. */
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags & ~BPF_SOCK_OPS_RTT_CB_FLAG);
	if (!sk)
		return;
	st = bpf_sk_storage_get(&sock_state, sk, 0, 0);
	/* A paired socket keeps its entry: its backpressure fallback is temporary for the peer. */
	if (!st || !(st->flags & SOCK_REGISTERED) || (st->flags & SOCK_PAIRED))
		return;
	/*
	 * The peer has processed our data, so a local peer has registered by now.
	 * One that may still redirect to us keeps us registered: same netns, or
	 * another with cross-pod pairing on. (Were that to change later, its
	 * claim still keeps us until it can no longer redirect: I5.)
	 */
	peer_key = peer_key_of(st);
	peer = bpf_map_lookup_elem(&peer_info, &peer_key);
	if (peer && !(peer->gate & GATE_LEAVING) &&
	    (peer->netns_cookie == st->netns_cookie ||
	     cross_pod_allowed(bpf_map_lookup_elem(&netns_policy, &st->netns_cookie),
			       bpf_map_lookup_elem(&netns_policy, &peer->netns_cookie))))
		return;
	tp = bpf_skc_to_tcp_sock(sk);
	if (tp)
		leave_sockhash(skops, st, tp);
}

/*
 * I6, after registration: an application may clear O_NONBLOCK at any time
 * (a client that connects non-blocking with a timeout, then reads blocking).
 * Its own sends stop redirecting at once (accel_msg), so its next TCP
 * segment brings it here, where it leaves sock_hash as soon as nothing
 * redirected to it is unread (I5). Until then a no-data wakeup of a blocking
 * read on it still ends in EAGAIN: the window is from its fcntl() to its
 * next segment, and no hook runs at fcntl() (README, limitations).
 */
static __always_inline void mark_turned_blocking(struct sock_state *st)
{
	if (!(st->flags & SOCK_TURNED_BLOCKING)) {
		st->flags |= SOCK_TURNED_BLOCKING;
		count(st->netns_cookie, ACCEL_CNT_FALLBACK_TURNED_BLOCKING, 1);
	}
}

static __always_inline void withdraw(struct bpf_sock_ops *skops, struct sock_state *st, struct tcp_sock *tp)
{
	mark_turned_blocking(st);
	leave_sockhash(skops, st, tp);
}

/*
 * Every TCP segment an application's socket sends while it is registered
 * (rare once paired) or while its listener is being learned. A socket
 * accepted by a server that sets O_NONBLOCK only after accept() (PostgreSQL's
 * backends, Java NIO) is briefly blocking without being read that way, and a
 * pure ACK can go out then: only the application's own data, or a socket
 * that was already non-blocking, shows how it is read.
 */
static __always_inline void observe_reader(struct bpf_sock_ops *skops, struct sock_state *st, struct tcp_sock *tp)
{
	struct accel_listener_key lk;
	__u32 *seen, bit;
	bool data;
	int style;

	style = own_reader_style(tp);
	if (style == READER_UNKNOWN)
		return;
	if (style == READER_NONBLOCKING)
		st->flags |= SOCK_SEEN_NONBLOCKING;
	data = skops->skb_len > 0;
	lk = listener_key(st->netns_cookie, (__u16)skops->local_port);
	if ((st->flags & SOCK_LEARN) && data) {
		st->flags &= ~SOCK_LEARN;
		bit = style == READER_BLOCKING ? ACCEL_LISTENER_BLOCKING : ACCEL_LISTENER_NONBLOCKING;
		seen = bpf_map_lookup_elem(&listener_style, &lk);
		if (seen)
			__sync_fetch_and_or(seen, bit);
		else
			bpf_map_update_elem(&listener_style, &lk, &bit, BPF_NOEXIST);
	}
	if ((st->flags & SOCK_REGISTERED) && !(st->flags & SOCK_LEAVE_PENDING) &&
	    ((st->flags & SOCK_TURNED_BLOCKING) ||
	     (style == READER_BLOCKING && (data || (st->flags & SOCK_SEEN_NONBLOCKING))))) {
		/* A listener whose socket turned out blocking is never trusted again. */
		if (st->key.role == ACCEL_ROLE_SERVER) {
			bit = ACCEL_LISTENER_BLOCKING;
			bpf_map_update_elem(&listener_style, &lk, &bit, BPF_ANY);
		}
		withdraw(skops, st, tp);
	}
}

/*
 * Every TCP segment a socket sends while it needs to see them: an
 * application's while registered or learning (I6), any socket with a claim
 * to give up or a leave to finish (I5), and any registered one (it may claim
 * its peer later, from sk_msg, which cannot turn this callback back on, even
 * after its direction went to TCP: it may come back, I2).
 */
static __always_inline void on_segment(struct bpf_sock_ops *skops)
{
	struct sock_state *st;
	struct tcp_sock *tp;

	if (!state_of(skops, &st, &tp))
		return;
	if (st->flags & SOCK_APP)
		observe_reader(skops, st, tp);
	if (st->flags & SOCK_LEAVE_PENDING)
		leave_sockhash(skops, st, tp);
	else
		release_claim(st, tp, 0, true);
	if (!(st->flags & (SOCK_LEARN | SOCK_LEAVE_PENDING | SOCK_CLAIMS_PEER | SOCK_REGISTERED)))
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags &
						 ~BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG);
}

/*
 * Closing: the kernel unlinks it from sock_hash; it unpublishes itself, and
 * its claim on its peer goes once none of its redirects can be in flight (I5).
 */
static __always_inline void on_close(struct bpf_sock_ops *skops)
{
	struct sock_state *st;
	struct tcp_sock *tp;

	if (!state_of(skops, &st, &tp))
		return;
	release_claim(st, tp, 0, false);
	if (st->flags & SOCK_REGISTERED)
		bpf_map_delete_elem(&peer_info, &st->key);
}

SEC("sockops")
int accel_sockops(struct bpf_sock_ops *skops)
{
	struct accel_listener_key lk;

	switch (skops->op) {
	case BPF_SOCK_OPS_HDR_OPT_LEN_CB:
		on_segment(skops);
		break;
	case BPF_SOCK_OPS_TCP_LISTEN_CB:
		/* A new listener may be another server: learn its style anew. */
		lk = listener_key(bpf_get_netns_cookie(skops), (__u16)skops->local_port);
		bpf_map_delete_elem(&listener_style, &lk);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == BPF_TCP_CLOSE)
			on_close(skops);
		break;
	case BPF_SOCK_OPS_RTT_CB:
		release_unpairable(skops);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		register_socket(skops, ACCEL_ROLE_CLIENT);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		register_socket(skops, ACCEL_ROLE_SERVER);
		break;
	}
	return 1;
}

/*
 * Near TCP memory pressure (tcp_mem's second value, less a margin for the
 * per-CPU reserves the global count lags by, or the kernel's own pressure
 * flag) the charge bpf_tcp_ingress makes may fail: the sender then gets
 * ENOMEM or EPIPE, or its bytes are lost (6.12, and 6.18 with tcp_mem
 * lowered), where TCP would hold the writer back and retransmit. Seen in a
 * 3 GiB guest on 6.12.118. So the message goes over TCP then.
 */
static __always_inline bool tcp_memory_tight(struct tcp_sock *tp, __u32 size)
{
	/*
	 * Every TCP socket, IPv4 or IPv6, in a sockhash or not, charges the
	 * same accounting (tcp_memory_allocated, sysctl_tcp_mem): the writer's
	 * own proto names it, by direct loads.
	 */
	struct proto *prot = tp->inet_conn.icsk_inet.sk.__sk_common.skc_prot;
	unsigned long *pressure_flag = prot->memory_pressure;
	atomic_long_t *allocated_p = prot->memory_allocated;
	long *limits = prot->sysctl_mem;
	unsigned long flag = 0;
	long allocated, pressure = 0, margin;

	if (!allocated_p || !limits)
		return false;
	if (pressure_flag && !bpf_probe_read_kernel(&flag, sizeof(flag), pressure_flag) && flag)
		return true;
	allocated = allocated_p->counter;
	if (bpf_probe_read_kernel(&pressure, sizeof(pressure), &limits[1]))
		return true;
	/*
	 * The global count lags each CPU's reserve (up to 1 MiB each), and other
	 * sockets charge between this check and bpf_tcp_ingress's own: keep a
	 * margin of 1/8 of the threshold, and at least 8 MiB (2048 pages), which
	 * matters only where tcp_mem is tiny (a small node, or a test lowering it).
	 */
	margin = pressure >> 3;
	if (margin < 2048)
		margin = 2048;
	return allocated + (size >> 12) + 1 > pressure - margin;
}

/*
 * The peer socket (the one its sock_hash entry holds, published in
 * peer_info) may take this message: not leaving, enabled, no ULP, room
 * in its queue (I3, I4, I5). Returns ACCEL_CNT_MAX to allow, else the
 * fallback counter that refused.
 */
static __always_inline __u32 peer_socket_refusal(const struct accel_peer_info *peer, struct tcp_sock *tp,
						 __u64 netns, const struct accel_netns_policy *own, __u32 size)
{
	struct accel_netns_policy *policy;
	struct sock *psk = (struct sock *)peer->sk;
	__u32 queued;
	int rcvbuf;

	if (!psk || (peer->gate & GATE_LEAVING))
		return ACCEL_CNT_FALLBACK_NO_PEER;
	/* In-pod, the usual case, the peer's policy is our own: no second look-up. */
	policy = peer->netns_cookie == netns ? (struct accel_netns_policy *)own
					      : bpf_map_lookup_elem(&netns_policy, &peer->netns_cookie);
	/* DESIGN.md 4.5: the two ends in different pods pair only when opted in. */
	if (peer->netns_cookie != netns && !cross_pod_allowed(own, policy))
		return ACCEL_CNT_FALLBACK_CROSS_POD;
	if (!policy || !(policy->flags & ACCEL_NETNS_ENABLED))
		return ACCEL_CNT_FALLBACK_DISABLED;
	if (has_ulp((struct tcp_sock *)psk))
		return ACCEL_CNT_FALLBACK_ULP;
	/* I8; the direction comes back once the reader drops the option (I2). */
	if (reader_wants_tcp(psk))
		return ACCEL_CNT_FALLBACK_SOCKET_OPTION;
	/*
	 * The kernel never checks an ingress redirect against the receiver's
	 * buffer, so the queue is bounded here; past the bound TCP's flow control
	 * takes over. What the receiver holds is sk_rmem_alloc, which counts its
	 * redirected bytes too (charged by bpf_tcp_ingress since 6.1.123 and
	 * 6.12.8; the start-up self-test refuses a kernel where this bound does
	 * not hold the writer back). The bound is what TCP would allow this
	 * receiver: its SO_RCVBUF when the application set one, else what
	 * receive autotuning may grow to. sk_userlocks is a 4-bit bitfield up to
	 * 6.1 and a u8 from 6.12: read either way. In one netns (the usual
	 * case) the receiver's sysctl is the writer's, read by direct loads.
	 */
	queued = BPF_CORE_READ(psk, sk_backlog.rmem_alloc.counter);
	rcvbuf = BPF_CORE_READ(psk, sk_rcvbuf);
	if (!(BPF_CORE_READ_BITFIELD_PROBED(psk, sk_userlocks) & SOCK_RCVBUF_LOCK)) {
		int tune_max = peer->netns_cookie == netns ?
			tp->inet_conn.icsk_inet.sk.__sk_common.skc_net.net->ipv4.sysctl_tcp_rmem[2] :
			BPF_CORE_READ(psk, __sk_common.skc_net.net, ipv4.sysctl_tcp_rmem[2]);

		if (tune_max > rcvbuf)
			rcvbuf = tune_max;
	}
	if (rcvbuf <= 0 || (__u64)queued + size > (__u64)rcvbuf)
		return ACCEL_CNT_FALLBACK_BACKPRESSURE;
	if (tcp_memory_tight(tp, size))
		return ACCEL_CNT_FALLBACK_MEMORY_PRESSURE;
	return ACCEL_CNT_MAX;
}

/*
 * A backpressure fallback: the first TCP bytes after it wait at the reader
 * until its redirect queue is read (I7), and come again only at TCP's
 * retransmission timeout (200 ms and more; one per fallback, measured). A
 * writer that outruns a slower hop would overflow again as soon as it is
 * back, so the direction stays on TCP at least backpressure_holdoff_ms.
 * Only this socket writes its peer's resume_after_ns, under its own lock.
 */
static __always_inline void hold_off(struct accel_peer_info *peer)
{
	struct accel_config *cfg;
	__u32 zero = 0;

	cfg = bpf_map_lookup_elem(&accel_cfg, &zero);
	if (cfg)
		peer->resume_after_ns = bpf_ktime_get_ns() + (__u64)cfg->backpressure_holdoff_ms * 1000000;
}

static __always_inline __u32 peer_refusal(struct sock_state *st, struct tcp_sock *tp, const struct accel_conn_key *peer_key,
					  const struct accel_netns_policy *own, __u32 size)
{
	struct accel_peer_info *peer = bpf_map_lookup_elem(&peer_info, peer_key);
	__u32 refusal;

	if (!peer)
		return ACCEL_CNT_FALLBACK_NO_PEER;
	refusal = peer_socket_refusal(peer, tp, st->netns_cookie, own, size);
	if (refusal == ACCEL_CNT_FALLBACK_BACKPRESSURE)
		hold_off(peer);
	/* I5: the claim last, so that a refused message leaves none behind. */
	if (refusal == ACCEL_CNT_MAX && !claim_peer(st, peer))
		refusal = ACCEL_CNT_FALLBACK_NO_PEER;
	return refusal;
}

/*
 * I2: this direction is on TCP; may it come back to redirect? Only when the
 * receiving application has read every byte it ever sent over TCP: the
 * receiver's copied_seq equals our write_seq (one sequence space; write_seq
 * cannot move, the caller holds our lock, and copied_seq cannot pass it), so
 * nothing of ours is queued, in flight or unsent on TCP. And its reader must
 * be non-blocking now: a reader that entered TCP's recvmsg while bytes were
 * queued there waits inside it (MSG_WAITALL, SO_RCVLOWAT) for TCP bytes
 * only, and would never see a redirected one; a non-blocking one never waits
 * there, and a read that starts later finds TCP's queue empty and takes the
 * sockmap path, which waits on both queues. Its redirect queue is empty then
 * (I7 let our TCP bytes in only after it was read); checked all the same.
 * Not before the hold-off a backpressure fallback set (hold_off): each of
 * those costs the connection a retransmission timeout.
 */
static __always_inline bool receiver_caught_up(struct sock_state *st, struct tcp_sock *tp)
{
	struct accel_conn_key peer_key = peer_key_of(st);
	struct accel_peer_info *peer = bpf_map_lookup_elem(&peer_info, &peer_key);
	struct tcp_sock *rtp;
	struct sk_psock *psock;

	if (!peer || !peer->sk || (peer->gate & GATE_LEAVING) || bpf_ktime_get_ns() < peer->resume_after_ns)
		return false;
	rtp = (struct tcp_sock *)peer->sk;
	if (BPF_CORE_READ(rtp, copied_seq) != tp->write_seq ||
	    reader_style((struct sock *)rtp) != READER_NONBLOCKING)
		return false;
	psock = psock_of(rtp);
	return psock && ingress_empty(psock);
}

/* Redirects the message to the peer if that keeps the stream exact; false if TCP carries it. */
static __always_inline bool redirect_to_peer(struct sk_msg_md *msg, struct sock_state *st, struct tcp_sock *tp)
{
	struct accel_netns_policy *policy;
	struct accel_conn_key peer_key;
	__u64 netns = st->netns_cookie;
	bool resuming = false;
	__u32 refusal;

	if (!tx_clean(st, tp)) {
		if ((st->flags & (SOCK_TURNED_BLOCKING | SOCK_LEAVE_PENDING)) || !receiver_caught_up(st, tp)) {
			count(netns, ACCEL_CNT_TCP_MSGS, 1);
			return false;
		}
		resuming = true;
	}
	/*
	 * From here on a false is this direction's first TCP byte since it was
	 * last redirected: a fallback, counted by its reason. A direction already
	 * on TCP that may not resume after all counts as a TCP message only.
	 */
	policy = bpf_map_lookup_elem(&netns_policy, &netns);
	if (!policy || !(policy->flags & ACCEL_NETNS_ENABLED)) {
		count(netns, resuming ? ACCEL_CNT_TCP_MSGS : ACCEL_CNT_FALLBACK_DISABLED, 1);
		return false;
	}
	if (own_has_ulp(tp)) {
		count(netns, resuming ? ACCEL_CNT_TCP_MSGS : ACCEL_CNT_FALLBACK_ULP, 1);
		return false;
	}
	if (writer_wants_tcp(tp)) {
		count(netns, resuming ? ACCEL_CNT_TCP_MSGS : ACCEL_CNT_FALLBACK_SOCKET_OPTION, 1);
		return false;
	}
	/*
	 * I6: an application sending from a blocking socket reads it blocking:
	 * TCP from now on, and withdrawn at the segment this sends. (A redirect
	 * into a blocking reader is harmless: data always ends its wait.)
	 */
	if (st->flags & SOCK_APP) {
		int style = own_reader_style(tp);

		if (style == READER_NONBLOCKING && !(st->flags & SOCK_SEEN_NONBLOCKING))
			st->flags |= SOCK_SEEN_NONBLOCKING;
		if (style == READER_BLOCKING)
			mark_turned_blocking(st);
	}
	/* A socket on its way out of sock_hash sends over TCP (I5, I6). */
	if (st->flags & (SOCK_TURNED_BLOCKING | SOCK_LEAVE_PENDING))
		return false;

	peer_key = peer_key_of(st);
	refusal = peer_refusal(st, tp, &peer_key, policy, msg->size);
	if ((refusal == ACCEL_CNT_FALLBACK_NO_PEER || refusal == ACCEL_CNT_FALLBACK_CROSS_POD) &&
	    !(st->flags & SOCK_PAIRED))
		count(netns, ACCEL_CNT_PAIRING_MISSES, 1);
	if (refusal < ACCEL_CNT_MAX) {
		count(netns, resuming ? ACCEL_CNT_TCP_MSGS : refusal, 1);
		return false;
	}
	/*
	 * The peer can close between the look-up and here; the helper then finds
	 * no entry and would drop the message. TCP carries it instead (I2 still
	 * holds: every byte of this direction on TCP has been read).
	 */
	if (bpf_msg_redirect_hash(msg, &sock_hash, &peer_key, BPF_F_INGRESS) != SK_PASS) {
		count(netns, resuming ? ACCEL_CNT_TCP_MSGS : ACCEL_CNT_FALLBACK_NO_PEER, 1);
		return false;
	}
	if (resuming) {
		/* I2 is judged against this point from now on. */
		st->base_write_seq = tp->write_seq;
		st->flags |= SOCK_TX_CLEAN;
		count(netns, ACCEL_CNT_DIRECTIONS_RESUMED, 1);
	}
	if (!(st->flags & SOCK_PAIRED)) {
		st->flags |= SOCK_PAIRED;
		count(netns, ACCEL_CNT_SOCKETS_PAIRED, 1);
	}
	count_redirect(netns, msg->size);
	return true;
}

SEC("sk_msg")
int accel_msg(struct sk_msg_md *msg)
{
	struct bpf_sock *sk = msg->sk;
	struct sock_state *st;
	struct tcp_sock *tp;

	if (!sk)
		return SK_PASS;
	st = bpf_sk_storage_get(&sock_state, sk, 0, 0);
	if (!st || !(st->flags & SOCK_REGISTERED))
		return SK_PASS;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return SK_PASS;
	/* Either way SK_PASS: the redirect's target was set by the helper. */
	if (!redirect_to_peer(msg, st, tp))
		release_claim(st, tp, 1, true); /* I5: a claim no redirect of ours needs any more */
	return SK_PASS;
}

/*
 * I7: a reader holds bytes in one queue at a time. After its peer's direction
 * fell back to TCP (backpressure, memory pressure, disable), the reader may
 * still have redirected bytes unread in its psock. A read then returns only
 * those (tcp_bpf_recvmsg serves the psock queue first and stops there), so
 * with the TCP bytes and even the FIN already queued behind them, the read
 * is short while epoll reports RDHUP: event loops (HAProxy, libuv) take that
 * for the end of the stream and drop the rest, and an edge-triggered reader
 * that stops at a short read waits for an edge that never comes. So a TCP
 * segment carrying data into such a socket is not accepted until
 * its psock queue is read: TCP's retransmission brings it again, and then
 * every byte comes from the TCP queue, in order, after the redirected ones.
 * Pure ACKs, a FIN alone and RSTs pass.
 */
SEC("cgroup_skb/ingress")
int accel_ingress(struct __sk_buff *skb)
{
	struct sock_state *st;
	struct sk_psock *psock;
	struct tcp_sock *reader;
	struct bpf_sock *sk;
	__u32 ip_len, tcp_off;
	__u8 b[2];

	sk = skb->sk;
	if (!sk)
		return 1;
	sk = bpf_sk_fullsock(sk);
	if (!sk || sk->protocol != IPPROTO_TCP)
		return 1;
	st = bpf_sk_storage_get(&sock_state, sk, 0, 0);
	if (!st || !(st->flags & SOCK_REGISTERED))
		return 1;
	reader = bpf_skc_to_tcp_sock(sk);
	if (!reader)
		return 1;
	psock = psock_of(reader);
	if (!psock || ingress_empty(psock))
		return 1;
	/*
	 * A reader that shut its read side down (shutdown(SHUT_RD)) already
	 * sees RDHUP and may never read: TCP takes its peer's bytes and FIN.
	 */
	if (BPF_CORE_READ_BITFIELD_PROBED((struct sock *)reader, sk_shutdown) & RCV_SHUTDOWN)
		return 1;
	/* Only what TCP would queue for reading. */
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		if (bpf_skb_load_bytes(skb, 0, b, 1))
			return 1;
		ip_len = (b[0] & 0x0f) * 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, 6, b, 1) || b[0] != IPPROTO_TCP)
			return 1; /* extension headers: not on a pod's own paths */
		ip_len = 40;
	} else {
		return 1;
	}
	tcp_off = ip_len + 12;
	if (bpf_skb_load_bytes(skb, tcp_off, b, 2))
		return 1;
	if (b[1] & 0x04) /* RST */
		return 1;
	/*
	 * A FIN alone passes: a short read with nothing behind it in TCP's queue
	 * is a true end. Holding it would delay every paired connection's close
	 * by a retransmission timeout (a FIN behind held data waits anyway: TCP
	 * takes it out of order, without RDHUP).
	 */
	if (skb->len <= ip_len + (b[0] >> 4) * 4)
		return 1;
	count(st->netns_cookie, ACCEL_CNT_TCP_HELD_BACK, 1);
	return 0;
}
