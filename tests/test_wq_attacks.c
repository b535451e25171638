/* Adversarial checks of the write queue (docs/ARCHITECTURE.md, "Write
 * path"): writers of every kind of record (small without a callback, small
 * with one, large ones that borrow the writer's buffer, up to 40 000 bytes,
 * synchronous and asynchronous) from several threads, racing the end of the
 * session. Writers reuse one buffer at once, so a borrowed buffer read after
 * its write returned shows as an altered record. The receiver checks every
 * record: intact, per writer in increasing order, never twice.
 *  c: a pair over a UNIX socketpair, ended by sio_close(A), sio_close(B) or
 *     a shutdown of A's descriptor at a random moment; every object
 *     completes, every callback runs exactly once and before the free (on
 *     the I/O thread), and after sio_close(A) all that was reported sent
 *     arrived;
 *  k: the same with the peer in a child process killed with SIGKILL;
 *  d: a listener's (driven) session written to by program threads while
 *     either side closes;
 *  l: event-loop mode: bursts of large writes from the loop and from a
 *     handler until SIO_EAGAIN; exactly what was accepted arrives, in order;
 *  f: fragmentation off: a message above the packet size is SIO_ETOOBIG at
 *     once (all write calls, before and after the start), nothing queued.
 * Usage: test_wq_attacks [ROUNDS [FIRST_SEED]]; WQMODE=ckdlf picks modes,
 * WQV=1 prints each round. Half the rounds of c and k use 256-byte packets:
 * there a sio_close(A) that finds the queue pending is left to the I/O
 * thread (close_requested), which used to loop with the lock held while a
 * writer's send without the lock (s->sending) waited to take it back: both
 * spun until the key renewal (60 s) and its exchange timed out (SIO_ETIMEDOUT
 * after 120 s; WQMODE=c test_wq_attacks 1 3 hit it about 1 run in 15). No
 * timing is asserted. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "lib/lclient.h"
#include "sess_pair.h"

#define NW 3
#define MAXSEQ 4096
#define HELD 32
#define HDR 12
#define MAXLEN 40000

enum { ST_NONE, ST_OK, ST_FAIL, ST_UNKNOWN };

struct around;

struct aw {
	struct around *r;
	int id;
	uint64_t rng;
	uint32_t n;
	sio_send_info *held[HELD];
	uint32_t hseq[HELD];
	unsigned nheld, first;
	uint8_t buf[MAXLEN];
	pthread_t th;
};

struct around {
	struct pair p;
	int how; /* 0 close A, 1 close B, 2 shutdown A's fd */
	struct aw w[NW];
	_Atomic uint8_t st[NW][MAXSEQ];
	atomic_int cb[NW][MAXSEQ];
	atomic_int cb_err[NW][MAXSEQ];
	uint8_t got[NW][MAXSEQ];
	int64_t last[NW];
	atomic_int bad_rx, bad_wait, bad_cb, stop;
	char why[160];
};

static uint64_t xs(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static uint8_t apat(int w, uint32_t seq, size_t i)
{
	return (uint8_t)(w * 29 + seq * 11 + i * 7 + (i >> 8));
}

static void afill(uint8_t *b, int w, uint32_t seq, uint32_t len)
{
	b[0] = 0x5a;
	b[1] = (uint8_t)w;
	memcpy(b + 2, &seq, 4);
	memcpy(b + 6, &len, 4);
	b[10] = b[11] = 0;
	for (size_t i = HDR; i < len; i++)
		b[i] = apat(w, seq, i);
}

static void rx_bad(struct around *r, const char *why, int w, uint32_t seq)
{
	if (!atomic_fetch_add(&r->bad_rx, 1))
		snprintf(r->why, sizeof r->why, "%s (writer %d seq %u)", why, w, seq);
}

static void on_rec(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	(void)s;
	(void)type;
	struct around *r = ctx;
	uint32_t seq, l;
	if (len < HDR || d[0] != 0x5a || d[1] >= NW) {
		rx_bad(r, "malformed", -1, 0);
		return;
	}
	int w = d[1];
	memcpy(&seq, d + 2, 4);
	memcpy(&l, d + 6, 4);
	if (l != len || seq >= MAXSEQ) {
		rx_bad(r, "bad length or seq", w, seq);
		return;
	}
	for (size_t i = HDR; i < len; i++)
		if (d[i] != apat(w, seq, i)) {
			rx_bad(r, "altered", w, seq);
			return;
		}
	if ((int64_t)seq <= r->last[w])
		rx_bad(r, "duplicate or out of order", w, seq);
	r->last[w] = seq;
	r->got[w][seq]++;
}

static int ok_err(int e)
{
	return e <= 0 && e != SIO_ETIMEDOUT && e != SIO_EAGAIN;
}

static struct around *g_round;

static void on_done2(sio_send_info *si, int err, void *ctx)
{
	(void)si;
	uintptr_t k = (uintptr_t)ctx;
	struct around *r = g_round;
	int w = (int)(k >> 16);
	uint32_t seq = (uint32_t)(k & 0xffff);
	atomic_fetch_add(&r->cb[w][seq], 1);
	atomic_store(&r->cb_err[w][seq], err);
	if (!ok_err(err)) {
		atomic_fetch_add(&r->bad_cb, 1);
		fprintf(stderr, "callback: writer %d seq %u: %d\n", w, seq, err);
	}
}

static void retire(struct aw *w)
{
	struct around *r = w->r;
	unsigned k = w->first;
	int e = sio_send_info_wait(w->held[k], 30000);
	if (!ok_err(e)) {
		atomic_fetch_add(&r->bad_wait, 1);
		fprintf(stderr, "wait: writer %d seq %u: %d\n", w->id, w->hseq[k], e);
	}
	atomic_store(&r->st[w->id][w->hseq[k]], e == 0 ? ST_OK : ST_FAIL);
	sio_send_info_release(w->held[k]);
	w->first = (w->first + 1) % HELD;
	w->nheld--;
}

static void *aw_main(void *arg)
{
	struct aw *w = arg;
	struct around *r = w->r;
	while (!atomic_load(&r->stop) && w->n < MAXSEQ) {
		uint32_t seq = w->n++;
		uint64_t x = xs(&w->rng);
		uint32_t len;
		switch (x % 4) {
		case 0:
			len = HDR + (uint32_t)((x >> 8) % 200);
			break;
		case 1:
			len = HDR + (uint32_t)((x >> 8) % 8200);
			break;
		case 2:
			len = 8300 + (uint32_t)((x >> 8) % (MAXLEN - 8300));
			break;
		default:
			len = HDR + (uint32_t)((x >> 8) % 100);
		}
		afill(w->buf, w->id, seq, len);
		unsigned mode = (unsigned)(x >> 40) % 8;
		int e = 0;
		if (mode < 6) {
			if (w->nheld == HELD)
				retire(w);
			int cb = mode % 2;
			sio_send_info *si = sio_write_message_async(
			    r->p.a, 7, w->buf, len, cb ? on_done2 : NULL,
			    (void *)(((uintptr_t)w->id << 16) | seq), &e);
			if (!si) {
				atomic_store(&r->st[w->id][seq], ST_FAIL);
				if (!ok_err(e) || e == 0) {
					atomic_fetch_add(&r->bad_wait, 1);
					fprintf(stderr, "async write: writer %d seq %u len %u: %d\n", w->id, seq, len, e);
				}
				break;
			}
			if (cb)
				atomic_fetch_add(&r->cb[w->id][seq], 100); /* expected: 101 */
			atomic_store(&r->st[w->id][seq], ST_UNKNOWN);
			unsigned k = (w->first + w->nheld) % HELD;
			w->held[k] = si;
			w->hseq[k] = seq;
			w->nheld++;
		} else {
			e = sio_write_message(r->p.a, 7, w->buf, len);
			atomic_store(&r->st[w->id][seq], e == 0 ? ST_OK : ST_FAIL);
			if (e) {
				if (!ok_err(e)) {
					atomic_fetch_add(&r->bad_wait, 1);
					fprintf(stderr, "sync write: writer %d seq %u len %u: %d\n", w->id, seq, len, e);
				}
				break;
			}
		}
		/* the buffer is reused at once: a borrowed record read after
		 * its write returned shows as altered */
		memset(w->buf, 0xee, len);
	}
	while (w->nheld > HELD / 2)
		retire(w);
	return NULL;
}

static void sleep_us(uint64_t us)
{
	struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
	while (nanosleep(&ts, &ts))
		;
}

/* Callbacks expected but not run yet (the I/O thread runs them: they must
 * not need sio_session_free). */
static void on_err_log(sio_session *s, int err, const char *msg, void *ctx)
{
	(void)s;
	if (getenv("WQV"))
		fprintf(stderr, "%s: error %d: %s\n", (const char *)ctx, err, msg);
}

static void on_state_log(sio_session *s, sio_state a, sio_state b, void *ctx)
{
	(void)s;
	if (getenv("WQV"))
		fprintf(stderr, "%s: %s -> %s\n", (const char *)ctx, sio_state_name(a), sio_state_name(b));
}

static int cb_pending(struct around *r)
{
	int n = 0;
	for (int i = 0; i < NW; i++)
		for (uint32_t q = 0; q < MAXSEQ; q++)
			n += atomic_load(&r->cb[i][q]) == 100;
	return n;
}

static int cb_wait(struct around *r)
{
	int n = cb_pending(r);
	for (int i = 0; i < 1000 && n; i++) {
		sleep_us(10000);
		n = cb_pending(r);
	}
	if (n)
		fprintf(stderr, "%d callbacks not run before the free\n", n);
	return n;
}

/* The round's writer threads, each seeded from RNG. */
static void start_writers(struct around *r, uint64_t rng)
{
	for (int i = 0; i < NW; i++) {
		r->w[i].r = r;
		r->w[i].id = i;
		r->w[i].rng = rng ^ (0x777ull * (uint64_t)(i + 1));
		xs(&r->w[i].rng);
		pthread_create(&r->w[i].th, NULL, aw_main, &r->w[i]);
	}
}

static void join_writers(struct around *r)
{
	for (int i = 0; i < NW; i++)
		pthread_join(r->w[i].th, NULL);
}

/* After A was freed: every object a writer still holds must be done, with
 * success or a session error (never pending), and is released; with MARK
 * the outcome is recorded as what the sender reported. Returns how many
 * were not. */
static int retire_held(struct around *r, int mark)
{
	int bad = 0;
	for (int i = 0; i < NW; i++) {
		struct aw *w = &r->w[i];
		for (unsigned j = 0; j < w->nheld; j++) {
			unsigned k = (w->first + j) % HELD;
			int e = sio_send_info_err(w->held[k]);
			if (!sio_send_info_done(w->held[k]) || !ok_err(e))
				bad++;
			if (mark)
				atomic_store(&r->st[i][w->hseq[k]], e == 0 ? ST_OK : ST_FAIL);
			sio_send_info_release(w->held[k]);
		}
	}
	return bad;
}

/* Every completion callback asked for ran exactly once (count 101), none
 * ran for a write without one (count 0). Returns how many were not. */
static int cb_counts_bad(struct around *r, const char *what)
{
	int bad = 0;
	for (int i = 0; i < NW; i++)
		for (uint32_t s = 0; s < MAXSEQ; s++) {
			int c = atomic_load(&r->cb[i][s]);
			if (c != 0 && c != 101 && !bad++)
				fprintf(stderr, "%s: callback count %d writer %d seq %u\n", what, c, i, s);
		}
	return bad;
}

static uint32_t msgs_written(const struct around *r)
{
	uint32_t tot = 0;
	for (int i = 0; i < NW; i++)
		tot += r->w[i].n;
	return tot;
}

static void run(uint64_t seed, enum pair_kind kind, uint32_t pkt)
{
	struct around *r = calloc(1, sizeof *r);
	g_round = r;
	uint64_t rng = seed * 0x9e3779b97f4a7c15ull + 7;
	xs(&rng);
	r->how = (int)(seed % 3);
	for (int i = 0; i < NW; i++)
		r->last[i] = -1;
	sio_options o;
	sio_options_default(&o);
	o.max_packet_size = pkt;
	sio_callbacks ca, cbb;
	memset(&ca, 0, sizeof ca);
	ca.on_error = on_err_log;
	ca.on_state = on_state_log;
	cbb = ca;
	ca.ctx = "A";
	cbb.ctx = "B";
	CHECK_OK(pair_open(&r->p, kind, &o, &o, &ca, &cbb));
	CHECK_OK(sio_set_handler(r->p.b, 7, on_rec, NULL, r));
	CHECK_OK(pair_start(&r->p));
	start_writers(r, rng);
	sleep_us(xs(&rng) % 40000);
	if (r->how == 0)
		CHECK_OK(sio_close(r->p.a));
	else if (r->how == 1)
		CHECK_OK(sio_close(r->p.b));
	else
		shutdown(r->p.fds[0], SHUT_RDWR);
	sleep_us(xs(&rng) % 2000);
	atomic_store(&r->stop, 1);
	join_writers(r);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	(void)sio_session_wait_state(r->p.a, SIO_STATE_CLOSED, 30000);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (getenv("WQV"))
		fprintf(stderr, "seed %llu: CLOSED after %.3f s\n", (unsigned long long)seed,
			(double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	if (sio_session_state(r->p.a) == SIO_STATE_CLOSED)
		CHECK_EQ(cb_wait(r), 0);
	sio_session_free(r->p.a);
	r->p.a = NULL;
	int held_bad = retire_held(r, 1);
	shutdown(r->p.fds[0], SHUT_RDWR);
	(void)sio_session_wait_state(r->p.b, SIO_STATE_CLOSED, 30000);
	sio_session_free(r->p.b);
	r->p.b = NULL;
	int cb_bad = cb_counts_bad(r, "close"), lost = 0, ghost = 0;
	for (int i = 0; i < NW; i++)
		for (uint32_t s = 0; s < MAXSEQ; s++) {
			if (r->got[i][s] && s >= r->w[i].n)
				ghost++;
			if (r->how == 0 && atomic_load(&r->st[i][s]) == ST_OK && !r->got[i][s])
				if (!lost++)
					fprintf(stderr, "lost writer %d seq %u\n", i, s);
		}
	uint32_t tot = msgs_written(r);
	if (getenv("WQV") || held_bad || cb_bad || lost || ghost || atomic_load(&r->bad_rx) || atomic_load(&r->bad_wait) ||
	    atomic_load(&r->bad_cb))
		fprintf(stderr,
			"seed %llu kind %d pkt %u how %d: held_bad %d cb_bad %d lost %d ghost %d rx %d (%s) "
			"wait %d cbe %d msgs %u\n",
			(unsigned long long)seed, kind, pkt, r->how, held_bad, cb_bad, lost, ghost,
			atomic_load(&r->bad_rx), r->why, atomic_load(&r->bad_wait), atomic_load(&r->bad_cb), tot);
	CHECK_EQ(held_bad, 0);
	CHECK_EQ(cb_bad, 0);
	CHECK_EQ(lost, 0);
	CHECK_EQ(ghost, 0);
	CHECK_EQ(atomic_load(&r->bad_rx), 0);
	CHECK_EQ(atomic_load(&r->bad_wait), 0);
	CHECK_EQ(atomic_load(&r->bad_cb), 0);
	pair_free(&r->p);
	free(r);
}

/* ---- the peer process killed (SIGKILL) while the writers run ----------- */

static void on_drop(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	(void)s;
	(void)type;
	(void)d;
	(void)len;
	(void)ctx;
}

static void run_kill(uint64_t seed)
{
	struct around *r = calloc(1, sizeof *r);
	g_round = r;
	uint64_t rng = seed * 0x9e3779b97f4a7c15ull + 5;
	xs(&rng);
	int sv[2];
	CHECK_OK(socketpair(AF_UNIX, seed % 2 ? SOCK_SEQPACKET : SOCK_STREAM, 0, sv));
	sio_options o;
	sio_options_default(&o);
	o.max_packet_size = (seed / 2) % 2 ? 256 : 0;
	pid_t pid = fork();
	if (pid == 0) {
		close(sv[0]);
		struct pair q;
		memset(&q, 0, sizeof q);
		if (pair_identities(&q, 0, 0))
			_exit(2);
		sio_transport t;
		sio_transport_fd(&t, sv[1], sv[1]);
		if (sio_session_new(&q.b, q.idb, q.rb, &t, &o, NULL) ||
		    sio_set_handler(q.b, 7, on_drop, NULL, NULL) || sio_session_start(q.b))
			_exit(2);
		for (;;)
			pause();
	}
	close(sv[1]);
	CHECK_OK(pair_identities(&r->p, 0, 0));
	for (int i = 0; i < 4; i++)
		r->p.fds[i] = -1;
	r->p.fds[0] = sv[0];
	sio_transport t;
	sio_transport_fd(&t, sv[0], sv[0]);
	CHECK_OK(sio_session_new(&r->p.a, r->p.ida, r->p.ra, &t, &o, NULL));
	CHECK_OK(sio_session_start(r->p.a));
	CHECK_OK(sio_session_wait_state(r->p.a, SIO_STATE_ESTABLISHED, 20000));
	start_writers(r, rng);
	sleep_us(xs(&rng) % 40000);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	sleep_us(xs(&rng) % 3000);
	atomic_store(&r->stop, 1);
	join_writers(r);
	CHECK_OK(sio_session_wait_state(r->p.a, SIO_STATE_CLOSED, 20000));
	CHECK_EQ(cb_wait(r), 0);
	sio_session_free(r->p.a);
	r->p.a = NULL;
	int held_bad = retire_held(r, 0), cb_bad = cb_counts_bad(r, "kill");
	uint32_t tot = msgs_written(r);
	if (getenv("WQV") || held_bad || cb_bad || atomic_load(&r->bad_wait) || atomic_load(&r->bad_cb))
		fprintf(stderr, "kill seed %llu: held_bad %d cb_bad %d wait %d cbe %d msgs %u\n",
			(unsigned long long)seed, held_bad, cb_bad, atomic_load(&r->bad_wait),
			atomic_load(&r->bad_cb), tot);
	CHECK_EQ(held_bad, 0);
	CHECK_EQ(cb_bad, 0);
	CHECK_EQ(atomic_load(&r->bad_wait), 0);
	CHECK_EQ(atomic_load(&r->bad_cb), 0);
	pair_free(&r->p);
	free(r);
}

/* ---- a listener's (driven) session written to by program threads ------- */

static void run_listener(uint64_t seed, int loop)
{
	struct around *r = calloc(1, sizeof *r);
	g_round = r;
	uint64_t rng = seed * 0x9e3779b97f4a7c15ull + 11;
	xs(&rng);
	r->how = (int)(seed % 2);
	for (int i = 0; i < NW; i++)
		r->last[i] = -1;
	sio_identity *sid = NULL, *cid = NULL;
	CHECK_OK(sio_identity_generate(&sid));
	CHECK_OK(sio_identity_generate(&cid));
	uint8_t spk[32];
	sio_identity_public_key(sid, spk);
	struct sockaddr_in sa, ca;
	int sfd = udp_loopback(&sa, 0, 0);
	sio_listener_options lo;
	memset(&lo, 0, sizeof lo);
	lo.close_fd = 1;
	sio_listener *l = NULL;
	CHECK_OK(sio_listener_new(&l, sid, sfd, NULL, &lo));
	CHECK_OK(loop ? sio_listener_start_loop(l) : sio_listener_start(l));
	int cfd = udp_loopback(&ca, 0, 0);
	sio_remote *rem = NULL;
	CHECK_OK(sio_remote_from_public_key(&rem, spk));
	CHECK_OK(lclient_new(&r->p.b, cid, rem, cfd, &sa, sizeof sa, NULL));
	CHECK_OK(sio_set_handler(r->p.b, 7, on_rec, NULL, r));
	CHECK_OK(sio_session_start(r->p.b));
	for (int i = 0; i < 5000 && !r->p.a; i++) {
		if (loop) {
			struct pollfd pf = {sio_listener_fd(l), POLLIN, 0};
			poll(&pf, 1, 2);
			sio_listener_process(l);
		}
		if (sio_listener_accept(l, &r->p.a, loop ? 0 : 2) != 0)
			r->p.a = NULL;
	}
	CHECK(r->p.a != NULL);
	if (!r->p.a)
		abort();
	start_writers(r, rng);
	uint64_t until = xs(&rng) % 40000;
	for (uint64_t t0 = 0; t0 < until; t0 += 1000) {
		if (loop) {
			struct pollfd pf = {sio_listener_fd(l), POLLIN, 0};
			poll(&pf, 1, 1);
			sio_listener_process(l);
		} else {
			sleep_us(1000);
		}
	}
	if (r->how == 0)
		CHECK_OK(sio_close(r->p.a));
	else
		CHECK_OK(sio_close(r->p.b));
	for (int i = 0; i < 20; i++) {
		if (loop) {
			struct pollfd pf = {sio_listener_fd(l), POLLIN, 0};
			poll(&pf, 1, 1);
			sio_listener_process(l);
		} else {
			sleep_us(100);
		}
	}
	atomic_store(&r->stop, 1);
	join_writers(r);
	sio_session_free(r->p.a);
	r->p.a = NULL;
	int held_bad = retire_held(r, 0);
	sio_session_free(r->p.b);
	r->p.b = NULL;
	sio_listener_free(l);
	int cb_bad = cb_counts_bad(r, "listener");
	uint32_t tot = msgs_written(r);
	if (getenv("WQV") || held_bad || cb_bad || atomic_load(&r->bad_rx) || atomic_load(&r->bad_wait) ||
	    atomic_load(&r->bad_cb))
		fprintf(stderr, "listener seed %llu loop %d how %d: held_bad %d cb_bad %d rx %d (%s) wait %d cbe %d msgs %u\n",
			(unsigned long long)seed, loop, r->how, held_bad, cb_bad, atomic_load(&r->bad_rx), r->why,
			atomic_load(&r->bad_wait), atomic_load(&r->bad_cb), tot);
	CHECK_EQ(held_bad, 0);
	CHECK_EQ(cb_bad, 0);
	CHECK_EQ(atomic_load(&r->bad_rx), 0);
	CHECK_EQ(atomic_load(&r->bad_wait), 0);
	CHECK_EQ(atomic_load(&r->bad_cb), 0);
	sio_remote_free(rem);
	sio_identity_free(sid);
	sio_identity_free(cid);
	free(r);
}

/* ---- event-loop mode: large writes from the loop when the core is full -- */

struct lrx {
	pthread_mutex_t mu;
	uint32_t next, total;
	int bad;
	int slow;
};

static void on_lrec(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	(void)s;
	(void)type;
	struct lrx *x = ctx;
	uint32_t seq, l;
	pthread_mutex_lock(&x->mu);
	if (len < HDR || d[0] != 0x5a) {
		x->bad++;
	} else {
		memcpy(&seq, d + 2, 4);
		memcpy(&l, d + 6, 4);
		if (seq != x->next || l != len) {
			if (!x->bad)
				fprintf(stderr, "loop rx: got seq %u len %zu, want seq %u\n", seq, len, x->next);
			x->bad++;
		}
		for (size_t i = HDR; i < len; i++)
			if (d[i] != apat(0, seq, i)) {
				x->bad++;
				break;
			}
		x->next = seq + 1;
	}
	x->total++;
	int slow = x->slow > 0 ? x->slow-- : 0;
	pthread_mutex_unlock(&x->mu);
	if (slow)
		usleep(2000);
}

struct lw {
	sio_session *a;
	uint32_t next;
	int again, other, cbs, cb_errs;
	uint8_t buf[70000];
	uint64_t rng;
	sio_send_info *held[4096];
	unsigned nheld;
};

static void on_lcb(sio_send_info *si, int err, void *ctx)
{
	(void)si;
	struct lw *w = ctx;
	w->cbs++;
	if (err)
		w->cb_errs++;
}

/* One burst: writes until the session refuses one (SIO_EAGAIN). */
static void lburst(struct lw *w, int n)
{
	for (int i = 0; i < n; i++) {
		uint64_t x = xs(&w->rng);
		uint32_t len = x % 3 == 0 ? HDR + (uint32_t)((x >> 8) % 300)
					  : 9000 + (uint32_t)((x >> 8) % 60000);
		afill(w->buf, 0, w->next, len);
		int e = 0;
		unsigned mode = (unsigned)(x >> 32) % 3;
		if (mode == 2) {
			e = sio_write_message(w->a, 7, w->buf, len);
		} else {
			sio_send_info *si = sio_write_message_async(w->a, 7, w->buf, len, mode ? on_lcb : NULL,
								    w, &e);
			if (si && w->nheld < 4096)
				w->held[w->nheld++] = si;
			else if (si)
				sio_send_info_release(si);
		}
		memset(w->buf, 0xee, len);
		if (e == SIO_EAGAIN) {
			w->again++;
			return;
		}
		if (e) {
			w->other++;
			return;
		}
		w->next++;
	}
}

static void on_ltrigger(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	(void)s;
	(void)type;
	(void)d;
	(void)len;
	lburst(ctx, 50);
}

static void run_loop(uint64_t seed, uint32_t pkt)
{
	struct pair p;
	static struct lrx x;
	static struct lw w;
	memset(&x, 0, sizeof x);
	memset(&w, 0, sizeof w);
	pthread_mutex_init(&x.mu, NULL);
	x.slow = 30;
	w.rng = seed * 0x9e3779b97f4a7c15ull + 3;
	sio_options o;
	sio_options_default(&o);
	o.max_packet_size = pkt;
	CHECK_OK(pair_open(&p, seed % 2 ? PK_SEQPACKET : PK_UNIX_STREAM, &o, &o, NULL, NULL));
	w.a = p.a;
	CHECK_OK(sio_set_handler(p.b, 7, on_lrec, NULL, &x));
	CHECK_OK(sio_set_handler(p.a, 8, on_ltrigger, NULL, &w));
	CHECK_OK(sio_session_start_loop(p.a));
	CHECK_OK(sio_session_start(p.b));
	int fd = sio_session_fd(p.a);
	for (int i = 0; i < 20000 && sio_session_state(p.a) != SIO_STATE_ESTABLISHED; i++) {
		struct pollfd pf = {fd, POLLIN, 0};
		poll(&pf, 1, 1);
		sio_session_process(p.a);
	}
	CHECK_EQ(sio_session_state(p.a), SIO_STATE_ESTABLISHED);
	for (int round = 0; round < 40; round++) {
		if (round % 4 == 1)
			CHECK_OK(sio_write_message(p.b, 8, "t", 1));
		lburst(&w, 50);
		for (int k = 0; k < 5; k++) {
			struct pollfd pf = {fd, POLLIN, 0};
			int to = sio_session_timeout_ms(p.a);
			poll(&pf, 1, to < 0 || to > 2 ? 2 : to);
			sio_session_process(p.a);
		}
	}
	/* everything accepted leaves */
	for (int i = 0; i < 30000; i++) {
		int done = 1;
		for (unsigned k = 0; k < w.nheld && done; k++)
			done = sio_send_info_done(w.held[k]);
		pthread_mutex_lock(&x.mu);
		int all = x.total >= w.next;
		pthread_mutex_unlock(&x.mu);
		if (done && all)
			break;
		struct pollfd pf = {fd, POLLIN, 0};
		poll(&pf, 1, 1);
		sio_session_process(p.a);
	}
	for (unsigned k = 0; k < w.nheld; k++) {
		CHECK(sio_send_info_done(w.held[k]));
		CHECK_EQ(sio_send_info_err(w.held[k]), 0);
		sio_send_info_release(w.held[k]);
	}
	usleep(20000);
	pthread_mutex_lock(&x.mu);
	if (getenv("WQV") || x.bad || x.total != w.next)
		fprintf(stderr, "loop seed %llu pkt %u: accepted %u got %u bad %d again %d other %d cbs %d\n",
			(unsigned long long)seed, pkt, w.next, x.total, x.bad, w.again, w.other, w.cbs);
	CHECK_EQ(x.bad, 0);
	CHECK_EQ(x.total, w.next);
	pthread_mutex_unlock(&x.mu);
	CHECK(w.again > 0);
	CHECK_EQ(w.other, 0);
	CHECK_EQ(w.cb_errs, 0);
	sio_close(p.a);
	for (int i = 0; i < 2000 && sio_session_state(p.a) != SIO_STATE_CLOSED; i++) {
		struct pollfd pf = {fd, POLLIN, 0};
		poll(&pf, 1, 1);
		sio_session_process(p.a);
	}
	pair_free(&p);
}

/* ---- fragmentation off: too large is refused at once ---------------------- */

static void run_nofrag(void)
{
	struct pair p;
	sio_options o;
	sio_options_default(&o);
	o.fragmentation = -1;
	o.max_packet_size = 256;
	static uint8_t m[20000];
	memset(m, 1, sizeof m);
	for (int started = 0; started < 2; started++) {
		CHECK_OK(pair_open(&p, PK_SEQPACKET, &o, &o, NULL, NULL));
		if (started)
			CHECK_OK(pair_start(&p));
		size_t lens[] = {300, 1000, 20000};
		for (int i = 0; i < 3; i++) {
			int e = 0;
			CHECK_EQ(sio_write_message(p.a, 7, m, lens[i]), SIO_ETOOBIG);
			CHECK(sio_write_message_async(p.a, 7, m, lens[i], NULL, NULL, &e) == NULL);
			CHECK_EQ(e, SIO_ETOOBIG);
			CHECK(sio_write_message_async(p.a, 7, m, lens[i], on_lcb, NULL, &e) == NULL);
			CHECK_EQ(e, SIO_ETOOBIG);
		}
		/* nothing was queued: a small one is the first to arrive */
		sio_send_info *si = sio_write_message_async(p.a, 7, m, 50, NULL, NULL, NULL);
		CHECK(si != NULL);
		if (!started)
			CHECK_OK(pair_start(&p));
		CHECK_EQ(sio_send_info_wait(si, 20000), 0);
		sio_send_info_release(si);
		sio_stats st;
		sio_session_stats(p.a, &st);
		CHECK_EQ(st.messages_sent, 1);
		pair_free(&p);
	}
}

int main(int argc, char **argv)
{
	CHECK_OK(sio_init());
	int rounds = argc > 1 ? atoi(argv[1]) : 6;
	uint64_t first = argc > 2 ? strtoull(argv[2], NULL, 10) : 1;
	const char *m = getenv("WQMODE");
	if (!m || strchr(m, 'c'))
		for (uint64_t s = first; s < first + (uint64_t)rounds; s++)
			run(s, s % 2 ? PK_SEQPACKET : PK_UNIX_STREAM,
			    (s / 2) % 2 ? 256 : 0);
	if (!m || strchr(m, 'l'))
		for (uint64_t s = first; s < first + (uint64_t)rounds; s++)
			run_loop(s, (s / 2) % 2 ? 256 : 0);
	if (!m || strchr(m, 'k'))
		for (uint64_t s = first; s < first + (uint64_t)rounds; s++)
			run_kill(s);
	if (!m || strchr(m, 'd'))
		for (uint64_t s = first; s < first + (uint64_t)rounds; s++)
			run_listener(s, 0);
	if (!m || strchr(m, 'f'))
		run_nofrag();
	return check_done("test_wq_attacks");
}
