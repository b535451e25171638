/* Peer rows: ZeroMQ with CURVE security (CurveZMQ), the encrypted message
 * transport a user would otherwise pick, over an ipc:// (UNIX stream)
 * socket in this process (issue #16).
 *  - ZmqCurvePushPull<size>: the bench thread sends <size>-byte messages on a
 *    PUSH socket; a PULL thread receives them. Measured like our async rows:
 *    the clock stops when the PULL side received the last message, and the
 *    row fails unless every message arrived, once, in order, with its size
 *    and the counter in its first bytes (up to 8, little-endian).
 *  - ZmqCurveReqRep1: a 1-byte request on REQ, echoed by a REP thread, read
 *    back and checked (one op = one round trip).
 * High-water marks: a PUSH socket never drops (it blocks at the mark); the
 * marks are raised from libzmq's default 1000 messages to about 32 MiB of
 * messages each side (at least 1000, at most 100000) so that small messages
 * are not throttled by a count meant for large ones.
 *
 * libzmq is not a build dependency: the bench loads libzmq.so.5 at run time
 * (bench/tools.sh installs libzmq3-dev when run as root, like socat and
 * spiped) and the rows are skipped with a message when it is missing or
 * built without CURVE. The few constants used are libzmq's stable ABI; when
 * zmq.h is present at build time they are checked against it. */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

enum {
	Z_REQ = 3,
	Z_REP = 4,
	Z_PULL = 7,
	Z_PUSH = 8,
	Z_LINGER = 17,
	Z_SNDHWM = 23,
	Z_RCVHWM = 24,
	Z_RCVTIMEO = 27,
	Z_CURVE_SERVER = 47,
	Z_CURVE_PUBLICKEY = 48,
	Z_CURVE_SECRETKEY = 49,
	Z_CURVE_SERVERKEY = 50,
};

#if defined(__has_include)
#if __has_include(<zmq.h>)
#include <zmq.h>
_Static_assert(Z_REQ == ZMQ_REQ && Z_REP == ZMQ_REP && Z_PULL == ZMQ_PULL && Z_PUSH == ZMQ_PUSH,
	       "libzmq socket types");
_Static_assert(Z_LINGER == ZMQ_LINGER && Z_SNDHWM == ZMQ_SNDHWM && Z_RCVHWM == ZMQ_RCVHWM &&
		       Z_RCVTIMEO == ZMQ_RCVTIMEO,
	       "libzmq socket options");
_Static_assert(Z_CURVE_SERVER == ZMQ_CURVE_SERVER && Z_CURVE_PUBLICKEY == ZMQ_CURVE_PUBLICKEY &&
		       Z_CURVE_SECRETKEY == ZMQ_CURVE_SECRETKEY &&
		       Z_CURVE_SERVERKEY == ZMQ_CURVE_SERVERKEY,
	       "libzmq CURVE options");
#endif
#endif

/* ---- libzmq, loaded at run time ------------------------------------------------- */

static struct {
	int tried, ok;
	char why[200];
	void *(*ctx_new)(void);
	int (*ctx_term)(void *);
	void *(*socket)(void *, int);
	int (*close)(void *);
	int (*setsockopt)(void *, int, const void *, size_t);
	int (*bind)(void *, const char *);
	int (*connect)(void *, const char *);
	int (*send)(void *, const void *, size_t, int);
	int (*recv)(void *, void *, size_t, int);
	int (*curve_keypair)(char *, char *);
	int (*has)(const char *);
	int (*zerrno)(void);
	const char *(*strerror)(int);
} Z;

static int zmq_load(void)
{
	if (Z.tried)
		return Z.ok ? 0 : 1;
	Z.tried = 1;
	void *h = dlopen("libzmq.so.5", RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		snprintf(Z.why, sizeof Z.why,
			 "libzmq.so.5 not found (run bench/tools.sh as root, or apt-get install "
			 "libzmq3-dev)");
		return 1;
	}
#define SYM(field, name)                                                                \
	do {                                                                            \
		*(void **)&Z.field = dlsym(h, name);                                    \
		if (!Z.field) {                                                         \
			snprintf(Z.why, sizeof Z.why, "libzmq.so.5 lacks %s", name);    \
			return 1;                                                       \
		}                                                                       \
	} while (0)
	SYM(ctx_new, "zmq_ctx_new");
	SYM(ctx_term, "zmq_ctx_term");
	SYM(socket, "zmq_socket");
	SYM(close, "zmq_close");
	SYM(setsockopt, "zmq_setsockopt");
	SYM(bind, "zmq_bind");
	SYM(connect, "zmq_connect");
	SYM(send, "zmq_send");
	SYM(recv, "zmq_recv");
	SYM(curve_keypair, "zmq_curve_keypair");
	SYM(has, "zmq_has");
	SYM(zerrno, "zmq_errno");
	SYM(strerror, "zmq_strerror");
#undef SYM
	if (!Z.has("curve")) {
		snprintf(Z.why, sizeof Z.why, "this libzmq is built without CURVE security");
		return 1;
	}
	Z.ok = 1; /* the library stays loaded for the life of the process */
	return 0;
}

static const char *zerr(void)
{
	return Z.strerror(Z.zerrno());
}

/* ---- a CURVE-secured socket pair over ipc:// --------------------------------------- */

struct zpair {
	/* a context (with its I/O thread) per side, as two processes would
	 * have: one shared context would do both sides' CURVE work on one
	 * I/O thread */
	void *sctx, *cctx;
	void *server, *client; /* server binds (PULL / REP), client connects */
	char dir[64], endpoint[128];
};

static int setopt_int(void *sock, int opt, int v)
{
	return Z.setsockopt(sock, opt, &v, sizeof v);
}

static void zpair_close(struct zpair *p)
{
	if (p->client)
		Z.close(p->client);
	if (p->server)
		Z.close(p->server);
	if (p->cctx)
		Z.ctx_term(p->cctx);
	if (p->sctx)
		Z.ctx_term(p->sctx);
	p->client = p->server = p->cctx = p->sctx = NULL;
	if (p->endpoint[0])
		unlink(p->endpoint + strlen("ipc://"));
	if (p->dir[0])
		rmdir(p->dir);
	p->endpoint[0] = p->dir[0] = 0;
}

/* Creates SERVER_TYPE bound and CLIENT_TYPE connected, CURVE on both, HWM
 * messages each way, linger 0. Returns 0, 1 (libzmq missing: skip) or -1. */
static int zpair_open(struct zpair *p, int server_type, int client_type, int hwm)
{
	memset(p, 0, sizeof *p);
	if (zmq_load()) {
		bench_fail("%s", Z.why);
		return 1;
	}
	const char *tmp = getenv("TMPDIR");
	snprintf(p->dir, sizeof p->dir, "%.40s/sio-zmq-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(p->dir)) {
		bench_fail("mkdtemp: %s", strerror(errno));
		p->dir[0] = 0;
		return -1;
	}
	snprintf(p->endpoint, sizeof p->endpoint, "ipc://%s/s", p->dir);
	p->sctx = Z.ctx_new();
	p->cctx = Z.ctx_new();
	if (!p->sctx || !p->cctx) {
		bench_fail("zmq_ctx_new: %s", zerr());
		return -1;
	}
	p->server = Z.socket(p->sctx, server_type);
	p->client = Z.socket(p->cctx, client_type);
	if (!p->server || !p->client) {
		bench_fail("zmq_socket: %s", zerr());
		return -1;
	}
	char spub[41], ssec[41], cpub[41], csec[41];
	int rc = Z.curve_keypair(spub, ssec) | Z.curve_keypair(cpub, csec);
	rc |= setopt_int(p->server, Z_CURVE_SERVER, 1);
	rc |= Z.setsockopt(p->server, Z_CURVE_SECRETKEY, ssec, 40);
	rc |= Z.setsockopt(p->client, Z_CURVE_SERVERKEY, spub, 40);
	rc |= Z.setsockopt(p->client, Z_CURVE_PUBLICKEY, cpub, 40);
	rc |= Z.setsockopt(p->client, Z_CURVE_SECRETKEY, csec, 40);
	for (int i = 0; i < 2; i++) {
		void *s = i ? p->client : p->server;
		rc |= setopt_int(s, Z_SNDHWM, hwm);
		rc |= setopt_int(s, Z_RCVHWM, hwm);
		rc |= setopt_int(s, Z_LINGER, 0);
	}
	/* the receiving threads look at their stop flag this often */
	rc |= setopt_int(p->server, Z_RCVTIMEO, 200);
	/* the sockets hold their own copies */
	sodium_memzero(ssec, sizeof ssec);
	sodium_memzero(csec, sizeof csec);
	if (rc) {
		bench_fail("zmq CURVE keys or socket options: %s", zerr());
		return -1;
	}
	if (Z.bind(p->server, p->endpoint) || Z.connect(p->client, p->endpoint)) {
		bench_fail("zmq bind/connect %s: %s", p->endpoint, zerr());
		return -1;
	}
	return 0;
}

/* The message counter in the first min(size, 8) bytes, little-endian. */
static void put_counter(uint8_t *b, size_t size, uint64_t v)
{
	for (size_t i = 0; i < size && i < 8; i++)
		b[i] = (uint8_t)(v >> (8 * i));
}

static int counter_matches(const uint8_t *b, size_t size, uint64_t v)
{
	for (size_t i = 0; i < size && i < 8; i++)
		if (b[i] != (uint8_t)(v >> (8 * i)))
			return 0;
	return 1;
}

/* ---- PUSH / PULL ------------------------------------------------------------------ */

struct pp {
	struct zpair z;
	size_t size;
	uint8_t *out, *in;
	pthread_t rx;
	int rx_started;
	atomic_int stop;
	uint64_t sent;                    /* bench thread only */
	_Atomic uint64_t received, bad;   /* written by the PULL thread */
	struct bench_gate *gate;
	atomic_int rx_err; /* the PULL thread's fatal zmq errno */
};

static void *pp_rx(void *arg)
{
	struct pp *p = arg;
	uint64_t expect = 0;
	while (!atomic_load(&p->stop)) {
		int n = Z.recv(p->z.server, p->in, p->size + 1, 0);
		if (n < 0) {
			int e = Z.zerrno();
			if (e == EAGAIN || e == EINTR)
				continue;
			atomic_store(&p->rx_err, e);
			break;
		}
		if ((size_t)n != p->size || !counter_matches(p->in, p->size, expect))
			atomic_fetch_add(&p->bad, 1);
		expect++;
		atomic_fetch_add(&p->received, 1);
		bench_gate_notify(p->gate);
	}
	/* wake a bench thread that waits for messages that will not come */
	atomic_store(&p->stop, 2);
	bench_gate_notify(p->gate);
	return NULL;
}

static void pp_teardown(void *st)
{
	struct pp *p = st;
	if (p->rx_started) {
		atomic_store(&p->stop, 1);
		pthread_join(p->rx, NULL);
	}
	zpair_close(&p->z);
	bench_gate_free(p->gate);
	free(p->out);
	free(p->in);
	free(p);
}

static int pp_hwm(size_t size)
{
	size_t h = (32u << 20) / (size ? size : 1);
	return h < 1000 ? 1000 : h > 100000 ? 100000 : (int)h;
}

static int pp_wait(struct pp *p, uint64_t target)
{
	return bench_gate_wait(p->gate, &p->received, target, 5000);
}

static int pp_send(struct pp *p)
{
	put_counter(p->out, p->size, p->sent);
	for (;;) {
		if (Z.send(p->z.client, p->out, p->size, 0) == (int)p->size)
			break;
		if (Z.zerrno() == EINTR)
			continue;
		bench_fail("zmq_send: %s", zerr());
		return -1;
	}
	p->sent++;
	return 0;
}

static int pp_setup(void **st, const struct bench_row *r)
{
	struct pp *p = calloc(1, sizeof *p);
	if (!p)
		return -1;
	*st = p;
	p->size = r->arg;
	/* one byte more: a longer message would show as a wrong size */
	p->out = malloc(p->size);
	p->in = malloc(p->size + 1);
	p->gate = bench_gate_new();
	if (!p->out || !p->in || !p->gate) {
		pp_teardown(p);
		return -1;
	}
	memset(p->out, 0x5a, p->size);
	int rc = zpair_open(&p->z, Z_PULL, Z_PUSH, pp_hwm(p->size));
	if (rc) {
		pp_teardown(p);
		return rc;
	}
	if (pthread_create(&p->rx, NULL, pp_rx, p)) {
		pp_teardown(p);
		return -1;
	}
	p->rx_started = 1;
	/* connection and CURVE handshake outside the measured window */
	if (pp_send(p) || pp_wait(p, 1)) {
		if (!atomic_load(&p->rx_err))
			bench_fail("the first message did not arrive (CURVE handshake over %s)",
				   p->z.endpoint);
		pp_teardown(p);
		return -1;
	}
	return 0;
}

static int pp_run(void *st, uint64_t n)
{
	struct pp *p = st;
	uint64_t base = p->sent;
	uint64_t bad0 = atomic_load(&p->bad);
	bench_start();
	for (uint64_t i = 0; i < n; i++)
		if (pp_send(p)) {
			bench_stop();
			return -1;
		}
	int lost = pp_wait(p, base + n);
	bench_stop();
	uint64_t got = atomic_load(&p->received);
	if (lost || got != base + n || atomic_load(&p->bad) != bad0) {
		int e = atomic_load(&p->rx_err);
		bench_fail("PULL received %llu of %llu messages, %llu of the wrong size or out of order%s%s",
			   (unsigned long long)(got - base), (unsigned long long)n,
			   (unsigned long long)(atomic_load(&p->bad) - bad0), e ? ": " : "",
			   e ? Z.strerror(e) : "");
		return -1;
	}
	return 0;
}

/* ---- REQ / REP -------------------------------------------------------------------- */

struct rr {
	struct zpair z;
	pthread_t echo;
	int echo_started;
	atomic_int stop;
	uint64_t seq;
};

static void *rr_echo(void *arg)
{
	struct rr *t = arg;
	uint8_t b[16];
	while (!atomic_load(&t->stop)) {
		int n = Z.recv(t->z.server, b, sizeof b, 0);
		if (n < 0) {
			if (Z.zerrno() == EAGAIN || Z.zerrno() == EINTR)
				continue;
			break;
		}
		if (Z.send(t->z.server, b, (size_t)(n < (int)sizeof b ? n : (int)sizeof b), 0) < 0)
			break;
	}
	return NULL;
}

static void rr_teardown(void *st)
{
	struct rr *t = st;
	if (t->echo_started) {
		atomic_store(&t->stop, 1);
		pthread_join(t->echo, NULL);
	}
	zpair_close(&t->z);
	free(t);
}

static int rr_once(struct rr *t)
{
	uint8_t b = (uint8_t)t->seq, in[2];
	if (Z.send(t->z.client, &b, 1, 0) != 1) {
		bench_fail("zmq_send: %s", zerr());
		return -1;
	}
	int n = Z.recv(t->z.client, in, sizeof in, 0);
	if (n != 1 || in[0] != b) {
		bench_fail("REQ got %s (%d bytes) for request %llu", n < 0 ? zerr() : "a wrong reply",
			   n, (unsigned long long)t->seq);
		return -1;
	}
	t->seq++;
	return 0;
}

static int rr_setup(void **st, const struct bench_row *r)
{
	(void)r;
	struct rr *t = calloc(1, sizeof *t);
	if (!t)
		return -1;
	*st = t;
	int rc = zpair_open(&t->z, Z_REP, Z_REQ, 1000);
	if (rc) {
		rr_teardown(t);
		return rc;
	}
	if (pthread_create(&t->echo, NULL, rr_echo, t)) {
		rr_teardown(t);
		return -1;
	}
	t->echo_started = 1;
	/* the REQ side must not wait forever for a REP that died */
	int tmo = 10000;
	if (Z.setsockopt(t->z.client, Z_RCVTIMEO, &tmo, sizeof tmo) || rr_once(t)) {
		rr_teardown(t);
		return -1;
	}
	return 0;
}

static int rr_run(void *st, uint64_t n)
{
	struct rr *t = st;
	bench_start();
	for (uint64_t i = 0; i < n; i++)
		if (rr_once(t)) {
			bench_stop();
			return -1;
		}
	bench_stop();
	return 0;
}

#define PP(n) {"ZmqCurvePushPull" #n, "peer", n, n, pp_setup, pp_run, pp_teardown, 0}

const struct bench_row bench_rows_peer[] = {
	PP(1),
	PP(16),
	PP(1024),
	PP(64000),
	{"ZmqCurveReqRep1", "peer", 1, 0, rr_setup, rr_run, rr_teardown, 0},
	{NULL, NULL, 0, 0, NULL, NULL, NULL, 0},
};
