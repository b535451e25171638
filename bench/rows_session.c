/* Session rows: two sessions in one process over a UNIX SOCK_SEQPACKET pair
 * (or connected UDP sockets on 127.0.0.1 for the _udp rows), negotiation
 * off, with the meaning of the Go library's session_test.go benchmarks:
 *  - SessionWriteRead<size>: sio_write() on A, then sio_read() on B until the
 *    whole message arrived, in one thread (one op = one message).
 *  - SessionWriteMessageAsyncRead<size>[...]: a stream of
 *    sio_write_message_async() on A; a second thread waits for and releases
 *    the completion objects; B consumes in a handler. The clock stops when
 *    the last message reached B's handler, and the row fails unless every
 *    message arrived, once, with its size and content marker.
 *  - Handshake: sio_session_start() on both to "established" on both.
 * Over UDP a window (a quarter of the receive buffer) bounds the bytes in
 * flight, as a transport with flow control would; without it the kernel
 * drops datagrams and "all delivered" cannot hold. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench.h"
#include "secureio.h"

/* ---- a session pair -------------------------------------------------------------- */

enum tp_kind { TP_SEQPACKET, TP_UDP };

struct spair {
	sio_identity *ida, *idb;
	sio_remote *ra, *rb;
	sio_session *a, *b;
	int fd[2];
	size_t window; /* UDP: bytes allowed in flight */
};

static int udp_socket(struct sockaddr_in *addr)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	memset(addr, 0, sizeof *addr);
	addr->sin_family = AF_INET;
	addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t l = sizeof *addr;
	if (bind(fd, (struct sockaddr *)addr, sizeof *addr) ||
	    getsockname(fd, (struct sockaddr *)addr, &l)) {
		close(fd);
		return -1;
	}
	int sz = 8 << 20;
	/* as root the forced variants pass net.core.[rw]mem_max */
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof sz))
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof sz))
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
	return fd;
}

/* Two UDP sockets on 127.0.0.1 connected to each other. Returns the window
 * (bytes in flight that the receive buffer surely holds) or 0 on error. */
size_t bench_udp_pair(int *a, int *b);
size_t bench_udp_pair(int *a, int *b)
{
	struct sockaddr_in aa, ba;
	*a = udp_socket(&aa);
	*b = udp_socket(&ba);
	if (*a < 0 || *b < 0 || connect(*a, (struct sockaddr *)&ba, sizeof ba) ||
	    connect(*b, (struct sockaddr *)&aa, sizeof aa)) {
		if (*a >= 0)
			close(*a);
		if (*b >= 0)
			close(*b);
		return 0;
	}
	int rb = 0;
	socklen_t l = sizeof rb;
	getsockopt(*b, SOL_SOCKET, SO_RCVBUF, &rb, &l);
	/* the kernel reports twice the payload it accounts; a datagram costs
	 * about twice its size in accounting: keep to a quarter */
	size_t w = (size_t)rb / 4;
	return w < 16384 ? 16384 : w;
}

static int pair_open(struct spair *p, enum tp_kind k, const sio_options *o)
{
	memset(p, 0, sizeof *p);
	p->fd[0] = p->fd[1] = -1;
	uint8_t seed[32], pk[32];
	memset(seed, 0xa1, sizeof seed);
	if (sio_identity_from_seed(&p->ida, seed))
		return -1;
	memset(seed, 0xb2, sizeof seed);
	if (sio_identity_from_seed(&p->idb, seed))
		return -1;
	sio_identity_public_key(p->idb, pk);
	if (sio_remote_from_public_key(&p->ra, pk))
		return -1;
	sio_identity_public_key(p->ida, pk);
	if (sio_remote_from_public_key(&p->rb, pk))
		return -1;
	if (k == TP_SEQPACKET) {
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, p->fd)) {
			bench_fail("socketpair: %s", strerror(errno));
			return -1;
		}
	} else {
		p->window = bench_udp_pair(&p->fd[0], &p->fd[1]);
		if (!p->window) {
			bench_fail("udp sockets: %s", strerror(errno));
			return -1;
		}
	}
	sio_transport ta, tb;
	sio_transport_fd(&ta, p->fd[0], p->fd[0]);
	sio_transport_fd(&tb, p->fd[1], p->fd[1]);
	int r = sio_session_new(&p->a, p->ida, p->ra, &ta, o, NULL);
	if (!r)
		r = sio_session_new(&p->b, p->idb, p->rb, &tb, o, NULL);
	if (r) {
		bench_fail("sio_session_new: %s", sio_strerror(r));
		return -1;
	}
	return 0;
}

static int pair_start(struct spair *p)
{
	int r = sio_session_start(p->a);
	if (!r)
		r = sio_session_start(p->b);
	if (!r)
		r = sio_session_wait_state(p->a, SIO_STATE_ESTABLISHED, 20000);
	if (!r)
		r = sio_session_wait_state(p->b, SIO_STATE_ESTABLISHED, 20000);
	if (r)
		bench_fail("handshake: %s", sio_strerror(r));
	return r ? -1 : 0;
}

static void pair_close(struct spair *p)
{
	sio_session_free(p->a);
	sio_session_free(p->b);
	p->a = p->b = NULL;
	for (int i = 0; i < 2; i++)
		if (p->fd[i] >= 0)
			close(p->fd[i]);
	p->fd[0] = p->fd[1] = -1;
}

static void pair_free(struct spair *p)
{
	pair_close(p);
	sio_identity_free(p->ida);
	sio_identity_free(p->idb);
	sio_remote_free(p->ra);
	sio_remote_free(p->rb);
}

/* Packets up to 64 KiB over the UNIX pair (what the Go library's benchmarks
 * use; the header's documented default for seqpacket), or the row's cap. */
#define SEQ_MAX_PACKET 65535u

static void base_options(sio_options *o)
{
	memset(o, 0, sizeof *o);
	o->negotiation = -1;
	o->max_packet_size = SEQ_MAX_PACKET;
}

/* ---- synchronous write then read ---------------------------------------------- */

struct sync_st {
	struct spair p;
	size_t size;
	uint8_t *out, *in;
};

static void sync_teardown(void *st)
{
	struct sync_st *s = st;
	pair_free(&s->p);
	free(s->out);
	free(s->in);
	free(s);
}

static int sync_setup(void **st, const struct bench_row *r)
{
	struct sync_st *s = calloc(1, sizeof(*s));
	if (!s)
		return -1;
	*st = s;
	s->size = r->arg;
	s->out = malloc(s->size);
	s->in = malloc(s->size);
	sio_options o;
	base_options(&o);
	if (!s->out || !s->in || pair_open(&s->p, TP_SEQPACKET, &o) || pair_start(&s->p)) {
		sync_teardown(s);
		return -1;
	}
	memset(s->out, 0x5a, s->size);
	return 0;
}

static int sync_run(void *st, uint64_t n)
{
	struct sync_st *s = st;
	bench_start();
	for (uint64_t i = 0; i < n; i++) {
		s->out[0] = (uint8_t)i;
		ssize_t w = sio_write(s->p.a, s->out, s->size);
		if (w != (ssize_t)s->size) {
			bench_stop();
			bench_fail("sio_write: %s", sio_strerror((int)w));
			return -1;
		}
		size_t got = 0;
		while (got < s->size) {
			ssize_t k = sio_read(s->p.b, s->in + got, s->size - got);
			if (k <= 0) {
				bench_stop();
				bench_fail("sio_read: %s", k ? sio_strerror((int)k) : "end of session");
				return -1;
			}
			got += (size_t)k;
		}
		if (s->in[0] != (uint8_t)i) {
			bench_stop();
			bench_fail("message %llu arrived out of order or altered", (unsigned long long)i);
			return -1;
		}
	}
	bench_stop();
	return 0;
}

/* ---- asynchronous stream ------------------------------------------------------- */

/* Completion objects in flight between the writer and the completion
 * thread: at most SI_INFLIGHT, like the Go benchmark's channel of 10000
 * (SI_RING is the power of two above it). A full ring makes the writer wait
 * until a quarter of it is free, not for every single slot: waking a thread
 * per released object measured the harness's hand-offs, not the library. */
#define SI_RING 16384
#define SI_INFLIGHT 10000
#define SI_RESUME (SI_INFLIGHT - SI_INFLIGHT / 4)
#define CHAN 1

struct async_cfg {
	size_t size;
	enum tp_kind tp;
	uint32_t max_packet; /* 0 = default */
};

static const struct async_cfg async_cfgs[] = {
	{1, TP_SEQPACKET, 0},       {16, TP_SEQPACKET, 0},      {1024, TP_SEQPACKET, 0},
	{32000, TP_SEQPACKET, 0},   {64000, TP_SEQPACKET, 0},   {1300, TP_SEQPACKET, 1400},
	{1300, TP_UDP, 1400},       {60000, TP_SEQPACKET, 1400}, {60000, TP_UDP, 1400},
};

struct async_st {
	struct spair p;
	const struct async_cfg *cfg;
	uint8_t *buf;
	size_t window_msgs; /* 0: unbounded */

	/* receiver (B's handler), on a line of its own: sharing one with
	 * cfg and buf, which the writer reads per message, made the handler's
	 * count cost a cache miss per message that measured the harness */
	_Alignas(64) _Atomic uint64_t delivered, bad;
	uint64_t expect_marker; /* handler thread only */
	struct bench_gate *dgate;

	/* completion objects: writer -> completer thread */
	_Alignas(64) sio_send_info *ring[SI_RING];
	_Atomic uint64_t head, tail, send_errs;
	int first_err;
	struct bench_gate *hgate, *tgate;
	pthread_t completer;
	int completer_started;
	atomic_int stop;
};

static void on_msg(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	struct async_st *a = ctx;
	/* the first byte carries the message number (mod 256): checks order
	 * and that nothing is delivered twice or skipped */
	if (len != a->cfg->size || d[0] != (uint8_t)a->expect_marker)
		atomic_fetch_add(&a->bad, 1);
	a->expect_marker++;
	atomic_fetch_add(&a->delivered, 1);
	bench_gate_notify(a->dgate);
}

/* Waits for and releases every completion object, one by one, in order.
 * The shared indices are read and published once per batch (at most 256
 * objects), not per object: reading the writer's index after each object
 * cost a cache-line transfer per message, which measured the harness. */
static void *completer_main(void *arg)
{
	struct async_st *a = arg;
	for (;;) {
		uint64_t t = atomic_load(&a->tail);
		uint64_t h = atomic_load(&a->head);
		if (h == t) {
			if (atomic_load(&a->stop))
				break;
			bench_gate_wait(a->hgate, &a->head, t + 1, 200);
			continue;
		}
		if (h - t > 256)
			h = t + 256;
		for (; t < h; t++) {
			sio_send_info *si = a->ring[t % SI_RING];
			int e = sio_send_info_wait(si, 30000);
			if (e) {
				if (!atomic_fetch_add(&a->send_errs, 1))
					a->first_err = e;
			}
			sio_send_info_release(si);
		}
		atomic_store(&a->tail, t);
		bench_gate_notify(a->tgate);
	}
	return NULL;
}

static void async_teardown(void *st)
{
	struct async_st *a = st;
	if (a->completer_started) {
		atomic_store(&a->stop, 1);
		bench_gate_notify(a->hgate);
		pthread_join(a->completer, NULL);
	}
	pair_free(&a->p);
	bench_gate_free(a->dgate);
	bench_gate_free(a->hgate);
	bench_gate_free(a->tgate);
	free(a->buf);
	free(a);
}

static int async_setup(void **st, const struct bench_row *r)
{
	/* (aligned: the lines of the struct are what its layout keeps apart) */
	struct async_st *a = aligned_alloc(64, (sizeof(*a) + 63) & ~(size_t)63);
	if (!a)
		return -1;
	memset(a, 0, sizeof(*a));
	*st = a;
	a->cfg = &async_cfgs[r->arg];
	a->buf = malloc(a->cfg->size);
	a->dgate = bench_gate_new();
	a->hgate = bench_gate_new();
	a->tgate = bench_gate_new();
	sio_options o;
	base_options(&o);
	if (a->cfg->max_packet)
		o.max_packet_size = a->cfg->max_packet;
	if (!a->buf || !a->dgate || !a->hgate || !a->tgate || pair_open(&a->p, a->cfg->tp, &o)) {
		async_teardown(a);
		return -1;
	}
	memset(a->buf, 0x33, a->cfg->size);
	if (a->p.window) {
		a->window_msgs = a->p.window / a->cfg->size;
		if (a->window_msgs < 1)
			a->window_msgs = 1;
	}
	int e = sio_set_handler(a->p.b, CHAN, on_msg, NULL, a);
	if (e) {
		bench_fail("sio_set_handler: %s", sio_strerror(e));
		async_teardown(a);
		return -1;
	}
	if (pthread_create(&a->completer, NULL, completer_main, a)) {
		async_teardown(a);
		return -1;
	}
	a->completer_started = 1;
	if (pair_start(&a->p)) {
		async_teardown(a);
		return -1;
	}
	return 0;
}

static int async_fail_lost(struct async_st *a, uint64_t base, uint64_t n)
{
	sio_stats sa, sb;
	sio_session_stats(a->p.a, &sa);
	sio_session_stats(a->p.b, &sb);
	bench_fail("only %llu of %llu messages delivered in this run (totals: sender %llu messages in "
		   "%llu packets, %llu completions pending; receiver %llu messages in %llu packets, %llu "
		   "delivered; drops: malformed %llu decrypt %llu replay %llu old %llu frag %llu)",
		   (unsigned long long)(atomic_load(&a->delivered) - base), (unsigned long long)n,
		   (unsigned long long)sa.messages_sent, (unsigned long long)sa.packets_sent,
		   (unsigned long long)(atomic_load(&a->head) - atomic_load(&a->tail)),
		   (unsigned long long)sb.messages_received, (unsigned long long)sb.packets_received,
		   (unsigned long long)atomic_load(&a->delivered),
		   (unsigned long long)sb.drop_malformed, (unsigned long long)sb.drop_decrypt,
		   (unsigned long long)sb.drop_replay, (unsigned long long)sb.drop_too_old,
		   (unsigned long long)sb.drop_fragments);
	return -1;
}

/* Messages of this run delivered so far. */
static uint64_t base_delivered_plus(struct async_st *a, uint64_t base)
{
	return atomic_load(&a->delivered) - base;
}

static int async_run(void *st, uint64_t n)
{
	struct async_st *a = st;
	uint64_t base = atomic_load(&a->delivered);
	uint64_t bad0 = atomic_load(&a->bad);
	uint64_t marker = base;
	bench_start();
	for (uint64_t i = 0; i < n; i++) {
		uint64_t h = atomic_load(&a->head);
		if (h - atomic_load(&a->tail) >= SI_INFLIGHT &&
		    bench_gate_wait(a->tgate, &a->tail, h - SI_RESUME, 30000)) {
			bench_stop();
			bench_fail("completions stalled");
			return -1;
		}
		/* a full window: resume when a quarter of it was delivered (not
		 * after every delivery, which wakes this thread per message) */
		if (a->window_msgs && i >= base_delivered_plus(a, base) + a->window_msgs &&
		    bench_gate_wait(a->dgate, &a->delivered,
				    base + i + 1 - a->window_msgs + a->window_msgs / 4, 3000)) {
			bench_stop();
			return async_fail_lost(a, base, i);
		}
		a->buf[0] = (uint8_t)marker++;
		int err = 0;
		sio_send_info *si =
			sio_write_message_async(a->p.a, CHAN, a->buf, a->cfg->size, NULL, NULL, &err);
		if (!si) {
			bench_stop();
			if (err == SIO_ETOOBIG && i == 0 && a->cfg->max_packet &&
			    a->cfg->size > a->cfg->max_packet) {
				bench_fail("fragmentation is not in this build yet: %s", sio_strerror(err));
				return 1;
			}
			bench_fail("sio_write_message_async: %s", sio_strerror(err));
			return -1;
		}
		a->ring[h % SI_RING] = si;
		/* published per object; the completion thread is woken (a
		 * full barrier, then a look for sleepers) every 32 and after
		 * the last: a locked instruction per message measured the
		 * harness, not the library */
		atomic_store_explicit(&a->head, h + 1, memory_order_release);
		if ((h & 31) == 31 || i + 1 == n) {
			atomic_thread_fence(memory_order_seq_cst);
			bench_gate_notify(a->hgate);
		}
	}
	/* 15 s: above the 10 s keepalive, which ends the stalls seen so far */
	uint64_t t_last_write = bench_now_ns();
	int lost = bench_gate_wait(a->dgate, &a->delivered, base + n, 15000);
	bench_stop();
	uint64_t tail_ns = bench_now_ns() - t_last_write;
	if (!lost && tail_ns > 1000000000u)
		fprintf(stderr,
			"# warning: the last messages took %.1f s to arrive after the last write "
			"(a stalled sender: see docs/BENCHMARKS.md)\n",
			(double)tail_ns / 1e9);
	if (lost)
		return async_fail_lost(a, base, n);
	/* drain the completions (outside the measured window) */
	if (bench_gate_wait(a->tgate, &a->tail, atomic_load(&a->head), 30000)) {
		bench_fail("completions stalled");
		return -1;
	}
	if (atomic_load(&a->send_errs)) {
		bench_fail("%llu sends failed, first: %s", (unsigned long long)atomic_load(&a->send_errs),
			   sio_strerror(a->first_err));
		return -1;
	}
	if (atomic_load(&a->delivered) != base + n || atomic_load(&a->bad) != bad0) {
		bench_fail("delivered %llu of %llu, %llu altered/out of order",
			   (unsigned long long)(atomic_load(&a->delivered) - base), (unsigned long long)n,
			   (unsigned long long)(atomic_load(&a->bad) - bad0));
		return -1;
	}
	return 0;
}

/* ---- handshake -------------------------------------------------------------------- */

struct hs_st {
	struct spair p;
};

static int hs_setup(void **st, const struct bench_row *r)
{
	struct hs_st *h = calloc(1, sizeof(*h));
	if (!h)
		return -1;
	*st = h;
	return 0;
}

static int hs_run(void *st, uint64_t n)
{
	struct hs_st *h = st;
	sio_options o;
	base_options(&o);
	for (uint64_t i = 0; i < n; i++) {
		if (pair_open(&h->p, TP_SEQPACKET, &o)) {
			pair_free(&h->p);
			return -1;
		}
		bench_start();
		int r = pair_start(&h->p);
		bench_stop();
		pair_free(&h->p);
		if (r)
			return -1;
	}
	return 0;
}

static void hs_teardown(void *st)
{
	free(st);
}

#define SYNC(n) {"SessionWriteRead" #n, "session", n, n, sync_setup, sync_run, sync_teardown, 0}
#define ASYNC(name, idx, bytes)                                                                  \
	{"SessionWriteMessageAsyncRead" name, "session", idx, bytes, async_setup, async_run,       \
	 async_teardown, 0}

const struct bench_row bench_rows_session[] = {
	SYNC(1),
	SYNC(16),
	SYNC(1024),
	SYNC(32000),
	SYNC(64000),
	ASYNC("1", 0, 1),
	ASYNC("16", 1, 16),
	ASYNC("1024", 2, 1024),
	ASYNC("32000", 3, 32000),
	ASYNC("64000", 4, 64000),
	ASYNC("1300_max1400", 5, 1300),
	ASYNC("1300_max1400_udp", 6, 1300),
	ASYNC("60000_max1400_withFrag", 7, 60000),
	ASYNC("60000_max1400_udp_withFrag", 8, 60000),
	{"Handshake", "session", 0, 0, hs_setup, hs_run, hs_teardown, 0},
	{NULL, NULL, 0, 0, NULL, NULL, NULL, 0},
};
