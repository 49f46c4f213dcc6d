// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Another sockmap user, for test/kernel/capacity.test.ts: its sockops puts
 * every established socket of its cgroup in its own sockhash, whose sk_msg
 * program passes everything. Attached to a pod's cgroup, it runs before the
 * datapath (attached to a parent), so the datapath's insert finds the socket
 * held by another map's programs (EBUSY).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u64);
} other_hash SEC(".maps");

SEC("sockops")
int other_sockops(struct bpf_sock_ops *skops)
{
	__u64 key;

	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && skops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	key = bpf_get_socket_cookie(skops);
	bpf_sock_hash_update(skops, &other_hash, &key, BPF_ANY);
	return 1;
}

SEC("sk_msg")
int other_msg(struct sk_msg_md *msg)
{
	return SK_PASS;
}
