/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * I8: the socket options that ask of a connection what only TCP gives.
 * Shared by the datapath (sidecar_accel.bpf.c: a direction stays on TCP
 * while one is set) and the connection iterator (conns_iter.bpf.c: which
 * one, for `sidecar-accel conns`), so the two can never disagree.
 * Needs vmlinux.h and bpf_core_read.h first.
 */
#ifndef SIDECAR_ACCEL_SOCK_OPTIONS_H
#define SIDECAR_ACCEL_SOCK_OPTIONS_H

/* Bits of conn_record.reader_options / writer_options (src/conns/records.ts). */
#define READER_OPT_RCVLOWAT 1u    /* SO_RCVLOWAT above 1 */
#define READER_OPT_PEEK_OFF 2u    /* SO_PEEK_OFF set (not -1) */
#define READER_OPT_INQ 4u         /* TCP_INQ */
#define READER_OPT_RX_TSTAMP 8u   /* SO_TIMESTAMP* or SO_TIMESTAMPING's software receive stamps */
#define WRITER_OPT_ZEROCOPY 1u    /* SO_ZEROCOPY */
#define WRITER_OPT_TX_TSTAMP 2u   /* SO_TIMESTAMPING's transmit stamps */

static __always_inline bool sock_flag_set(struct sock *sk, int bit)
{
	return (BPF_CORE_READ(sk, __sk_common.skc_flags) >> bit) & 1;
}

/*
 * The reader's, read with probe reads (the datapath reads its peer by an
 * address). tcp_poll calls a socket with redirected bytes readable whatever
 * its SO_RCVLOWAT; tcp_bpf_recvmsg adds no TCP_INQ or timestamp cmsg to
 * them, and its MSG_PEEK ignores SO_PEEK_OFF (off: -1). sk_tsflags is a u16
 * up to 6.1, a u32 later: read either way.
 */
static __always_inline bool reader_rcvlowat_set(struct sock *sk)
{
	return BPF_CORE_READ(sk, sk_rcvlowat) > 1;
}

static __always_inline bool reader_peek_off_set(struct sock *sk)
{
	return BPF_CORE_READ(sk, sk_peek_off) >= 0;
}

static __always_inline bool reader_inq_set(struct sock *sk)
{
	return BPF_CORE_READ_BITFIELD_PROBED((struct tcp_sock *)sk, recvmsg_inq);
}

static __always_inline bool reader_rx_timestamps_set(struct sock *sk)
{
	if (sock_flag_set(sk, bpf_core_enum_value(enum sock_flags, SOCK_RCVTSTAMP)))
		return true;
	return BPF_CORE_READ_BITFIELD_PROBED(sk, sk_tsflags) & SOF_TIMESTAMPING_SOFTWARE;
}

/*
 * The writer's, by direct loads (the datapath reads its own socket through
 * the BTF pointer of bpf_skc_to_tcp_sock): a redirected MSG_ZEROCOPY send
 * never completes, and a redirected send gets no transmit timestamp, on the
 * error queue.
 */
static __always_inline bool writer_zerocopy_set(struct tcp_sock *tp)
{
	struct sock *sk = &tp->inet_conn.icsk_inet.sk;

	return (sk->__sk_common.skc_flags >> bpf_core_enum_value(enum sock_flags, SOCK_ZEROCOPY)) & 1;
}

static __always_inline bool writer_tx_timestamps_set(struct tcp_sock *tp)
{
	struct sock *sk = &tp->inet_conn.icsk_inet.sk;

	return BPF_CORE_READ_BITFIELD(sk, sk_tsflags) &
	       (SOF_TIMESTAMPING_TX_HARDWARE | SOF_TIMESTAMPING_TX_SOFTWARE |
		SOF_TIMESTAMPING_TX_SCHED | SOF_TIMESTAMPING_TX_ACK);
}

#endif
