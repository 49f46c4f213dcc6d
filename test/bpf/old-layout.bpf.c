/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * A generation as an older build left it pinned, for the generation tests
 * (test/kernel/generations.test.ts): the same maps and program names as
 * bpf/sidecar_accel.bpf.c, with older value layouts. The programs do nothing;
 * only the maps and their BTF matter.
 *   default:           17 counters (136 bytes per CPU) and no enums in BTF,
 *                      as every build before the enums were anchored there.
 *   -DOLD_NAMED_LAYOUT: 5 counters in another order, one unknown to today's
 *                      build, named by an enum accel_counter in BTF.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct accel_conn_key {
	__u64 scope;
	__u32 client_ip[4];
	__u32 client_seq;
	__u32 server_seq;
	__u16 client_port;
	__u8 role;
	__u8 pad0;
	__u32 pad1;
};

struct accel_peer_info {
	__u64 psock;
	__u64 netns_cookie;
};

struct accel_listener_key {
	__u64 netns_cookie;
	__u16 port;
	__u16 pad0;
	__u32 pad1;
};

#ifdef OLD_NAMED_LAYOUT
enum accel_netns_flag { ACCEL_NETNS_ENABLED = 1, ACCEL_NETNS_CROSS_POD = 2 };
enum accel_cfg_flag { ACCEL_CFG_CROSS_POD = 1, ACCEL_CFG_SIDECAR_ONLY = 2 };
enum accel_counter {
	ACCEL_CNT_SOCKETS_SEEN = 0,
	ACCEL_CNT_REDIRECTED_BYTES,
	ACCEL_CNT_SOCKETS_PAIRED,
	ACCEL_CNT_RETIRED_REASON,   /* a counter today's build no longer has */
	ACCEL_CNT_FALLBACK_NO_PEER,
	ACCEL_CNT_MAX
};
struct accel_netns_policy {
	__u32 flags;
	__u32 exclude_count;
	__u16 exclude_ports[16];
	enum accel_netns_flag btf_anchor[0];
};
struct accel_config {
	__u32 flags;
	__u32 keepalive_idle_s;
	__u32 proxy_uid;
	__u32 pad0;
	enum accel_cfg_flag btf_anchor[0];
};
struct accel_counters {
	__u64 v[ACCEL_CNT_MAX];
	enum accel_counter btf_anchor[0];
};
#define OLD_COUNTERS ACCEL_CNT_MAX
#else
#define OLD_COUNTERS 17
struct accel_netns_policy {
	__u32 flags;
	__u32 exclude_count;
	__u16 exclude_ports[16];
};
struct accel_config {
	__u32 flags;
	__u32 keepalive_idle_s;
	__u32 proxy_uid;
	__u32 pad0;
};
struct accel_counters {
	__u64 v[OLD_COUNTERS];
};
#endif

struct sock_state {
	struct accel_conn_key key;
	__u64 netns_cookie;
};

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 1024);
	__type(key, struct accel_conn_key);
	__type(value, __u64);
} sock_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, struct accel_conn_key);
	__type(value, struct accel_peer_info);
} peer_info SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sock_state);
} sock_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
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
	__uint(max_entries, OLD_COUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 64);
	__type(key, struct accel_listener_key);
	__type(value, __u32);
} listener_style SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 64);
	__type(key, __u64);
	__type(value, struct accel_counters);
} netns_counters SEC(".maps");

/* The maps are referenced so that they stay in the object. */
SEC("sockops")
int accel_sockops(struct bpf_sock_ops *skops)
{
	__u32 k = 0;
	__u64 k64 = 0;
	struct accel_conn_key ck = {};
	struct accel_listener_key lk = {};
	struct bpf_sock *sk = skops->sk;
	int used = 0;

	used += bpf_map_lookup_elem(&accel_cfg, &k) != 0;
	used += bpf_map_lookup_elem(&counters, &k) != 0;
	used += bpf_map_lookup_elem(&netns_counters, &k64) != 0;
	used += bpf_map_lookup_elem(&netns_policy, &k64) != 0;
	used += bpf_map_lookup_elem(&peer_info, &ck) != 0;
	used += bpf_map_lookup_elem(&listener_style, &lk) != 0;
	if (sk)
		used += bpf_sk_storage_get(&sock_state, sk, 0, 0) != 0;
	return used >= 0;
}

SEC("sk_msg")
int accel_msg(struct sk_msg_md *msg)
{
	struct accel_conn_key key = {};
	return bpf_msg_redirect_hash(msg, &sock_hash, &key, BPF_F_INGRESS) == SK_PASS ? SK_PASS : SK_PASS;
}

SEC("cgroup_skb/ingress")
int accel_ingress(struct __sk_buff *skb)
{
	return 1;
}
