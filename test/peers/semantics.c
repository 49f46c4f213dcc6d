// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Socket-semantics peer for the real-kernel matrix (test/kernel/matrix.test.ts):
 * both ends of one TCP case, each playing its side in one I/O style, each
 * printing ONE JSON line of what the application observed (return values,
 * byte counts, sha256 of data, errno names, EOF, a timing class only where
 * the kernel makes it deterministic; never raw times, pids or ports).
 *
 *   server --listen ADDR --style S            accepts forever, a process per connection
 *   client --connect ADDR --style S --case C --id ID [--repeat N]
 *
 * ADDR is HOST:PORT or [V6]:PORT ("[::]:8080" listens dual-stack).
 * Styles: block (blocking, no timeout), timeo (blocking with SO_RCVTIMEO and
 * SO_SNDTIMEO), poll, select, epoll-lt, epoll-et (O_NONBLOCK, wait then
 * read/write; epoll-et reads until EAGAIN before it waits).
 *
 * Protocol: the client sends a 64-byte header "CASE ID CLIENT-PID", space
 * padded, last byte '\n'; the server answers a 16-byte ack "A SERVER-PID".
 * The pids let a side wake the other with SIGUSR1 (an out-of-band event for
 * the full-buffer cases); they are never reported. Case "probe" ends there:
 * the server has sent once, so the datapath learns its listener (I6).
 * Build: cc -O2 -Wall -Wextra -Werror -o build/test/semantics test/peers/semantics.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---------- sha256 (FIPS 180-4), small and slow enough ---------- */
struct sha { uint32_t h[8]; uint64_t len; uint8_t buf[64]; size_t n; };
static const uint32_t K[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};
#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
static void sha_block(struct sha *s, const uint8_t *p)
{
	uint32_t w[64], a, b, c, d, e, f, g, h, t1, t2;
	int i;

	for (i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (; i < 64; i++)
		w[i] = w[i - 16] + (ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3)) + w[i - 7] +
		       (ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10));
	a = s->h[0]; b = s->h[1]; c = s->h[2]; d = s->h[3]; e = s->h[4]; f = s->h[5]; g = s->h[6]; h = s->h[7];
	for (i = 0; i < 64; i++) {
		t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
		t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
		h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
	}
	s->h[0] += a; s->h[1] += b; s->h[2] += c; s->h[3] += d; s->h[4] += e; s->h[5] += f; s->h[6] += g; s->h[7] += h;
}
static void sha_init(struct sha *s)
{
	static const uint32_t iv[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
					0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
	memcpy(s->h, iv, sizeof(iv));
	s->len = 0;
	s->n = 0;
}
static void sha_update(struct sha *s, const void *data, size_t len)
{
	const uint8_t *p = data;

	s->len += len;
	if (s->n) {
		while (len && s->n < 64) { s->buf[s->n++] = *p++; len--; }
		if (s->n < 64)
			return;
		sha_block(s, s->buf);
		s->n = 0;
	}
	for (; len >= 64; p += 64, len -= 64)
		sha_block(s, p);
	memcpy(s->buf, p, len);
	s->n = len;
}
static void sha_hex(struct sha *s, char out[65])
{
	uint64_t bits = s->len * 8;
	uint8_t pad = 0x80, z = 0, l[8];
	int i;

	sha_update(s, &pad, 1);
	while (s->n != 56)
		sha_update(s, &z, 1);
	for (i = 0; i < 8; i++)
		l[i] = (uint8_t)(bits >> (56 - 8 * i));
	sha_update(s, l, 8);
	for (i = 0; i < 8; i++)
		sprintf(out + 8 * i, "%08x", s->h[i]);
}

/* ---------- data: a little-endian u32 counter stream from a seed ---------- */
/* Byte p of stream `seed` is byte p%4 of (seed + p/4) as LE u32; Python: array('I', range(seed, ...)). */
static void pattern(uint8_t *buf, uint64_t off, size_t n, uint32_t seed)
{
	for (size_t i = 0; i < n; i++) {
		uint64_t p = off + i;
		uint32_t w = seed + (uint32_t)(p / 4);
		buf[i] = (uint8_t)(w >> (8 * (p % 4)));
	}
}
static uint8_t *pattern_alloc(size_t n, uint32_t seed)
{
	uint8_t *b = malloc(n ? n : 1);

	if (!b)
		abort();
	pattern(b, 0, n, seed);
	return b;
}

/* ---------- observations: one JSON object ---------- */
static char obs[16384];
static size_t obs_len;
static void obs_raw(const char *key, const char *fmt, ...)
{
	va_list ap;

	if (obs_len >= sizeof(obs) - 256)
		return;
	obs_len += (size_t)snprintf(obs + obs_len, sizeof(obs) - obs_len, "%s\"%s\":", obs_len ? "," : "", key);
	va_start(ap, fmt);
	obs_len += (size_t)vsnprintf(obs + obs_len, sizeof(obs) - obs_len, fmt, ap);
	va_end(ap);
}
static void obs_int(const char *key, long long v) { obs_raw(key, "%lld", v); }
static void obs_str(const char *key, const char *v) { obs_raw(key, "\"%s\"", v); }
static void obs_bool(const char *key, int v) { obs_raw(key, "%s", v ? "true" : "false"); }

static const char *errname(int e)
{
	switch (e) {
#define E(x) case x: return #x;
	E(EAGAIN) E(EINTR) E(ECONNRESET) E(EPIPE) E(ENOTCONN) E(ETIMEDOUT) E(ECONNREFUSED) E(EINVAL)
	E(EBADF) E(ECONNABORTED) E(EHOSTUNREACH) E(ENETUNREACH) E(ESHUTDOWN) E(ENOBUFS) E(ENOMEM)
#undef E
	}
	static char buf[32];
	snprintf(buf, sizeof(buf), "E%d", e);
	return buf;
}
/* A call's result as observed: its count, or the errno name. */
static void obs_rc(const char *key, ssize_t rc)
{
	if (rc < 0)
		obs_str(key, errname(errno));
	else
		obs_int(key, rc);
}

static void die(const char *what)
{
	fprintf(stderr, "semantics: %s: %s\n", what, strerror(errno));
	exit(1);
}

static double now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

/* ---------- I/O styles ---------- */
enum { ST_BLOCK, ST_TIMEO, ST_POLL, ST_SELECT, ST_EPOLL_LT, ST_EPOLL_ET };
static const char *style_names[] = { "block", "timeo", "poll", "select", "epoll-lt", "epoll-et" };
static int style;
static int efd = -1;
#define NONBLOCKING (style >= ST_POLL)
#define TIMEO_CASE_MS 300   /* the timeout a *timeo case measures */
#define TIMEO_IDLE_MS 10000 /* the timeo style's timeout elsewhere: never reached */

static void set_timeouts(int fd, int rcv_ms, int snd_ms)
{
	struct timeval r = { rcv_ms / 1000, (rcv_ms % 1000) * 1000 }, s = { snd_ms / 1000, (snd_ms % 1000) * 1000 };

	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &r, sizeof(r)) || setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &s, sizeof(s)))
		die("SO_RCVTIMEO/SO_SNDTIMEO");
}

/* After socket() (client) or accept (server): the style's per-socket setup. */
static void conn_init(int fd)
{
	struct epoll_event ev = { 0 };

	if (NONBLOCKING && !(fcntl(fd, F_GETFL) & O_NONBLOCK))
		die("socket is not O_NONBLOCK");
	if (style == ST_EPOLL_LT || style == ST_EPOLL_ET) {
		efd = epoll_create1(EPOLL_CLOEXEC);
		if (efd < 0)
			die("epoll_create1");
		/* et: registered once for both directions; lt: switched per wait. */
		ev.events = style == ST_EPOLL_ET ? EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET : EPOLLIN | EPOLLRDHUP;
		ev.data.fd = fd;
		if (epoll_ctl(efd, EPOLL_CTL_ADD, fd, &ev))
			die("epoll_ctl add");
	}
}

/* Waits until fd may be read (out=0) or written (out=1) as the style does; -1 with errno on EINTR. */
static int wait_io(int fd, int out)
{
	struct epoll_event ev = { 0 };
	struct pollfd p = { fd, (short)(out ? POLLOUT : POLLIN), 0 };
	fd_set set;
	int r;

	switch (style) {
	case ST_POLL:
		r = poll(&p, 1, -1);
		return r < 0 ? -1 : 0;
	case ST_SELECT:
		FD_ZERO(&set);
		FD_SET(fd, &set);
		r = select(fd + 1, out ? NULL : &set, out ? &set : NULL, NULL, NULL);
		return r < 0 ? -1 : 0;
	case ST_EPOLL_LT:
		ev.events = out ? EPOLLOUT : EPOLLIN | EPOLLRDHUP;
		ev.data.fd = fd;
		if (epoll_ctl(efd, EPOLL_CTL_MOD, fd, &ev))
			die("epoll_ctl mod");
		/* fallthrough */
	case ST_EPOLL_ET:
		r = epoll_wait(efd, &ev, 1, -1);
		return r < 0 ? -1 : 0;
	}
	return 0;
}

/* One read as the style does it; -1 with errno (EINTR from a wait included). */
static ssize_t rd(int fd, void *buf, size_t n, int flags)
{
	ssize_t r;

	if (!NONBLOCKING)
		return recv(fd, buf, n, flags);
	for (;;) {
		if (style != ST_EPOLL_ET && wait_io(fd, 0))
			return -1;
		r = recv(fd, buf, n, flags);
		if (r >= 0 || errno != EAGAIN)
			return r;
		if (style == ST_EPOLL_ET && wait_io(fd, 0))
			return -1;
	}
}

/* One write as the style does it. */
static ssize_t wr(int fd, const void *buf, size_t n)
{
	ssize_t r;

	for (;;) {
		r = send(fd, buf, n, MSG_NOSIGNAL);
		if (!NONBLOCKING || r >= 0 || errno != EAGAIN)
			return r;
		if (wait_io(fd, 1))
			return -1;
	}
}

static ssize_t wr_all(int fd, const void *buf, size_t n)
{
	size_t done = 0;
	ssize_t r;

	while (done < n) {
		r = wr(fd, (const uint8_t *)buf + done, n - done);
		if (r < 0)
			return -1;
		done += (size_t)r;
	}
	return (ssize_t)done;
}

/* Reads exactly n bytes (or to EOF / an error): returns what it got, errno set on error. */
static ssize_t rd_exact(int fd, void *buf, size_t n)
{
	size_t got = 0;
	ssize_t r;

	while (got < n) {
		r = rd(fd, (uint8_t *)buf + got, n - got, 0);
		if (r < 0)
			return got ? (ssize_t)got : -1;
		if (r == 0)
			break;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

/* Reads to EOF, hashing; records <pfx>Bytes, <pfx>Sha and <pfx>End ("eof" or an errno name). */
static uint64_t read_to_end(int fd, const char *pfx, char sha_out[65])
{
	static uint8_t buf[1 << 16];
	struct sha s;
	uint64_t total = 0;
	char key[64], hex[65];
	ssize_t r;

	sha_init(&s);
	for (;;) {
		r = rd(fd, buf, sizeof(buf), 0);
		if (r <= 0)
			break;
		sha_update(&s, buf, (size_t)r);
		total += (uint64_t)r;
	}
	snprintf(key, sizeof(key), "%sEnd", pfx);
	if (r == 0)
		obs_str(key, "eof");
	else
		obs_str(key, errname(errno));
	sha_hex(&s, hex);
	if (sha_out)
		memcpy(sha_out, hex, 65);
	snprintf(key, sizeof(key), "%sBytes", pfx);
	obs_int(key, (long long)total);
	snprintf(key, sizeof(key), "%sSha", pfx);
	obs_str(key, hex);
	return total;
}

static char *sha_of(const void *p, size_t n, char out[65])
{
	struct sha s;

	sha_init(&s);
	sha_update(&s, p, n);
	sha_hex(&s, out);
	return out;
}

static void rst_close(int fd)
{
	struct linger l = { 1, 0 };

	if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l)))
		die("SO_LINGER");
	obs_rc("rstClose", close(fd));
}

static int inq(int fd)
{
	int n = -1;

	if (ioctl(fd, SIOCINQ, &n))
		return -1;
	return n;
}

/* Polls SIOCINQ (a state, not an event) until it reaches want; bounded. */
static int wait_inq(int fd, int want)
{
	int n = inq(fd);

	for (int i = 0; i < 10000 && n < want; i++) {
		usleep(500);
		n = inq(fd);
	}
	return n;
}

static void wait_sigusr1(void)
{
	sigset_t set;
	int sig;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigwait(&set, &sig);
}

static void block_sigusr1(void)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigprocmask(SIG_BLOCK, &set, NULL);
}

/*
 * The writer of a full-buffer case: fills the path until the kernel says
 * it is full (MSG_DONTWAIT, which leaves the file's flags alone; the timeo
 * style instead blocks until SO_SNDTIMEO expires: sndtimeo), wakes the
 * paused reader, writes 1 MiB more in its style, half-closes, and checks the
 * reader's "<bytes> <sha>" reply against what it sent. Records only what is
 * deterministic: whether the timeout was honoured, the phase-2 write, and
 * whether every byte arrived.
 */
#define CHUNK (64 << 10)
#define PHASE2 (1 << 20)
static void full_writer(int fd, pid_t reader)
{
	static uint8_t chunk[CHUNK];
	uint8_t *p2 = malloc(PHASE2);
	uint64_t sent = 0;
	struct sha s;
	char hex[65], reply[160];
	ssize_t r;
	int timed = style == ST_TIMEO;

	if (!p2)
		abort();
	sha_init(&s);
	if (timed)
		set_timeouts(fd, TIMEO_IDLE_MS, TIMEO_CASE_MS);
	for (;;) {
		double t0 = now_ms();

		pattern(chunk, sent, CHUNK, 21);
		r = send(fd, chunk, CHUNK, MSG_NOSIGNAL | (timed ? 0 : MSG_DONTWAIT));
		if (r < 0) {
			obs_str("fillEnd", errname(errno));
			if (timed)
				obs_str("fillTimeout", now_ms() - t0 >= TIMEO_CASE_MS - 5 ? "after" : "before");
			break;
		}
		sha_update(&s, chunk, (size_t)r);
		sent += (uint64_t)r;
		if (sent > (1ull << 30)) {
			obs_str("fillEnd", "never full");
			break;
		}
	}
	if (timed)
		set_timeouts(fd, TIMEO_IDLE_MS, TIMEO_IDLE_MS);
	kill(reader, SIGUSR1);
	pattern(p2, sent, PHASE2, 21);
	r = wr(fd, p2, PHASE2);
	/* A blocking send returns only once all of it is queued. */
	if (!NONBLOCKING)
		obs_rc("phase2Write", r);
	if (r > 0) {
		sha_update(&s, p2, (size_t)r);
		sent += (uint64_t)r;
		if ((size_t)r < PHASE2 && wr_all(fd, p2 + r, PHASE2 - (size_t)r) > 0) {
			sha_update(&s, p2 + r, PHASE2 - (size_t)r);
			sent += PHASE2 - (size_t)r;
		}
	}
	obs_rc("shutdown", shutdown(fd, SHUT_WR));
	sha_hex(&s, hex);
	r = rd_exact(fd, reply, sizeof(reply) - 1);
	reply[r > 0 ? r : 0] = 0;
	{
		char want[160];

		snprintf(want, sizeof(want), "%llu %s\n", (unsigned long long)sent, hex);
		obs_bool("allArrived", strcmp(reply, want) == 0);
	}
	free(p2);
}

/* The paused reader: waits for the writer's signal, reads to EOF, replies "<bytes> <sha>". */
static void full_reader(int fd)
{
	char hex[65], reply[160];
	uint64_t n;

	wait_sigusr1();
	/* Bytes and sha vary with buffer sizes: reported to the writer, not recorded. */
	{
		size_t keep = obs_len;

		n = read_to_end(fd, "in", hex);
		obs_len = keep;
		obs[obs_len] = 0;
	}
	obs_str("readerEnd", "done");
	snprintf(reply, sizeof(reply), "%llu %s\n", (unsigned long long)n, hex);
	/* Its length varies with the byte count's digits: only whether it all went out. */
	obs_bool("replied", wr_all(fd, reply, strlen(reply)) == (ssize_t)strlen(reply));
}

/* A timeout read (the timeo style's SO_RCVTIMEO): EAGAIN only after the timeout. */
static void timeout_read(int fd)
{
	char c;
	double t0;
	ssize_t r;

	set_timeouts(fd, TIMEO_CASE_MS, TIMEO_IDLE_MS);
	t0 = now_ms();
	r = recv(fd, &c, 1, 0);
	obs_rc("timedRead", r);
	obs_str("timedReadReturned", now_ms() - t0 >= TIMEO_CASE_MS - 5 ? "after-timeout" : "before-timeout");
	set_timeouts(fd, TIMEO_IDLE_MS, TIMEO_IDLE_MS);
	obs_rc("nudge", wr_all(fd, "t", 1));
}

/* ---------- signals ---------- */
static volatile sig_atomic_t signals_seen;
static int signal_fd = -1;
static void on_alarm(int sig)
{
	int e = errno;

	(void)sig;
	signals_seen++;
	/* Tells the server to send now: write() is async-signal-safe. */
	if (send(signal_fd, "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT) != 1)
		signals_seen += 100;
	errno = e;
}

static void interrupted_read(int fd, int restart)
{
	struct sigaction sa = { 0 };
	struct itimerval it = { { 0, 0 }, { 0, 200000 } };
	uint8_t buf[64];
	ssize_t r;

	signal_fd = fd;
	sa.sa_handler = on_alarm;
	sa.sa_flags = restart ? SA_RESTART : 0;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
	setitimer(ITIMER_REAL, &it, NULL);
	r = rd(fd, buf, 10, 0);
	obs_rc("firstRead", r);
	if (r < 0) {
		r = rd_exact(fd, buf, 10);
		obs_rc("secondRead", r);
	} else if (r < 10) {
		r = rd_exact(fd, buf + r, 10 - (size_t)r);
	}
	obs_int("signals", signals_seen);
}

/* ---------- cases ---------- */
#define SMALL 1000

static void case_client(int fd, const char *name, pid_t spid)
{
	uint8_t buf[4096];
	char hex[65], hex2[65];
	ssize_t r;

	if (!strcmp(name, "probe")) {
		return;
	} else if (!strcmp(name, "eof-s")) {
		read_to_end(fd, "in", NULL);
		obs_rc("readAfterEof", rd(fd, buf, 1, 0));
	} else if (!strcmp(name, "eof-c")) {
		uint8_t *d = pattern_alloc(SMALL, 2);

		obs_rc("sent", wr_all(fd, d, SMALL));
		obs_rc("close", close(fd));
		free(d);
	} else if (!strcmp(name, "halfclose-c")) {
		uint8_t *d = pattern_alloc(3000, 3);

		obs_rc("sent", wr_all(fd, d, 3000));
		obs_rc("shutdown", shutdown(fd, SHUT_WR));
		read_to_end(fd, "reply", NULL);
		obs_rc("readAfterEof", rd(fd, buf, 1, 0));
		free(d);
	} else if (!strcmp(name, "halfclose-s")) {
		uint8_t *d = pattern_alloc(500, 5);

		read_to_end(fd, "in", NULL);
		obs_rc("sent", wr_all(fd, d, 500));
		obs_rc("close", close(fd));
		free(d);
	} else if (!strcmp(name, "shutrd")) {
		struct tcp_info ti;
		socklen_t len;
		uint64_t total = 0;
		int i;

		obs_rc("shutdownRd", shutdown(fd, SHUT_RD));
		obs_rc("readAfterShutRd", rd(fd, buf, sizeof(buf), 0));
		obs_rc("go", wr_all(fd, "g", 1));
		/* The server sends 100 bytes and closes: wait for its FIN (a state, polled). */
		for (i = 0; i < 10000; i++) {
			len = sizeof(ti);
			if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 && ti.tcpi_state == TCP_CLOSE_WAIT)
				break;
			usleep(500);
		}
		obs_bool("peerFinSeen", i < 10000);
		obs_int("inqAfterFin", inq(fd));
		for (;;) {
			r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
			if (r <= 0)
				break;
			total += (uint64_t)r;
		}
		obs_int("bytesAfterShutRd", (long long)total);
		obs_rc("lastRead", r);
	} else if (!strcmp(name, "rst-c")) {
		obs_rc("w", wr_all(fd, "w", 1));
		obs_rc("k", rd_exact(fd, buf, 1));
		rst_close(fd);
	} else if (!strcmp(name, "rst-s")) {
		obs_rc("w", wr_all(fd, "w", 1));
		read_to_end(fd, "in", NULL);
	} else if (!strcmp(name, "close-unread-s")) {
		uint8_t *d = pattern_alloc(SMALL, 7);

		obs_rc("sent", wr_all(fd, d, SMALL));
		read_to_end(fd, "in", NULL);
		free(d);
	} else if (!strcmp(name, "close-unread-c")) {
		obs_int("inqBeforeClose", wait_inq(fd, SMALL));
		obs_rc("close", close(fd));
	} else if (!strcmp(name, "full-c2s")) {
		full_writer(fd, spid);
	} else if (!strcmp(name, "full-s2c")) {
		full_reader(fd);
	} else if (!strcmp(name, "big")) {
		size_t n = (16u << 20) + 3;
		uint8_t *d = pattern_alloc(n, 8);

		r = wr(fd, d, n);
		if (!NONBLOCKING)
			obs_rc("singleWrite", r);
		if (r > 0 && (size_t)r < n)
			r = wr_all(fd, d + r, n - (size_t)r);
		obs_str("sentSha", sha_of(d, n, hex));
		obs_rc("shutdown", shutdown(fd, SHUT_WR));
		read_to_end(fd, "in", NULL);
		free(d);
	} else if (!strcmp(name, "waitall")) {
		uint8_t in[10000];
		uint8_t *d = pattern_alloc(10000, 10);
		size_t got = 0;
		int i;

		r = rd(fd, in, sizeof(in), MSG_WAITALL);
		if (!NONBLOCKING)
			obs_rc("waitallRead", r);
		if (r > 0)
			got = (size_t)r;
		if (r > 0 && got < sizeof(in))
			got += (size_t)rd_exact(fd, in + got, sizeof(in) - got);
		obs_int("inBytes", (long long)got);
		obs_str("inSha", sha_of(in, got, hex));
		for (i = 0; i < 10; i++)
			wr_all(fd, d + 1000 * i, 1000);
		read_to_end(fd, "end", NULL);
		free(d);
	} else if (!strcmp(name, "peek")) {
		uint8_t p[4096];

		if (!NONBLOCKING) {
			r = recv(fd, p, SMALL, MSG_PEEK | MSG_WAITALL);
			obs_rc("peekWaitall", r);
		} else {
			for (int i = 0; i < 10000; i++) {
				r = rd(fd, p, sizeof(p), MSG_PEEK);
				if (r < 0 || r >= SMALL)
					break;
				if (style != ST_EPOLL_ET)
					usleep(500); /* still readable: spaced re-peeks until all 1000 are there */
			}
			obs_rc("peekAll", r);
		}
		r = recv(fd, p, sizeof(p), MSG_PEEK | MSG_DONTWAIT);
		obs_rc("peekAgain", r);
		obs_str("peekSha", sha_of(p, r > 0 ? (size_t)r : 0, hex));
		obs_int("inqAfterPeek", inq(fd));
		r = rd(fd, buf, sizeof(buf), 0);
		obs_rc("read", r);
		obs_str("readSha", sha_of(buf, r > 0 ? (size_t)r : 0, hex2));
		obs_int("inqAfterRead", inq(fd));
		obs_rc("done", wr_all(fd, "d", 1));
		read_to_end(fd, "end", NULL);
	} else if (!strcmp(name, "fionread")) {
		/* Waits in its style (et: none, it would miss an edge already taken), then polls SIOCINQ. */
		if (NONBLOCKING && style != ST_EPOLL_ET && wait_io(fd, 0))
			obs_str("wait", errname(errno));
		obs_int("inqReached", wait_inq(fd, SMALL));
		r = rd_exact(fd, buf, SMALL);
		obs_rc("read", r);
		obs_str("readSha", sha_of(buf, r > 0 ? (size_t)r : 0, hex));
		obs_int("inqAfterRead", inq(fd));
		obs_rc("done", wr_all(fd, "d", 1));
		read_to_end(fd, "end", NULL);
	} else if (!strcmp(name, "rcvtimeo-c")) {
		timeout_read(fd);
		r = rd_exact(fd, buf, 10);
		obs_rc("afterNudge", r);
		obs_rc("shutdown", shutdown(fd, SHUT_WR));
		read_to_end(fd, "end", NULL);
	} else if (!strcmp(name, "rcvtimeo-s")) {
		obs_rc("nudge", rd_exact(fd, buf, 1));
		obs_rc("sent", wr_all(fd, "0123456789", 10));
		read_to_end(fd, "end", NULL);
	} else if (!strcmp(name, "eintr") || !strcmp(name, "restart")) {
		interrupted_read(fd, !strcmp(name, "restart"));
		obs_rc("shutdown", shutdown(fd, SHUT_WR));
		read_to_end(fd, "end", NULL);
	} else {
		obs_str("error", "unknown case");
	}
}

static void case_server(int fd, const char *name, pid_t cpid)
{
	uint8_t buf[4096];
	char hex[65];
	ssize_t r;

	if (!strcmp(name, "probe")) {
		return;
	} else if (!strcmp(name, "eof-s")) {
		uint8_t *d = pattern_alloc(SMALL, 1);

		obs_rc("sent", wr_all(fd, d, SMALL));
		obs_rc("close", close(fd));
		free(d);
	} else if (!strcmp(name, "eof-c")) {
		read_to_end(fd, "in", NULL);
		obs_rc("readAfterEof", rd(fd, buf, 1, 0));
	} else if (!strcmp(name, "halfclose-c")) {
		uint8_t *d = pattern_alloc(2000, 4);

		read_to_end(fd, "in", hex);
		obs_rc("replyHash", wr_all(fd, hex, 64));
		obs_rc("reply", wr_all(fd, d, 2000));
		obs_rc("close", close(fd));
		free(d);
	} else if (!strcmp(name, "halfclose-s")) {
		uint8_t *d = pattern_alloc(2000, 6);

		obs_rc("sent", wr_all(fd, d, 2000));
		obs_rc("shutdown", shutdown(fd, SHUT_WR));
		read_to_end(fd, "in", NULL);
		free(d);
	} else if (!strcmp(name, "shutrd")) {
		uint8_t *d = pattern_alloc(100, 9);

		obs_rc("go", rd_exact(fd, buf, 1));
		obs_rc("sent", wr_all(fd, d, 100));
		obs_rc("close", close(fd));
		free(d);
	} else if (!strcmp(name, "rst-c")) {
		obs_rc("w", rd_exact(fd, buf, 1));
		obs_rc("k", wr_all(fd, "k", 1));
		read_to_end(fd, "in", NULL);
	} else if (!strcmp(name, "rst-s")) {
		obs_rc("w", rd_exact(fd, buf, 1));
		rst_close(fd);
	} else if (!strcmp(name, "close-unread-s")) {
		obs_int("inqBeforeClose", wait_inq(fd, SMALL));
		obs_rc("close", close(fd));
	} else if (!strcmp(name, "close-unread-c")) {
		uint8_t *d = pattern_alloc(SMALL, 11);

		obs_rc("sent", wr_all(fd, d, SMALL));
		read_to_end(fd, "in", NULL);
		free(d);
	} else if (!strcmp(name, "full-c2s")) {
		full_reader(fd);
	} else if (!strcmp(name, "full-s2c")) {
		full_writer(fd, cpid);
	} else if (!strcmp(name, "big")) {
		size_t n = (16u << 20) + 5;
		uint8_t *d;

		read_to_end(fd, "in", NULL);
		d = pattern_alloc(n, 12);
		r = wr(fd, d, n);
		if (!NONBLOCKING)
			obs_rc("singleWrite", r);
		if (r > 0 && (size_t)r < n)
			r = wr_all(fd, d + r, n - (size_t)r);
		obs_str("sentSha", sha_of(d, n, hex));
		obs_rc("close", close(fd));
		free(d);
	} else if (!strcmp(name, "waitall")) {
		uint8_t in[10000];
		uint8_t *d = pattern_alloc(10000, 13);
		size_t got = 0;
		int i;

		for (i = 0; i < 10; i++)
			wr_all(fd, d + 1000 * i, 1000);
		r = rd(fd, in, sizeof(in), MSG_WAITALL);
		if (!NONBLOCKING)
			obs_rc("waitallRead", r);
		if (r > 0)
			got = (size_t)r;
		if (r > 0 && got < sizeof(in))
			got += (size_t)rd_exact(fd, in + got, sizeof(in) - got);
		obs_int("inBytes", (long long)got);
		obs_str("inSha", sha_of(in, got, hex));
		obs_rc("close", close(fd));
		free(d);
	} else if (!strcmp(name, "peek") || !strcmp(name, "fionread")) {
		uint8_t *d = pattern_alloc(SMALL, 14);

		obs_rc("sent", wr_all(fd, d, SMALL));
		obs_rc("done", rd_exact(fd, buf, 1));
		obs_rc("close", close(fd));
		free(d);
	} else if (!strcmp(name, "rcvtimeo-c")) {
		obs_rc("nudge", rd_exact(fd, buf, 1));
		obs_rc("sent", wr_all(fd, "0123456789", 10));
		read_to_end(fd, "in", NULL);
		obs_rc("close", close(fd));
	} else if (!strcmp(name, "rcvtimeo-s")) {
		timeout_read(fd);
		r = rd_exact(fd, buf, 10);
		obs_rc("afterNudge", r);
		obs_rc("close", close(fd));
	} else if (!strcmp(name, "eintr") || !strcmp(name, "restart")) {
		obs_rc("x", rd_exact(fd, buf, 1));
		obs_rc("sent", wr_all(fd, "0123456789", 10));
		read_to_end(fd, "in", NULL);
		obs_rc("close", close(fd));
	} else {
		obs_str("error", "unknown case");
	}
}

/* ---------- roles ---------- */
static void parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[128];
	const char *colon = strrchr(s, ':');
	struct addrinfo hints = { 0 }, *ai;
	size_t hl;

	if (!colon)
		die("address without port");
	hl = (size_t)(colon - s);
	if (s[0] == '[') {
		s++;
		hl -= 2;
	}
	if (hl >= sizeof(host))
		die("address too long");
	memcpy(host, s, hl);
	host[hl] = 0;
	hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(host, colon + 1, &hints, &ai))
		die("getaddrinfo");
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	*len = ai->ai_addrlen;
	freeaddrinfo(ai);
}

static void emit(const char *role, const char *id, const char *name)
{
	char line[sizeof(obs) + 512];
	int n;

	obs[obs_len] = 0;
	n = snprintf(line, sizeof(line), "{\"role\":\"%s\",\"id\":\"%s\",\"case\":\"%s\",\"style\":\"%s\",\"obs\":{%s}}\n",
		     role, id, name, style_names[style], obs);
	/* One write per line: lines of forked servers never interleave. */
	if (write(1, line, (size_t)n) != n)
		exit(1);
}

static void serve_conn(int fd)
{
	char hdr[65], name[64] = "", id[64] = "", ack[16];
	long cpid = 0;
	ssize_t r;

	conn_init(fd);
	if (style == ST_TIMEO)
		set_timeouts(fd, TIMEO_IDLE_MS, TIMEO_IDLE_MS);
	r = rd_exact(fd, hdr, 64);
	if (r != 64)
		exit(0); /* a connect probe, not a case */
	hdr[64] = 0;
	if (sscanf(hdr, "%63s %63s %ld", name, id, &cpid) != 3)
		exit(2);
	memset(ack, ' ', sizeof(ack));
	{
		char tmp[17];
		int n = snprintf(tmp, sizeof(tmp), "A %ld", (long)getpid());

		memcpy(ack, tmp, (size_t)n);
	}
	obs_rc("ack", wr_all(fd, ack, sizeof(ack)));
	case_server(fd, name, (pid_t)cpid);
	emit("server", id, name);
}

static void server(const char *addr)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int lfd, one = 1, zero = 0, fd;

	parse_addr(addr, &ss, &len);
	lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		die("socket");
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss.ss_family == AF_INET6)
		setsockopt(lfd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	if (bind(lfd, (struct sockaddr *)&ss, len) || listen(lfd, 128))
		die("bind/listen");
	signal(SIGCHLD, SIG_IGN);
	block_sigusr1();
	printf("{\"event\":\"ready\",\"style\":\"%s\"}\n", style_names[style]);
	fflush(stdout);
	for (;;) {
		fd = accept4(lfd, NULL, NULL, NONBLOCKING ? SOCK_NONBLOCK : 0);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			die("accept");
		}
		if (fork() == 0) {
			close(lfd);
			serve_conn(fd);
			_exit(0);
		}
		close(fd);
	}
}

static void client_once(const char *addr, const char *name, const char *id)
{
	struct sockaddr_storage ss;
	socklen_t len, elen;
	char hdr[65], ack[17];
	int fd, err = 0;
	ssize_t r;

	obs_len = 0;
	obs[0] = 0;
	efd = -1;
	signals_seen = 0;
	parse_addr(addr, &ss, &len);
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | (NONBLOCKING ? SOCK_NONBLOCK : 0), 0);
	if (fd < 0)
		die("socket");
	conn_init(fd);
	if (connect(fd, (struct sockaddr *)&ss, len)) {
		if (!NONBLOCKING || errno != EINPROGRESS)
			die("connect");
		wait_io(fd, 1);
		elen = sizeof(err);
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen);
		if (err) {
			errno = err;
			die("connect (async)");
		}
	}
	if (style == ST_TIMEO)
		set_timeouts(fd, TIMEO_IDLE_MS, TIMEO_IDLE_MS);
	memset(hdr, ' ', 64);
	{
		char tmp[65];
		int n = snprintf(tmp, sizeof(tmp), "%s %s %ld", name, id, (long)getpid());

		memcpy(hdr, tmp, (size_t)n);
	}
	hdr[63] = '\n';
	obs_rc("hdr", wr_all(fd, hdr, 64));
	r = rd_exact(fd, ack, 16);
	obs_rc("ack", r);
	ack[r > 0 ? r : 0] = 0;
	case_client(fd, name, (pid_t)atol(ack + 2));
	emit("client", id, name);
	if (efd >= 0)
		close(efd);
	close(fd); /* a second close after the case's own is EBADF, harmless */
}

int main(int argc, char **argv)
{
	const char *role = argc > 1 ? argv[1] : "", *addr = NULL, *name = NULL, *id = "0";
	int repeat = 1, i;

	signal(SIGPIPE, SIG_IGN);
	for (i = 2; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--listen") || !strcmp(argv[i], "--connect"))
			addr = argv[i + 1];
		else if (!strcmp(argv[i], "--style")) {
			for (style = 0; style < (int)(sizeof(style_names) / sizeof(*style_names)); style++)
				if (!strcmp(style_names[style], argv[i + 1]))
					break;
			if (style == (int)(sizeof(style_names) / sizeof(*style_names))) {
				fprintf(stderr, "semantics: unknown style %s\n", argv[i + 1]);
				return 2;
			}
		} else if (!strcmp(argv[i], "--case"))
			name = argv[i + 1];
		else if (!strcmp(argv[i], "--id"))
			id = argv[i + 1];
		else if (!strcmp(argv[i], "--repeat"))
			repeat = atoi(argv[i + 1]);
	}
	if (!addr || (strcmp(role, "server") && strcmp(role, "client")) || (!strcmp(role, "client") && !name)) {
		fprintf(stderr, "usage: semantics server --listen ADDR --style S | client --connect ADDR --style S --case C [--id ID] [--repeat N]\n");
		return 2;
	}
	if (!strcmp(role, "server")) {
		server(addr);
		return 0;
	}
	/* The client's pid is in the header: a paused client is woken by SIGUSR1. */
	block_sigusr1();
	for (i = 0; i < repeat; i++) {
		char sub[80];

		if (repeat > 1)
			snprintf(sub, sizeof(sub), "%s.%d", id, i);
		else
			snprintf(sub, sizeof(sub), "%s", id);
		client_once(addr, name, sub);
	}
	return 0;
}
