// rr: the bench's timed request/response client and its echo server, in C so
// that the client's own cost is a few syscalls per request, the same for every
// scenario, and never hides the difference being measured.
//
//   rr server tcp HOST PORT | rr server unix PATH
//   rr sink tcp HOST PORT | rr sink unix PATH
//   rr client tcp HOST PORT | unix PATH  [-c CONNS] [-s SIZE] [-t SECONDS] [--crr | --stream]
//
// Client: CONNS connections, each with one SIZE-byte request in flight; a
// request is done when SIZE bytes have come back. --crr opens a fresh
// connection for every request (connect, request, response, close) and the
// latency includes the connect. Prints one JSON line:
//   {"requests":N,"seconds":S,"p50_us":..,"p90_us":..,"p99_us":..,"errors":E}
// and with --crr also the median of each part of a connection's time:
//   "connect_p50_us" (socket to connected), "request_p50_us" (the request
//   written until the whole answer is read), "close_p50_us" (close()).
// --stream: one connection writes as fast as it may for SECONDS, half-closes
// and waits for the sink's count of what arrived; prints
//   {"bytes":N,"seconds":S,"gbps":G}
// Server: echoes whatever it reads, one epoll loop, until killed. Sink: reads
// and discards, and at each connection's EOF answers with the 8-byte count of
// what it read. Both print "ready" once they listen.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 256

static void die(const char *what) { fprintf(stderr, "rr: %s: %s\n", what, strerror(errno)); exit(1); }
static void usage(void) {
  fprintf(stderr, "usage: rr server (tcp HOST PORT | unix PATH)\n"
                  "       rr sink (tcp HOST PORT | unix PATH)\n"
                  "       rr client (tcp HOST PORT | unix PATH) [-c CONNS] [-s SIZE] [-t SECONDS] [--crr | --stream]\n");
  exit(2);
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct addr { struct sockaddr_storage ss; socklen_t len; int family; };

static struct addr parse_addr(int argc, char **argv, int *i) {
  struct addr a = {0};
  if (*i >= argc) usage();
  if (!strcmp(argv[*i], "unix")) {
    if (*i + 1 >= argc) usage();
    struct sockaddr_un *un = (struct sockaddr_un *)&a.ss;
    un->sun_family = AF_UNIX;
    if (strlen(argv[*i + 1]) >= sizeof(un->sun_path)) { fprintf(stderr, "rr: unix path too long\n"); exit(2); }
    strcpy(un->sun_path, argv[*i + 1]);
    a.len = sizeof(*un);
    a.family = AF_UNIX;
    *i += 2;
  } else if (!strcmp(argv[*i], "tcp")) {
    if (*i + 2 >= argc) usage();
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV}, *res;
    int rc = getaddrinfo(argv[*i + 1], argv[*i + 2], &hints, &res);
    if (rc) { fprintf(stderr, "rr: bad address %s %s: %s\n", argv[*i + 1], argv[*i + 2], gai_strerror(rc)); exit(2); }
    memcpy(&a.ss, res->ai_addr, res->ai_addrlen);
    a.len = res->ai_addrlen;
    a.family = res->ai_family;
    freeaddrinfo(res);
    *i += 3;
  } else {
    usage();
  }
  return a;
}

static void tune(int fd, int family) {
  int one = 1;
  // Nagle would hold the next request behind the previous one's ACK.
  if (family != AF_UNIX) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// Every socket is non-blocking and waits in poll(), as event-driven
// clients and servers do: sidecar-accel pairs only sockets whose reader
// never blocks in recv().
static int wait_fd(int fd, short events) {
  struct pollfd p = {.fd = fd, .events = events};
  for (;;) {
    int r = poll(&p, 1, -1);
    if (r < 0 && errno == EINTR) continue;
    return r < 0 ? -1 : 0;
  }
}

static int write_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) { if (wait_fd(fd, POLLOUT) < 0) return -1; continue; }
    if (w < 0) return -1;
    p += w; n -= (size_t)w;
  }
  return 0;
}

static int read_exact(int fd, char *p, size_t n) {
  while (n) {
    ssize_t r = read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == EAGAIN) { if (wait_fd(fd, POLLIN) < 0) return -1; continue; }
    if (r <= 0) return -1;
    p += r; n -= (size_t)r;
  }
  return 0;
}

static int connect_to(struct addr *a) {
  int fd = socket(a->family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) die("socket");
  if (connect(fd, (struct sockaddr *)&a->ss, a->len) < 0) {
    int err = 0;
    socklen_t len = sizeof err;
    if (errno != EINPROGRESS || wait_fd(fd, POLLOUT) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) { close(fd); return -1; }
  }
  tune(fd, a->family);
  return fd;
}

// ---- server ----

static uint64_t sunk[1 << 16];  // bytes read per connection fd (the sink)

static _Noreturn void run_server(struct addr a, int sink) {
  int lfd = socket(a.family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (lfd < 0) die("socket");
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (a.family == AF_UNIX) unlink(((struct sockaddr_un *)&a.ss)->sun_path);
  if (bind(lfd, (struct sockaddr *)&a.ss, a.len) < 0) die("bind");
  if (listen(lfd, 4096) < 0) die("listen");
  int ep = epoll_create1(EPOLL_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  printf("ready\n");
  fflush(stdout);
  static char buf[1 << 16];
  struct epoll_event evs[64];
  for (;;) {
    int n = epoll_wait(ep, evs, 64, -1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die("epoll_wait");
    for (int k = 0; k < n; k++) {
      int fd = evs[k].data.fd;
      if (fd == lfd) {
        // Non-blocking, as event-driven servers accept: sidecar-accel pairs
        // only sockets whose reader never blocks in recv().
        int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (c < 0) continue;
        if (c < (int)(sizeof sunk / sizeof *sunk)) sunk[c] = 0;
        tune(c, a.family);
        struct epoll_event cev = {.events = EPOLLIN, .data.fd = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c, &cev);
        continue;
      }
      ssize_t r = read(fd, buf, sizeof buf);
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (sink && fd < (int)(sizeof sunk / sizeof *sunk)) {
        if (r > 0) { sunk[fd] += (uint64_t)r; continue; }
        uint64_t n = sunk[fd];
        char be[8];
        for (int k = 0; k < 8; k++) be[k] = (char)(n >> (56 - 8 * k));
        if (r == 0) write_all(fd, be, sizeof be);
        sunk[fd] = 0;
        close(fd);
        continue;
      }
      if (r <= 0) { close(fd); continue; }
      // At most one request per connection is in flight, so waiting here
      // for room never waits on a client that is itself waiting.
      if (write_all(fd, buf, (size_t)r) < 0) close(fd);
    }
  }
}

// ---- client ----

struct lat { uint32_t *v; size_t n, cap; };
static void lat_add(struct lat *l, uint64_t ns) {
  if (l->n == l->cap) {
    l->cap = l->cap ? l->cap * 2 : 1 << 16;
    l->v = realloc(l->v, l->cap * sizeof *l->v);
    if (!l->v) die("realloc");
  }
  l->v[l->n++] = (uint32_t)(ns > UINT32_MAX ? UINT32_MAX : ns);
}
static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}
static double pct_us(struct lat *l, double q) {
  if (!l->n) return -1;
  size_t i = (size_t)(q * (double)(l->n - 1) + 0.5);
  return l->v[i] / 1000.0;
}


struct conn { int fd; size_t got; uint64_t t0; };

static int run_client(struct addr a, int conns, size_t size, double seconds, int crr) {
  char *req = malloc(size), *resp = malloc(size);
  if (!req || !resp) die("malloc");
  memset(req, 'r', size);
  struct lat lat = {0}, connect_lat = {0}, request_lat = {0}, close_lat = {0};
  uint64_t errors = 0;
  uint64_t start = now_ns(), end = start + (uint64_t)(seconds * 1e9);
  if (crr) {
    // One request per connection; the client closes first, as a caller does.
    while (now_ns() < end) {
      uint64_t t0 = now_ns();
      int fd = connect_to(&a);
      uint64_t t1 = now_ns();
      if (fd < 0 || write_all(fd, req, size) < 0 || read_exact(fd, resp, size) < 0) {
        errors++;
        if (fd >= 0) close(fd);
        continue;
      }
      uint64_t t2 = now_ns();
      close(fd);
      uint64_t t3 = now_ns();
      lat_add(&lat, t3 - t0);
      lat_add(&connect_lat, t1 - t0);
      lat_add(&request_lat, t2 - t1);
      lat_add(&close_lat, t3 - t2);
    }
  } else {
    if (conns < 1 || conns > MAX_CONNS) { fprintf(stderr, "rr: 1..%d connections\n", MAX_CONNS); exit(2); }
    struct conn c[MAX_CONNS];
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (int k = 0; k < conns; k++) {
      c[k].fd = connect_to(&a);
      if (c[k].fd < 0) die("connect");
      struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)k};
      epoll_ctl(ep, EPOLL_CTL_ADD, c[k].fd, &ev);
    }
    for (int k = 0; k < conns; k++) {
      c[k].got = 0;
      c[k].t0 = now_ns();
      if (write_all(c[k].fd, req, size) < 0) die("write");
    }
    struct epoll_event evs[MAX_CONNS];
    int open = conns;
    while (open > 0) {
      int n = epoll_wait(ep, evs, MAX_CONNS, 1000);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) die("epoll_wait");
      for (int e = 0; e < n; e++) {
        struct conn *x = &c[evs[e].data.u32];
        ssize_t r = read(x->fd, resp, size - x->got);
        if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (r <= 0) { fprintf(stderr, "rr: connection ended early\n"); exit(1); }
        x->got += (size_t)r;
        if (x->got < size) continue;
        uint64_t t = now_ns();
        lat_add(&lat, t - x->t0);
        if (t >= end) { epoll_ctl(ep, EPOLL_CTL_DEL, x->fd, NULL); close(x->fd); open--; continue; }
        x->got = 0;
        x->t0 = t;
        if (write_all(x->fd, req, size) < 0) die("write");
      }
    }
  }
  double elapsed = (double)(now_ns() - start) / 1e9;
  qsort(lat.v, lat.n, sizeof *lat.v, cmp_u32);
  printf("{\"requests\":%zu,\"seconds\":%.3f,\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_us\":%.2f,\"errors\":%llu",
         lat.n, elapsed, pct_us(&lat, 0.50), pct_us(&lat, 0.90), pct_us(&lat, 0.99), (unsigned long long)errors);
  if (crr) {
    struct lat *parts[] = {&connect_lat, &request_lat, &close_lat};
    for (size_t k = 0; k < 3; k++) qsort(parts[k]->v, parts[k]->n, sizeof *parts[k]->v, cmp_u32);
    printf(",\"connect_p50_us\":%.2f,\"request_p50_us\":%.2f,\"close_p50_us\":%.2f",
           pct_us(&connect_lat, 0.50), pct_us(&request_lat, 0.50), pct_us(&close_lat, 0.50));
  }
  printf("}\n");
  return lat.n ? 0 : 1;
}

// One connection, written as fast as the kernel takes it for `seconds`.
static int run_stream(struct addr a, double seconds) {
  static char block[256 << 10];
  memset(block, 's', sizeof block);
  int fd = connect_to(&a);
  if (fd < 0) die("connect");
  uint64_t start = now_ns(), end = start + (uint64_t)(seconds * 1e9), sent = 0;
  while (now_ns() < end) {
    ssize_t w = write(fd, block, sizeof block);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) { if (wait_fd(fd, POLLOUT) < 0) die("poll"); continue; }
    if (w < 0) die("write");
    sent += (uint64_t)w;
  }
  if (shutdown(fd, SHUT_WR)) die("shutdown");
  unsigned char be[8];
  if (read_exact(fd, (char *)be, sizeof be) < 0) die("read the sink's count");
  double elapsed = (double)(now_ns() - start) / 1e9;
  uint64_t got = 0;
  for (int k = 0; k < 8; k++) got = got << 8 | be[k];
  close(fd);
  if (got != sent) { fprintf(stderr, "rr: sent %llu bytes, the sink read %llu\n", (unsigned long long)sent, (unsigned long long)got); return 1; }
  printf("{\"bytes\":%llu,\"seconds\":%.3f,\"gbps\":%.3f}\n", (unsigned long long)got, elapsed, (double)got * 8 / elapsed / 1e9);
  return 0;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  if (argc < 3) usage();
  int i = 2;
  struct addr a = parse_addr(argc, argv, &i);
  if (!strcmp(argv[1], "server")) run_server(a, 0);
  if (!strcmp(argv[1], "sink")) run_server(a, 1);
  if (strcmp(argv[1], "client")) usage();
  int conns = 1, crr = 0, stream = 0;
  size_t size = 64;
  double seconds = 3;
  for (; i < argc; i++) {
    if (!strcmp(argv[i], "-c") && i + 1 < argc) conns = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-s") && i + 1 < argc) size = (size_t)atol(argv[++i]);
    else if (!strcmp(argv[i], "-t") && i + 1 < argc) seconds = atof(argv[++i]);
    else if (!strcmp(argv[i], "--crr")) crr = 1;
    else if (!strcmp(argv[i], "--stream")) stream = 1;
    else usage();
  }
  if (stream) return run_stream(a, seconds);
  if (size < 1 || size > (1 << 20) || seconds <= 0) usage();
  return run_client(a, conns, size, seconds, crr);
}
