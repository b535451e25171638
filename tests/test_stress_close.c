/* Stress: several writer threads at full speed with small messages on one
 * session (sio_write_message_async, sio_write_message and sio_write mixed,
 * chosen per message), while another thread calls sio_close() at a random
 * moment (on the writers' session, on its peer, or both) and
 * sio_session_free() a random moment after the writers returned (the API
 * forbids any call on a session concurrent with its free).
 *
 * Each round: a session pair over a UNIX socketpair (seqpacket or stream,
 * both with their I/O threads), the receiver reading with sio_read() on a
 * thread (records parsed out of the byte stream) or through a handler.
 * Checked at the end of each round:
 *  - nothing crashed or hung (a watchdog alarm ends a hung run);
 *  - every completion object completed: waited on by its writer (0 or a
 *    session error, never a timeout) or, for those the writers still held,
 *    done after sio_session_free() with 0 or an error, then released there
 *    (objects outliving their session must stay valid; ASan sees misuse);
 *  - every completion callback ran exactly once;
 *  - every record delivered is intact (writer id, sequence, length and a
 *    pattern derived from them), per writer in strictly increasing order
 *    (so none duplicated) and one the writer really wrote;
 *  - when the writers' side closed, every message whose write or completion
 *    reported success (it went to the transport) was delivered: the
 *    receiver keeps reading until the transport ends, after the sender was
 *    freed (a receiver that closed itself may drop what comes after).
 * Rounds use seeds 1..N; SIO_STRESS_SEED=S runs round S alone,
 * SIO_STRESS_ROUNDS=N sets N. No timing is asserted. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "sess_pair.h"

#define NW 4               /* writer threads */
#define MAXSEQ (1u << 15)  /* messages per writer and round, at most */
#define HELD 64            /* completion objects a writer holds at once */
#define MINLEN 7           /* magic, writer, length, 4-byte sequence */
#define MAXLEN 120 /* with 256-byte packets, above 64 bytes: the locked way */

enum { ST_NONE = 0, ST_OK, ST_FAIL, ST_UNKNOWN };

struct round;

struct writer {
	struct round *r;
	int id;
	uint64_t rng;
	uint32_t attempted; /* sequences handed to a write call */
	sio_send_info *held[HELD];
	uint32_t held_seq[HELD];
	unsigned nheld, first; /* ring of held objects */
	pthread_t th;
};

struct round {
	struct pair p;
	int stream, handler;
	int closer; /* 0: the writers' session closes, 1: the peer does, 2: both */
	uint64_t seed;
	struct writer w[NW];
	/* per writer and sequence: what the sending side reported */
	_Atomic uint8_t status[NW][MAXSEQ];
	/* per writer and sequence: delivered to the receiver */
	uint8_t delivered[NW][MAXSEQ];
	int64_t last_seq[NW]; /* receiver only */
	_Atomic uint64_t cb_expected, cb_calls, cb_bad;
	_Atomic uint64_t bad_wait, bad_status; /* completion-side failures */
	_Atomic uint64_t rx_bad, rx_msgs;
	char rx_why[200];           /* first receive failure (receiver only) */
	atomic_int stop_writers;
	/* byte stream reassembly (sio_read variant) */
	uint8_t acc[4096];
	size_t nacc;
	pthread_t reader;
};

static uint64_t xs(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static uint8_t pat(int w, uint32_t seq, size_t i)
{
	return (uint8_t)(w * 31 + seq * 7 + i * 13);
}

static size_t make_record(uint8_t *b, int w, uint32_t seq, size_t len)
{
	b[0] = 0xa5;
	b[1] = (uint8_t)w;
	b[2] = (uint8_t)len;
	for (int i = 0; i < 4; i++)
		b[3 + i] = (uint8_t)(seq >> (8 * i));
	for (size_t i = MINLEN; i < len; i++)
		b[i] = pat(w, seq, i);
	return len;
}

/* ---- receiving -------------------------------------------------------------------- */

static void rx_fail(struct round *r, const char *why, int w, uint32_t seq)
{
	if (!atomic_fetch_add(&r->rx_bad, 1))
		snprintf(r->rx_why, sizeof r->rx_why, "%s (writer %d, seq %u)", why, w, seq);
}

/* One record of LEN bytes; returns 0 or -1 if it is not a record at all. */
static int rx_record(struct round *r, const uint8_t *d, size_t len)
{
	if (len < MINLEN || d[0] != 0xa5 || d[1] >= NW || d[2] != len) {
		rx_fail(r, "malformed record", len >= 2 ? d[1] : -1, 0);
		return -1;
	}
	int w = d[1];
	uint32_t seq = (uint32_t)d[3] | (uint32_t)d[4] << 8 | (uint32_t)d[5] << 16 |
		       (uint32_t)d[6] << 24;
	if (seq >= MAXSEQ) {
		rx_fail(r, "sequence out of range", w, seq);
		return -1;
	}
	for (size_t i = MINLEN; i < len; i++)
		if (d[i] != pat(w, seq, i)) {
			rx_fail(r, "altered payload", w, seq);
			return -1;
		}
	if ((int64_t)seq <= r->last_seq[w])
		rx_fail(r, seq == r->last_seq[w] ? "duplicate" : "out of order", w, seq);
	r->last_seq[w] = seq;
	r->delivered[w][seq]++;
	atomic_fetch_add(&r->rx_msgs, 1);
	return 0;
}

static void on_message(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	(void)s;
	struct round *r = ctx;
	if (type != SIO_TYPE_READWRITE)
		rx_fail(r, "wrong type", -1, 0);
	else
		rx_record(r, d, len);
}

/* The sio_read variant: records out of a byte stream (a read may return
 * part of a message or several). */
static void *reader_main(void *arg)
{
	struct round *r = arg;
	for (;;) {
		ssize_t n = sio_read(r->p.b, r->acc + r->nacc, sizeof r->acc - r->nacc);
		if (n <= 0)
			break; /* end of session (0 graceful, else the error) */
		r->nacc += (size_t)n;
		size_t off = 0;
		while (r->nacc - off >= 3) {
			size_t len = r->acc[off + 2];
			if (len < MINLEN || len > MAXLEN) {
				rx_fail(r, "bad record length in the stream", r->acc[off + 1], 0);
				return NULL;
			}
			if (r->nacc - off < len)
				break;
			if (rx_record(r, r->acc + off, len))
				return NULL;
			off += len;
		}
		memmove(r->acc, r->acc + off, r->nacc - off);
		r->nacc -= off;
	}
	if (r->nacc)
		rx_fail(r, "a partial record at the end of the stream", r->acc[1], 0);
	return NULL;
}

/* ---- writing ----------------------------------------------------------------------- */

static int ok_err(int e)
{
	return e <= 0 && e != SIO_ETIMEDOUT && e != SIO_EAGAIN;
}

static void on_done(sio_send_info *si, int err, void *ctx)
{
	(void)si;
	struct round *r = ctx;
	atomic_fetch_add(&r->cb_calls, 1);
	if (!ok_err(err))
		atomic_fetch_add(&r->cb_bad, 1);
}

static void set_status(struct round *r, int w, uint32_t seq, uint8_t st)
{
	atomic_store(&r->status[w][seq], st);
}

/* Waits for and releases the oldest held object. */
static void retire_oldest(struct writer *w)
{
	struct round *r = w->r;
	unsigned k = w->first;
	sio_send_info *si = w->held[k];
	int e = sio_send_info_wait(si, 30000);
	if (!ok_err(e) || !sio_send_info_done(si) || sio_send_info_err(si) != e)
		atomic_fetch_add(&r->bad_wait, 1);
	set_status(r, w->id, w->held_seq[k], e == 0 ? ST_OK : ST_FAIL);
	sio_send_info_release(si);
	w->first = (w->first + 1) % HELD;
	w->nheld--;
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	struct round *r = w->r;
	uint8_t buf[MAXLEN];
	while (!atomic_load(&r->stop_writers) && w->attempted < MAXSEQ) {
		uint32_t seq = w->attempted++;
		uint64_t x = xs(&w->rng);
		size_t len = make_record(buf, w->id, seq, MINLEN + (size_t)(x % (MAXLEN - MINLEN + 1)));
		unsigned mode = (unsigned)(x >> 8) % 16;
		int e;
		if (mode < 12) { /* mostly async, the path under redesign */
			if (w->nheld == HELD)
				retire_oldest(w);
			int with_cb = (x >> 16) % 4 == 0;
			sio_send_info *si = sio_write_message_async(r->p.a, SIO_TYPE_READWRITE, buf, len,
								    with_cb ? on_done : NULL, r, &e);
			if (!si) {
				set_status(r, w->id, seq, ST_FAIL);
				if (!ok_err(e) || e == 0)
					atomic_fetch_add(&r->bad_status, 1);
				break;
			}
			if (with_cb)
				atomic_fetch_add(&r->cb_expected, 1);
			if ((x >> 20) % 8 == 0) { /* fire and forget */
				set_status(r, w->id, seq, ST_UNKNOWN);
				sio_send_info_release(si);
				continue;
			}
			unsigned k = (w->first + w->nheld) % HELD;
			w->held[k] = si;
			w->held_seq[k] = seq;
			w->nheld++;
			set_status(r, w->id, seq, ST_UNKNOWN);
		} else if (mode < 14) {
			e = sio_write_message(r->p.a, SIO_TYPE_READWRITE, buf, len);
			set_status(r, w->id, seq, e == 0 ? ST_OK : ST_FAIL);
			if (e) {
				if (!ok_err(e))
					atomic_fetch_add(&r->bad_status, 1);
				break;
			}
		} else {
			ssize_t n = sio_write(r->p.a, buf, len);
			set_status(r, w->id, seq, n == (ssize_t)len ? ST_OK : ST_FAIL);
			if (n != (ssize_t)len) {
				if (n >= 0 || !ok_err((int)n))
					atomic_fetch_add(&r->bad_status, 1);
				break;
			}
		}
	}
	/* retire some now; the rest stay held across sio_session_free() */
	while (w->nheld > HELD / 2)
		retire_oldest(w);
	return NULL;
}

/* ---- one round -------------------------------------------------------------------------- */

static void sleep_us(uint64_t us)
{
	struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
	while (nanosleep(&ts, &ts))
		;
}

static void run_round(uint64_t seed)
{
	struct round *r = calloc(1, sizeof *r);
	if (!r) {
		CHECK(0);
		return;
	}
	r->seed = seed;
	uint64_t rng = seed * 0x9e3779b97f4a7c15ull + 1;
	xs(&rng);
	r->stream = seed % 2;
	r->handler = (seed / 2) % 2;
	r->closer = (int)((seed / 4) % 3);
	for (int w = 0; w < NW; w++)
		r->last_seq[w] = -1;

	/* every other pair of closers: 256-byte packets, so that the larger
	 * records take the write queue's locked way (WQ_BORROWED) while the
	 * smaller ones, with or without a callback, are queued lock-free */
	sio_options o;
	sio_options_default(&o);
	if ((seed / 12) % 2)
		o.max_packet_size = 256;
	if (pair_open(&r->p, r->stream ? PK_UNIX_STREAM : PK_SEQPACKET, &o, &o, NULL, NULL)) {
		CHECK(0);
		free(r);
		return;
	}
	if (r->handler)
		CHECK_OK(sio_set_handler(r->p.b, SIO_TYPE_READWRITE, on_message, NULL, r));
	if (pair_start(&r->p)) {
		fprintf(stderr, "round %llu: handshake failed\n", (unsigned long long)seed);
		CHECK(0);
		pair_free(&r->p);
		free(r);
		return;
	}
	if (!r->handler && pthread_create(&r->reader, NULL, reader_main, r)) {
		CHECK(0);
		pair_free(&r->p);
		free(r);
		return;
	}
	for (int w = 0; w < NW; w++) {
		r->w[w].r = r;
		r->w[w].id = w;
		r->w[w].rng = rng ^ (0x1234567ull * (uint64_t)(w + 1));
		xs(&r->w[w].rng);
		if (pthread_create(&r->w[w].th, NULL, writer_main, &r->w[w])) {
			CHECK(0);
			abort(); /* cannot unwind threads already started */
		}
	}

	/* the closer: a random moment, then close while the writers run */
	sleep_us(xs(&rng) % 30000);
	if (r->closer)
		CHECK_OK(sio_close(r->p.b));
	if (r->closer != 1)
		CHECK_OK(sio_close(r->p.a));
	/* writers see the close through their next write (sync writers blocked
	 * on a full transport are released by it); the flag only bounds a round
	 * in which writes went on succeeding after the close */
	sleep_us(xs(&rng) % 1000);
	atomic_store(&r->stop_writers, 1);
	for (int w = 0; w < NW; w++)
		pthread_join(r->w[w].th, NULL);
	/* free at a random moment: at once (packets still queued), while the
	 * close is in progress, or after it completed */
	unsigned how = (unsigned)(xs(&rng) % 3);
	if (how == 1)
		sleep_us(xs(&rng) % 2000);
	else if (how == 2)
		(void)sio_session_wait_state(r->p.a, SIO_STATE_CLOSED, 5000);
	sio_session_free(r->p.a);
	r->p.a = NULL;

	/* objects held across the free: done, with 0 or an error, still valid */
	uint64_t held_bad = 0;
	for (int w = 0; w < NW; w++) {
		struct writer *wr = &r->w[w];
		for (unsigned i = 0; i < wr->nheld; i++) {
			unsigned k = (wr->first + i) % HELD;
			sio_send_info *si = wr->held[k];
			int e = sio_send_info_err(si);
			if (!sio_send_info_done(si) || !ok_err(e) || sio_send_info_wait(si, 0) != e)
				held_bad++;
			set_status(r, w, wr->held_seq[k], e == 0 ? ST_OK : ST_FAIL);
			sio_send_info_release(si);
		}
		wr->nheld = 0;
	}
	/* every completion callback ran once, by the time free returned */
	uint64_t cb_exp = atomic_load(&r->cb_expected), cb_got = atomic_load(&r->cb_calls);

	/* end the transport so that the receiver reaches its end */
	shutdown(r->p.fds[0], SHUT_RDWR);
	if (r->handler)
		(void)sio_session_wait_state(r->p.b, SIO_STATE_CLOSED, 30000);
	else
		pthread_join(r->reader, NULL);
	sio_state bst = sio_session_state(r->p.b);
	sio_session_free(r->p.b);
	r->p.b = NULL;

	/* what the sender reported against what arrived */
	uint64_t sent_ok = 0, lost = 0, ghost = 0, attempted = 0;
	int first_lost_w = -1;
	uint32_t first_lost_seq = 0;
	for (int w = 0; w < NW; w++) {
		attempted += r->w[w].attempted;
		for (uint32_t s = 0; s < MAXSEQ; s++) {
			uint8_t st = atomic_load(&r->status[w][s]);
			if (r->delivered[w][s] && s >= r->w[w].attempted)
				ghost++;
			if (st == ST_OK) {
				sent_ok++;
				if (!r->delivered[w][s]) {
					if (!lost++) {
						first_lost_w = w;
						first_lost_seq = s;
					}
				}
			}
		}
	}
	int bad = 0;
#define RCHECK(cond, ...)                                                                       \
	do {                                                                                    \
		CHECK(cond);                                                                    \
		if (!(cond)) {                                                                  \
			bad = 1;                                                                \
			fprintf(stderr, "round %llu (%s, %s, closer %d): ",                   \
				(unsigned long long)seed, r->stream ? "stream" : "seqpacket",   \
				r->handler ? "handler" : "sio_read", r->closer);                \
			fprintf(stderr, __VA_ARGS__);                                           \
			fputc('\n', stderr);                                                    \
		}                                                                               \
	} while (0)
	RCHECK(bst == SIO_STATE_CLOSED, "receiver in state %d after the transport ended", (int)bst);
	RCHECK(!atomic_load(&r->bad_wait), "%llu completions failed their wait (timeout or mismatch)",
	       (unsigned long long)atomic_load(&r->bad_wait));
	RCHECK(!atomic_load(&r->bad_status), "%llu writes failed with an unexpected code",
	       (unsigned long long)atomic_load(&r->bad_status));
	RCHECK(!held_bad, "%llu held completion objects not done or inconsistent after free",
	       (unsigned long long)held_bad);
	RCHECK(cb_exp == cb_got && !atomic_load(&r->cb_bad),
	       "completion callbacks: %llu expected, %llu ran, %llu with a bad code",
	       (unsigned long long)cb_exp, (unsigned long long)cb_got,
	       (unsigned long long)atomic_load(&r->cb_bad));
	RCHECK(!atomic_load(&r->rx_bad), "receiver: %llu bad, first: %s",
	       (unsigned long long)atomic_load(&r->rx_bad), r->rx_why);
	RCHECK(!ghost, "%llu records delivered that were never written", (unsigned long long)ghost);
	/* a peer that closed itself may drop what arrives after its CLOSE */
	RCHECK(!lost || r->closer,
	       "%llu of %llu messages reported sent were not delivered (first: writer %d seq %u)",
	       (unsigned long long)lost, (unsigned long long)sent_ok, first_lost_w, first_lost_seq);
	if (getenv("SIO_STRESS_VERBOSE") || bad)
		fprintf(stderr,
			"round %llu: %s/%s, close by %s, %llu written, %llu reported sent, %llu "
			"delivered, free %s\n",
			(unsigned long long)seed, r->stream ? "stream" : "seqpacket",
			r->handler ? "handler" : "sio_read",
			r->closer == 0 ? "writer side" : r->closer == 1 ? "receiver" : "both",
			(unsigned long long)attempted,
			(unsigned long long)sent_ok, (unsigned long long)atomic_load(&r->rx_msgs),
			how == 0 ? "at once" : how == 1 ? "during the close" : "after CLOSED");
	pair_free(&r->p);
	free(r);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	/* a hang (a writer or a completion never released) fails the test */
	alarm(300);
	if (sio_init()) {
		fprintf(stderr, "sio_init failed\n");
		return 1;
	}
	const char *one = getenv("SIO_STRESS_SEED");
	const char *nr = getenv("SIO_STRESS_ROUNDS");
	uint64_t rounds = nr ? strtoull(nr, NULL, 10) : 36;
	if (one) {
		run_round(strtoull(one, NULL, 10));
	} else {
		for (uint64_t s = 1; s <= rounds; s++)
			run_round(s);
	}
	return check_done("test_stress_close");
}
