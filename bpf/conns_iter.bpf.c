// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * `sidecar-accel conns`: every TCP socket of one network namespace as the
 * kernel holds it, with the datapath's per-socket state beside it. A separate
 * object from the datapath so that reading never touches it: the agent loads
 * this with a generation's pinned sock_state map reused (libbpf
 * bpf_map__reuse_fd), links the iterator, and reads it from inside a pod's
 * netns (a TCP iterator lists the sockets of the netns it was opened in).
 *
 * One fixed-size struct conn_record per full socket (request and TIME-WAIT
 * sockets carry no datapath state; ss leaves them out by default too).
 * src/conns/records.ts decodes it, its layout checked against this object's BTF.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "accel_maps.h"
#include "sock_options.h"

#define AF_INET 2
#define AF_INET6 10
#define SK_USER_DATA_PSOCK 4UL

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/*
 * The datapath's sock_state map (struct sock_state, accel_maps.h), reused
 * from a generation's pins. The agent compares the layout with that
 * generation's own BTF before reading, so an older layout is refused, not
 * misread.
 */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sock_state);
} sock_state SEC(".maps");

struct conn_record {
	__u64 sock_cookie;     /* as ss -e prints it (sk:) */
	__u64 bytes_acked;     /* TCP's own counters, as ss -i prints them */
	__u64 bytes_received;
	__u32 local_ip[4];     /* IPv4 as ::ffff:a.b.c.d */
	__u32 remote_ip[4];
	__u16 local_port;      /* host order */
	__u16 remote_port;
	__u8 family;
	__u8 tcp_state;        /* TCP_ESTABLISHED.. as in include/net/tcp_states.h */
	__u8 has_state;        /* the datapath stored a sock_state for it */
	__u8 in_sockmap;       /* it has a psock: it is in a sockhash now */
	__u32 uid;
	__u32 write_seq;       /* compared with state.base_write_seq: bytes this end sent over TCP */
	__u8 ulp;              /* a ULP (kTLS) is set */
	__u8 repair;           /* TCP_REPAIR */
	__u8 reader_options;   /* READER_OPT_*: options that keep the direction into it on TCP (I8) */
	__u8 writer_options;   /* WRITER_OPT_*: options that keep its own direction on TCP (I8) */
	__u32 pad1;
	struct sock_state state;  /* zero unless has_state */
};


/*
 * Not inlined: its prototype keeps struct conn_record in this object's BTF,
 * where the agent checks the decoder's layout.
 */
static __noinline void emit(struct seq_file *seq, struct conn_record *r)
{
	bpf_seq_write(seq, r, sizeof(*r));
}

static __always_inline void copy_ip(__u32 dst[4], bool v4, __be32 ip4, const struct in6_addr *ip6)
{
	if (v4) {
		dst[0] = 0;
		dst[1] = 0;
		dst[2] = bpf_htonl(0xffff);
		dst[3] = ip4;
		return;
	}
	dst[0] = BPF_CORE_READ(ip6, in6_u.u6_addr32[0]);
	dst[1] = BPF_CORE_READ(ip6, in6_u.u6_addr32[1]);
	dst[2] = BPF_CORE_READ(ip6, in6_u.u6_addr32[2]);
	dst[3] = BPF_CORE_READ(ip6, in6_u.u6_addr32[3]);
}

SEC("iter/tcp")
int conns_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct conn_record r = {};
	struct sock_state *st;
	struct tcp_sock *tp;
	bool v4;

	if (!skc)
		return 0;
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	r.family = BPF_CORE_READ(skc, skc_family);
	if (r.family != AF_INET && r.family != AF_INET6)
		return 0;
	v4 = r.family == AF_INET;
	r.tcp_state = BPF_CORE_READ(skc, skc_state);
	r.sock_cookie = bpf_get_socket_cookie(tp);
	r.uid = ctx->uid;
	r.local_port = BPF_CORE_READ(skc, skc_num);
	r.remote_port = bpf_ntohs(BPF_CORE_READ(skc, skc_dport));
	/* A v6 socket talking IPv4 holds v4-mapped v6 addresses: the same key either way. */
	copy_ip(r.local_ip, v4, BPF_CORE_READ(skc, skc_rcv_saddr), &skc->skc_v6_rcv_saddr);
	copy_ip(r.remote_ip, v4, BPF_CORE_READ(skc, skc_daddr), &skc->skc_v6_daddr);
	r.bytes_acked = BPF_CORE_READ(tp, bytes_acked);
	r.bytes_received = BPF_CORE_READ(tp, bytes_received);
	r.write_seq = BPF_CORE_READ(tp, write_seq);
	r.ulp = BPF_CORE_READ(tp, inet_conn.icsk_ulp_ops) != NULL;
	r.repair = BPF_CORE_READ_BITFIELD_PROBED(tp, repair);
	r.reader_options = (reader_rcvlowat_set((struct sock *)tp) ? READER_OPT_RCVLOWAT : 0) |
			   (reader_peek_off_set((struct sock *)tp) ? READER_OPT_PEEK_OFF : 0) |
			   (reader_inq_set((struct sock *)tp) ? READER_OPT_INQ : 0) |
			   (reader_rx_timestamps_set((struct sock *)tp) ? READER_OPT_RX_TSTAMP : 0);
	r.writer_options = (writer_zerocopy_set(tp) ? WRITER_OPT_ZEROCOPY : 0) |
			   (writer_tx_timestamps_set(tp) ? WRITER_OPT_TX_TSTAMP : 0);
	r.in_sockmap = ((unsigned long)BPF_CORE_READ(tp, inet_conn.icsk_inet.sk.sk_user_data) & SK_USER_DATA_PSOCK) != 0;
	st = bpf_sk_storage_get(&sock_state, tp, 0, 0);
	if (st) {
		r.has_state = 1;
		r.state = *st;
	}
	emit(ctx->meta->seq, &r);
	return 0;
}
