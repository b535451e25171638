/* Messages: per-type messengers (read/write, truncation, pause/resume,
 * counters, exclusivity), the catch-all handler and counted drops of
 * unhandled types, handler removal, asynchronous writes from several threads
 * with completions waited in another thread (all delivered, in order per
 * writer), send-now-and-wait, invalid arguments, batched delivery to
 * handlers, messengers and the read stream, completion objects released
 * from several threads and after the session was freed. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "sess_pair.h"

static void test_messenger(void)
{
	struct pair p;
	CHECK_OK(pair_open(&p, PK_SEQPACKET, NULL, NULL, NULL, NULL));
	sio_messenger *ma, *mb, *dup;
	CHECK_OK(sio_messenger_open(p.a, 7, &ma));
	CHECK_OK(sio_messenger_open(p.b, 7, &mb));
	CHECK_EQ(sio_messenger_open(p.b, 7, &dup), SIO_ESTATE);
	CHECK_EQ(sio_set_handler(p.b, 7, NULL, NULL, NULL), SIO_ESTATE);
	CHECK_OK(pair_start(&p));
	CHECK_OK(sio_messenger_write(ma, "hello", 5));
	CHECK_OK(sio_messenger_write(ma, "0123456789", 10));
	CHECK_OK(sio_messenger_write(ma, "", 0));
	char buf[16];
	size_t full = 0;
	CHECK_EQ(sio_messenger_read(mb, buf, sizeof buf, &full, 10000), 5);
	CHECK_EQ(full, 5);
	CHECK(memcmp(buf, "hello", 5) == 0);
	/* whole messages: a short buffer truncates and reports the full size */
	CHECK_EQ(sio_messenger_read(mb, buf, 4, &full, 10000), 4);
	CHECK_EQ(full, 10);
	CHECK(memcmp(buf, "0123", 4) == 0);
	CHECK_EQ(sio_messenger_read(mb, buf, sizeof buf, &full, 10000), 0);
	CHECK_EQ(full, 0);
	CHECK_EQ(sio_messenger_read(mb, buf, sizeof buf, NULL, 0), SIO_EAGAIN);
	CHECK_EQ(sio_messenger_read(mb, buf, sizeof buf, NULL, 50), SIO_ETIMEDOUT);
	/* paused: queued, not delivered; resumed: delivered */
	sio_messenger_pause(mb);
	CHECK_OK(sio_messenger_write(ma, "later", 5));
	usleep(100000);
	CHECK_EQ(sio_messenger_read(mb, buf, sizeof buf, NULL, 0), SIO_EAGAIN);
	sio_messenger_resume(mb);
	CHECK_EQ(sio_messenger_read(mb, buf, sizeof buf, NULL, 10000), 5);
	uint64_t mi, bi, mo, bo;
	sio_messenger_counts(mb, &mi, &bi, &mo, &bo);
	CHECK_EQ(mi, 4);
	CHECK_EQ(bi, 20);
	CHECK_EQ(mo, 0);
	sio_messenger_counts(ma, &mi, &bi, &mo, &bo);
	CHECK_EQ(mo, 4);
	CHECK_EQ(bo, 20);
	/* other types do not reach the messenger; the default stream is apart */
	CHECK_OK(sio_write_message(p.a, 8, "x", 1));
	CHECK_EQ(sio_write(p.a, "rw", 2), 2);
	CHECK_EQ(sio_read_timeout(p.b, buf, sizeof buf, 10000), 2);
	CHECK_EQ(sio_messenger_read(mb, buf, sizeof buf, NULL, 0), SIO_EAGAIN);
	sio_stats st;
	sio_session_stats(p.b, &st);
	CHECK_EQ(st.drop_unknown_type, 1);
	/* once closed, the type is unhandled again */
	sio_messenger_close(mb);
	CHECK_OK(sio_write_message(p.a, 7, "y", 1));
	CHECK_EQ(sio_write(p.a, "z", 1), 1); /* ordered after it on the wire */
	CHECK_EQ(sio_read_timeout(p.b, buf, sizeof buf, 10000), 1);
	sio_session_stats(p.b, &st);
	CHECK_EQ(st.drop_unknown_type, 2);
	/* end of session: the reader gets 0 */
	CHECK_OK(sio_messenger_open(p.b, 9, &mb));
	CHECK_OK(sio_close_and_wait(p.a, 10000));
	CHECK_OK(sio_session_wait_state(p.b, SIO_STATE_CLOSED, 10000));
	CHECK_EQ(sio_messenger_read(mb, buf, sizeof buf, NULL, 1000), 0);
	sio_messenger_close(mb);
	sio_messenger_close(ma);
	pair_free(&p);
}

struct catchall {
	pthread_mutex_t mu;
	uint32_t types[8];
	int n;
};

static void on_any(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	struct catchall *c = ctx;
	pthread_mutex_lock(&c->mu);
	if (c->n < 8)
		c->types[c->n++] = type;
	pthread_mutex_unlock(&c->mu);
}

static void test_default_handler(void)
{
	struct pair p;
	struct catchall c = {PTHREAD_MUTEX_INITIALIZER, {0}, 0};
	CHECK_OK(pair_open(&p, PK_UNIX_STREAM, NULL, NULL, NULL, NULL));
	CHECK_OK(sio_set_default_handler(p.b, on_any, &c));
	CHECK_OK(sio_set_handler(p.b, 4, on_any, NULL, &c));
	CHECK_OK(sio_set_handler(p.b, 4, NULL, NULL, NULL)); /* removed again */
	CHECK_OK(pair_start(&p));
	CHECK_OK(sio_write_message(p.a, 4, "a", 1));
	CHECK_OK(sio_write_message(p.a, SIO_CHANNEL_MAX, "b", 1));
	CHECK_EQ(sio_write(p.a, "c", 1), 1); /* default stream still reaches read */
	char buf[2];
	CHECK_EQ(sio_read_timeout(p.b, buf, 2, 10000), 1);
	for (int t = 0; t < 400; t++) {
		pthread_mutex_lock(&c.mu);
		int n = c.n;
		pthread_mutex_unlock(&c.mu);
		if (n >= 2)
			break;
		usleep(5000);
	}
	pthread_mutex_lock(&c.mu);
	CHECK_EQ(c.n, 2);
	CHECK_EQ(c.types[0], 4);
	CHECK_EQ(c.types[1], SIO_CHANNEL_MAX);
	pthread_mutex_unlock(&c.mu);
	/* invalid arguments */
	CHECK_EQ(sio_write_message(p.a, SIO_TYPE_READWRITE + 1, "x", 1), SIO_EINVAL);
	CHECK_EQ(sio_write_message(p.a, 1, NULL, 1), SIO_EINVAL);
	CHECK_EQ(sio_set_handler(p.a, 0xffffffffu, on_any, NULL, NULL), SIO_EINVAL);
	int err = 0;
	CHECK(sio_write_message_async(p.a, 0x90000000u, "x", 1, NULL, NULL, &err) == NULL);
	CHECK_EQ(err, SIO_EINVAL);
	CHECK_EQ(sio_session_start(p.a), SIO_ESTATE); /* once */
	pair_free(&p);
}

#define WRITERS 3
#define PER_WRITER 3000

struct seqrx {
	pthread_mutex_t mu;
	uint32_t next[WRITERS];
	int bad, total;
};

static void on_seq(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	struct seqrx *r = ctx;
	uint32_t w, n;
	pthread_mutex_lock(&r->mu);
	if (len != 8) {
		r->bad++;
	} else {
		memcpy(&w, d, 4);
		memcpy(&n, d + 4, 4);
		if (w >= WRITERS || r->next[w] != n)
			r->bad++;
		else
			r->next[w]++;
	}
	r->total++;
	pthread_mutex_unlock(&r->mu);
}

struct wq { /* completions handed to the waiting thread */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	sio_send_info *q[WRITERS * PER_WRITER];
	int head, tail, errs;
};

struct writer {
	sio_session *s;
	struct wq *wq;
	uint32_t id;
	int failed;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	for (uint32_t i = 0; i < PER_WRITER; i++) {
		uint8_t m[8];
		memcpy(m, &w->id, 4);
		memcpy(m + 4, &i, 4);
		int err;
		sio_send_info *si = sio_write_message_async(w->s, 11, m, 8, NULL, NULL, &err);
		if (!si) {
			w->failed++;
			continue;
		}
		pthread_mutex_lock(&w->wq->mu);
		w->wq->q[w->wq->tail++] = si;
		pthread_cond_signal(&w->wq->cv);
		pthread_mutex_unlock(&w->wq->mu);
	}
	return NULL;
}

static void *waiter_main(void *arg)
{
	struct wq *q = arg;
	for (int n = 0; n < WRITERS * PER_WRITER; n++) {
		pthread_mutex_lock(&q->mu);
		while (q->head == q->tail)
			pthread_cond_wait(&q->cv, &q->mu);
		sio_send_info *si = q->q[q->head++];
		pthread_mutex_unlock(&q->mu);
		int r = (n % 100 == 0) ? sio_send_info_send_now_and_wait(si, 20000)
				       : sio_send_info_wait(si, 20000);
		if (r != 0)
			q->errs++;
		sio_send_info_release(si);
	}
	return NULL;
}

static void test_async_threads(enum pair_kind k)
{
	struct pair p;
	static struct seqrx rx;
	static struct wq wq;
	memset(&rx, 0, sizeof rx);
	memset(&wq, 0, sizeof wq);
	pthread_mutex_init(&rx.mu, NULL);
	pthread_mutex_init(&wq.mu, NULL);
	pthread_cond_init(&wq.cv, NULL);
	CHECK_OK(pair_open(&p, k, NULL, NULL, NULL, NULL));
	CHECK_OK(sio_set_handler(p.b, 11, on_seq, NULL, &rx));
	CHECK_OK(pair_start(&p));
	struct writer w[WRITERS];
	pthread_t tw[WRITERS], tq;
	pthread_create(&tq, NULL, waiter_main, &wq);
	for (int i = 0; i < WRITERS; i++) {
		w[i] = (struct writer){p.a, &wq, (uint32_t)i, 0};
		pthread_create(&tw[i], NULL, writer_main, &w[i]);
	}
	for (int i = 0; i < WRITERS; i++) {
		pthread_join(tw[i], NULL);
		CHECK_EQ(w[i].failed, 0);
	}
	pthread_join(tq, NULL);
	CHECK_EQ(wq.errs, 0);
	for (int t = 0; t < 2000; t++) {
		pthread_mutex_lock(&rx.mu);
		int n = rx.total;
		pthread_mutex_unlock(&rx.mu);
		if (n >= WRITERS * PER_WRITER)
			break;
		usleep(5000);
	}
	pthread_mutex_lock(&rx.mu);
	CHECK_EQ(rx.total, WRITERS * PER_WRITER);
	CHECK_EQ(rx.bad, 0);
	pthread_mutex_unlock(&rx.mu);
	sio_stats sa, sb;
	sio_session_stats(p.a, &sa);
	sio_session_stats(p.b, &sb);
	CHECK(sa.messages_sent >= WRITERS * PER_WRITER);
	CHECK(sb.messages_received >= WRITERS * PER_WRITER);
	CHECK(sa.packets_sent < sa.messages_sent); /* small messages were merged */
	pair_free(&p);
}

/* The write queue's phases (docs/ARCHITECTURE.md, "Write path"): one
 * thread writes (the writers' lock becomes biased to it), the session goes
 * idle (the consumer wipes the ring while holding the owner off), a second
 * thread writes (the bias is revoked for good), the first writes again, and
 * messages too large for the queue go in between. Every message arrives
 * once, in each writer's order, intact; every completion succeeds. */
struct phase_rx {
	pthread_mutex_t mu;
	uint32_t next[2];
	int bad, total;
};

static void on_phase(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	(void)s;
	(void)type;
	struct phase_rx *r = ctx;
	uint32_t w, n;
	pthread_mutex_lock(&r->mu);
	if (len < 8) {
		r->bad++;
	} else {
		memcpy(&w, d, 4);
		memcpy(&n, d + 4, 4);
		if (w > 1 || r->next[w] != n)
			r->bad++;
		else
			r->next[w]++;
		for (size_t i = 8; i < len; i++)
			r->bad += d[i] != (uint8_t)(n + i);
	}
	r->total++;
	pthread_mutex_unlock(&r->mu);
}

struct phase_writer {
	sio_session *s;
	uint32_t id, seq;
	int count, errs;
};

static void phase_write(struct phase_writer *w)
{
	uint8_t big[9000]; /* per thread: both write at once */
	for (int i = 0; i < w->count; i++) {
		uint32_t n = w->seq++;
		/* every 500th too large for the queue: the locked path, in order */
		size_t len = i % 500 == 499 ? sizeof big : 8 + (size_t)(i % 24);
		uint8_t *m = big;
		memcpy(m, &w->id, 4);
		memcpy(m + 4, &n, 4);
		for (size_t j = 8; j < len; j++)
			m[j] = (uint8_t)(n + j);
		int err;
		sio_send_info *si = sio_write_message_async(w->s, 12, m, len, NULL, NULL, &err);
		if (!si) {
			w->errs++;
			continue;
		}
		if (i % 1000 == 999 && sio_send_info_wait(si, 20000) != 0)
			w->errs++;
		sio_send_info_release(si);
	}
	/* a synchronous one at the end: returns once it left */
	uint8_t m[8];
	uint32_t n = w->seq++;
	memcpy(m, &w->id, 4);
	memcpy(m + 4, &n, 4);
	if (sio_write_message(w->s, 12, m, 8) != 0)
		w->errs++;
}

static void *phase_thread(void *arg)
{
	phase_write(arg);
	return NULL;
}

static void test_write_queue_phases(enum pair_kind k)
{
	struct pair p;
	static struct phase_rx rx;
	memset(&rx, 0, sizeof rx);
	pthread_mutex_init(&rx.mu, NULL);
	CHECK_OK(pair_open(&p, k, NULL, NULL, NULL, NULL));
	CHECK_OK(sio_set_handler(p.b, 12, on_phase, NULL, &rx));
	CHECK_OK(pair_start(&p));
	struct phase_writer a = {p.a, 0, 0, 20000, 0}, b = {p.a, 1, 0, 20000, 0};
	phase_write(&a);  /* biased to this thread */
	usleep(20000);    /* idle: the ring is wiped */
	phase_write(&a);
	pthread_t t;
	pthread_create(&t, NULL, phase_thread, &b); /* revokes the bias */
	phase_write(&a);                              /* concurrently */
	pthread_join(t, NULL);
	usleep(20000);
	phase_write(&a);
	CHECK_EQ(a.errs, 0);
	CHECK_EQ(b.errs, 0);
	int want = (int)(a.seq + b.seq);
	for (int i = 0; i < 2000; i++) {
		pthread_mutex_lock(&rx.mu);
		int done = rx.total >= want;
		pthread_mutex_unlock(&rx.mu);
		if (done)
			break;
		usleep(5000);
	}
	pthread_mutex_lock(&rx.mu);
	CHECK_EQ(rx.total, want);
	CHECK_EQ(rx.bad, 0);
	CHECK_EQ(rx.next[0], a.seq);
	CHECK_EQ(rx.next[1], b.seq);
	pthread_mutex_unlock(&rx.mu);
	sio_stats st;
	sio_session_stats(p.a, &st);
	CHECK_EQ(st.messages_sent, (uint64_t)want);
	pair_free(&p);
}

/* Every message goes through the write queue (docs/ARCHITECTURE.md, "Write
 * path"), whatever its kind: small ones without a completion callback
 * (completed per packet), small ones with one (their own object), larger
 * ones (a record pointing at the writer's buffer, consumed before the call
 * returns). Messages of each kind written before sio_session_start() all
 * leave once the session is established, in order, intact, and complete
 * with success; on a session closed before it started they all fail, each
 * callback runs once with the error, and later writes fail at once. */
struct kinds_rx {
	pthread_mutex_t mu;
	uint32_t next;
	int bad, total, delay; /* delay: the first messages stall the reader */
};

static size_t kind_len(uint32_t n)
{
	/* Before the start the core takes one message larger than a packet
	 * and, while it holds its rest, no other one beyond what the queue
	 * keeps (up to 8 KiB each): one large message. */
	static const size_t lens[] = {5, 600, 2000, 300, 16};
	return n == 2 ? 20000 : lens[n % 5] + n % 3;
}

static void kind_fill(uint8_t *m, uint32_t n, size_t len)
{
	memcpy(m, &n, 4);
	for (size_t i = 4; i < len; i++)
		m[i] = (uint8_t)(n * 7 + i);
}

static void on_kind(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	(void)s;
	(void)type;
	struct kinds_rx *r = ctx;
	pthread_mutex_lock(&r->mu);
	uint32_t n = 0;
	if (len >= 4)
		memcpy(&n, d, 4);
	if (len < 4 || n != r->next) {
		r->bad++;
	} else {
		r->next++;
		for (size_t i = 4; i < len; i++)
			r->bad += d[i] != (uint8_t)(n * 7 + i);
	}
	r->total++;
	int delay = r->delay > 0 ? r->delay-- : 0;
	pthread_mutex_unlock(&r->mu);
	if (delay)
		usleep(3000);
}

struct cb_count {
	atomic_int calls, errs;
};

static void on_sent_count(sio_send_info *si, int err, void *ctx)
{
	(void)si;
	struct cb_count *c = ctx;
	atomic_fetch_add(&c->calls, 1);
	if (err)
		atomic_fetch_add(&c->errs, 1);
}

static int wait_total(struct kinds_rx *rx, int want)
{
	for (int i = 0; i < 4000; i++) {
		pthread_mutex_lock(&rx->mu);
		int n = rx->total;
		pthread_mutex_unlock(&rx->mu);
		if (n >= want)
			return n;
		usleep(5000);
	}
	return -1;
}

#define KINDS_N 40

static void test_queue_kinds_before_start(enum pair_kind k)
{
	struct pair p;
	static struct kinds_rx rx;
	static struct cb_count cc;
	static uint8_t m[20008];
	memset(&rx, 0, sizeof rx);
	memset(&cc, 0, sizeof cc);
	pthread_mutex_init(&rx.mu, NULL);
	CHECK_OK(pair_open(&p, k, NULL, NULL, NULL, NULL));
	CHECK_OK(sio_set_handler(p.b, 13, on_kind, NULL, &rx));
	sio_send_info *held[KINDS_N];
	int with_cb = 0;
	for (uint32_t n = 0; n < KINDS_N; n++) {
		size_t len = kind_len(n);
		kind_fill(m, n, len);
		int cb = n % 2, err = 0;
		held[n] = sio_write_message_async(p.a, 13, m, len, cb ? on_sent_count : NULL, &cc, &err);
		CHECK(held[n] != NULL);
		CHECK_EQ(err, 0);
		with_cb += cb;
	}
	CHECK_OK(pair_start(&p));
	for (int n = 0; n < KINDS_N; n++) {
		if (!held[n])
			continue;
		CHECK_EQ(sio_send_info_wait(held[n], 20000), 0);
		sio_send_info_release(held[n]);
	}
	CHECK_EQ(wait_total(&rx, KINDS_N), KINDS_N);
	pthread_mutex_lock(&rx.mu);
	CHECK_EQ(rx.bad, 0);
	CHECK_EQ(rx.next, (uint32_t)KINDS_N);
	pthread_mutex_unlock(&rx.mu);
	for (int i = 0; i < 400 && atomic_load(&cc.calls) < with_cb; i++)
		usleep(5000);
	CHECK_EQ(atomic_load(&cc.calls), with_cb);
	CHECK_EQ(atomic_load(&cc.errs), 0);
	pair_free(&p);

	/* closed before it started: everything queued fails */
	memset(&cc, 0, sizeof cc);
	CHECK_OK(pair_open(&p, k, NULL, NULL, NULL, NULL));
	with_cb = 0;
	for (uint32_t n = 0; n < KINDS_N; n++) {
		size_t len = kind_len(n);
		kind_fill(m, n, len);
		int cb = n % 2, err = 0;
		held[n] = sio_write_message_async(p.a, 13, m, len, cb ? on_sent_count : NULL, &cc, &err);
		CHECK(held[n] != NULL);
		with_cb += cb;
	}
	CHECK_OK(sio_close(p.a));
	for (int n = 0; n < KINDS_N; n++) {
		int r = held[n] ? sio_send_info_wait(held[n], 5000) : 0;
		CHECK(r < 0 && r != SIO_ETIMEDOUT);
	}
	int err = 0;
	CHECK(sio_write_message_async(p.a, 13, m, 8, on_sent_count, &cc, &err) == NULL);
	CHECK(err < 0);
	CHECK(sio_write_message_async(p.a, 13, m, 20000, NULL, NULL, &err) == NULL);
	CHECK(err < 0);
	CHECK(sio_write_message(p.a, 13, m, 8) < 0);
	pair_free(&p); /* callbacks still queued run here */
	CHECK_EQ(atomic_load(&cc.calls), with_cb);
	CHECK_EQ(atomic_load(&cc.errs), with_cb);
	for (int n = 0; n < KINDS_N; n++)
		sio_send_info_release(held[n]); /* valid after the free */
}

/* On the I/O thread nothing may wait: a large message that finds the core's
 * ring full is taken back out of the queue (SIO_EAGAIN) and never sent.
 * A's handler answers each trigger with 30 000-byte messages until one is
 * refused, while B's reader stalls; B then receives exactly the accepted
 * ones, once each, in order, intact. */
struct burst {
	sio_session *a;
	uint32_t next;
	int again, other;
	atomic_int rounds; /* published after the rest (the test reads it) */
};

static void on_sent_nothing(sio_send_info *si, int err, void *ctx)
{
	(void)si;
	(void)err;
	(void)ctx;
}

static void on_trigger(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	(void)type;
	(void)d;
	(void)len;
	struct burst *b = ctx;
	static uint8_t m[30000];
	for (int i = 0; i < 2000; i++) {
		kind_fill(m, b->next, sizeof m);
		int err = 0;
		sio_send_info *si = sio_write_message_async(s, 13, m, sizeof m, NULL, NULL, &err);
		if (!si) {
			if (err == SIO_EAGAIN)
				b->again++;
			else
				b->other++;
			break;
		}
		sio_send_info_release(si);
		b->next++;
	}
	/* and a small one with a callback after the refusal: still in order */
	kind_fill(m, b->next, 12);
	int err = 0;
	sio_send_info *si = sio_write_message_async(s, 13, m, 12, on_sent_nothing, NULL, &err);
	if (si) {
		sio_send_info_release(si);
		b->next++;
	} else if (err != SIO_EAGAIN) {
		b->other++;
	}
	atomic_fetch_add(&b->rounds, 1);
}

static void test_queue_refused_on_io_thread(enum pair_kind k)
{
	struct pair p;
	static struct kinds_rx rx;
	static struct burst b;
	memset(&rx, 0, sizeof rx);
	memset(&b, 0, sizeof b);
	pthread_mutex_init(&rx.mu, NULL);
	rx.delay = 40;
	CHECK_OK(pair_open(&p, k, NULL, NULL, NULL, NULL));
	b.a = p.a;
	CHECK_OK(sio_set_handler(p.a, 14, on_trigger, NULL, &b));
	CHECK_OK(sio_set_handler(p.b, 13, on_kind, NULL, &rx));
	CHECK_OK(pair_start(&p));
	for (int i = 0; i < 3; i++) {
		CHECK_OK(sio_write_message(p.b, 14, "go", 2));
		for (int t = 0; t < 2000 && atomic_load(&b.rounds) <= i; t++)
			usleep(5000);
	}
	CHECK_EQ(atomic_load(&b.rounds), 3);
	CHECK(b.again >= 1); /* the refusal really happened */
	CHECK_EQ(b.other, 0);
	/* the queue still works after the refusals: one more from here */
	uint8_t m[16];
	kind_fill(m, b.next, sizeof m);
	sio_send_info *si = sio_write_message_async(p.a, 13, m, sizeof m, on_sent_nothing, NULL, NULL);
	CHECK(si != NULL);
	CHECK_EQ(sio_send_info_wait(si, 20000), 0);
	sio_send_info_release(si);
	b.next++;
	CHECK_EQ(wait_total(&rx, (int)b.next), (int)b.next);
	usleep(20000); /* nothing more may come */
	pthread_mutex_lock(&rx.mu);
	CHECK_EQ(rx.total, (int)b.next);
	CHECK_EQ(rx.bad, 0);
	pthread_mutex_unlock(&rx.mu);
	sio_stats st;
	sio_session_stats(p.a, &st);
	CHECK_EQ(st.messages_sent, (uint64_t)b.next);
	pair_free(&p);
}

/* ---- batched delivery ---------------------------------------------------- */

/* The receiving side hands a packet's messages to handlers in runs (one
 * event per run of messages for the same handler, not one per message).
 * Messages for two handlers (same function, different contexts), the
 * default handler, a messenger and the read stream are interleaved, and
 * big ones (fragmented, delivered from the arena, not in place) mixed in:
 * every handler message arrives exactly once, in the order written, to the
 * handler set for its type when it was received, with its own context and
 * bytes. Halfway, the handler replaces itself for type 2 from inside a
 * run: nothing is delivered twice or lost across the change. */
#define BD_MSGS 3000
#define BD_BIG 100000

struct bd_log {
	int ctx_id;
	struct bd_state *st;
};

struct bd_state {
	struct bd_log h1, h2, h2b, def;
	uint32_t seen[BD_MSGS]; /* handler messages in arrival order */
	int n, bad, swapped, saw_new;
	atomic_int done;
};

static uint32_t bd_type(uint32_t i)
{
	/* runs of different lengths: 1 1 1 2 2 5 1 3 0 2 ... */
	static const uint32_t pat[] = {1, 1, 1, 2, 2, 5, 1, 3, 0, 2, 2, 2, 1, 5, 5};
	return pat[i % (sizeof pat / sizeof pat[0])];
}

static size_t bd_len(uint32_t i)
{
	return i % 97 == 50 ? BD_BIG : 4 + i % 13;
}

static void bd_fill(uint8_t *b, uint32_t i, size_t len)
{
	memcpy(b, &i, 4);
	for (size_t k = 4; k < len; k++)
		b[k] = (uint8_t)(i * 7 + k);
}

static int bd_check(const uint8_t *d, size_t len, uint32_t *idx)
{
	if (len < 4)
		return 0;
	memcpy(idx, d, 4);
	if (*idx >= BD_MSGS || len != bd_len(*idx))
		return 0;
	for (size_t k = 4; k < len; k++)
		if (d[k] != (uint8_t)(*idx * 7 + k))
			return 0;
	return 1;
}

static void on_bd(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	struct bd_log *l = ctx;
	struct bd_state *st = l->st;
	uint32_t i;
	int ok_ctx;
	if (type == 2) {
		/* the old context until a message reaches the new one (those
		 * queued before the change still go to the old one), never
		 * the old one after that */
		ok_ctx = l->ctx_id == 3 ? st->swapped : l->ctx_id == 2 && !st->saw_new;
		if (l->ctx_id == 3)
			st->saw_new = 1;
	} else {
		ok_ctx = l->ctx_id == (type == 1 ? 1 : 4);
	}
	if (!bd_check(d, len, &i) || bd_type(i) != type || !ok_ctx || st->n >= BD_MSGS) {
		st->bad++;
		return;
	}
	st->seen[st->n++] = i;
	atomic_store_explicit(&st->done, st->n, memory_order_release);
	if (type == 2 && !st->swapped && i >= BD_MSGS / 2) {
		st->swapped = 1;
		if (sio_set_handler(s, 2, on_bd, NULL, &st->h2b) != 0)
			st->bad++;
	}
}

static void test_batched_delivery(void)
{
	struct pair p;
	static struct bd_state st;
	memset(&st, 0, sizeof st);
	st.h1 = (struct bd_log){1, &st};
	st.h2 = (struct bd_log){2, &st};
	st.h2b = (struct bd_log){3, &st};
	st.def = (struct bd_log){4, &st};
	CHECK_OK(pair_open(&p, PK_SEQPACKET, NULL, NULL, NULL, NULL));
	sio_messenger *mb;
	CHECK_OK(sio_set_handler(p.b, 1, on_bd, NULL, &st.h1));
	CHECK_OK(sio_set_handler(p.b, 2, on_bd, NULL, &st.h2));
	CHECK_OK(sio_set_default_handler(p.b, on_bd, &st.def));
	CHECK_OK(sio_messenger_open(p.b, 3, &mb));
	CHECK_OK(pair_start(&p));
	uint8_t *buf = malloc(BD_BIG);
	CHECK(buf != NULL);
	int handled = 0, to_msgr = 0, to_rd = 0;
	size_t rd_bytes = 0;
	/* asynchronous writes in bursts: they merge into shared packets */
	for (uint32_t i = 0; i < BD_MSGS; i++) {
		uint32_t type = bd_type(i);
		size_t len = bd_len(i);
		bd_fill(buf, i, len);
		int err = 0;
		sio_send_info *si = sio_write_message_async(p.a, type == 0 ? SIO_TYPE_READWRITE : type, buf,
							    len, NULL, NULL, &err);
		CHECK(si != NULL);
		sio_send_info_release(si);
		if (type == 3)
			to_msgr++;
		else if (type == 0)
			to_rd++, rd_bytes += len;
		else
			handled++;
	}
	/* the messenger: in order, whole */
	for (int k = 0, last = -1; k < to_msgr; k++) {
		size_t full = 0;
		ssize_t r = sio_messenger_read(mb, buf, BD_BIG, &full, 10000);
		uint32_t i;
		CHECK(r > 0 && bd_check(buf, (size_t)r, &i) && bd_type(i) == 3 && (int)i > last);
		if (r <= 0)
			break;
		last = (int)i;
	}
	/* the read stream: every byte, messages back to back in order */
	uint8_t *rd = malloc(rd_bytes);
	CHECK(rd != NULL);
	size_t got = 0;
	while (got < rd_bytes) {
		ssize_t r = sio_read_timeout(p.b, rd + got, rd_bytes - got, 10000);
		CHECK(r > 0);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	size_t off = 0;
	for (uint32_t i = 0; i < BD_MSGS && got == rd_bytes; i++) {
		if (bd_type(i) != 0)
			continue;
		uint32_t j;
		CHECK(bd_check(rd + off, bd_len(i), &j) && j == i);
		off += bd_len(i);
	}
	free(rd);
	/* the handlers: wait for all, then compare with the order written */
	sio_messenger_close(mb);
	for (int t = 0; t < 2000 && atomic_load_explicit(&st.done, memory_order_acquire) < handled; t++)
		usleep(5000);
	pair_free(&p); /* joins b's I/O thread: its handlers are done */
	CHECK_EQ(st.bad, 0);
	CHECK_EQ(st.swapped, 1);
	CHECK_EQ(st.saw_new, 1);
	CHECK_EQ(st.n, handled);
	for (uint32_t i = 0, k = 0; i < BD_MSGS && st.n == handled; i++) {
		uint32_t ty = bd_type(i);
		if (ty == 1 || ty == 2 || ty == 5)
			CHECK_EQ(st.seen[k++], i);
	}
	free(buf);
}

/* ---- releases gathered per chunk ----------------------------------------- */

/* Completion objects released by one thread are gathered per pool chunk
 * and set free together (docs/ARCHITECTURE.md, "Locking"); another
 * thread's releases are set at once. Phases: thread 1 releases (it becomes
 * the gathering one), thread 2 releases some, the pool is reused for a
 * second round, then the session is freed while thread 1 still has
 * gathered releases and holds unreleased objects, which it releases after
 * the free (the last one frees the pool: LeakSanitizer and ASan check that
 * nothing is lost or freed twice). */
#define RP_N 1000

struct rp_job {
	sio_send_info **si;
	int from, to, errs;
	/* the third round: release [from, mid), then wait for the free */
	int mid;
	pthread_mutex_t *mu;
	pthread_cond_t *cv;
	int *phase;
};

static void rp_range(struct rp_job *j, int from, int to)
{
	for (int i = from; i < to; i++) {
		if (sio_send_info_wait(j->si[i], 20000) != 0)
			j->errs++;
		sio_send_info_release(j->si[i]);
	}
}

static void *rp_release(void *arg)
{
	struct rp_job *j = arg;
	if (!j->mu) {
		rp_range(j, j->from, j->to);
		return NULL;
	}
	rp_range(j, j->from, j->mid);
	pthread_mutex_lock(j->mu);
	*j->phase = 1; /* released its part: the session may be freed */
	pthread_cond_broadcast(j->cv);
	while (*j->phase != 2)
		pthread_cond_wait(j->cv, j->mu);
	pthread_mutex_unlock(j->mu);
	/* after sio_session_free(): the objects still held */
	for (int i = j->mid; i < j->to; i++)
		sio_send_info_release(j->si[i]);
	return NULL;
}

static void rp_write(sio_session *s, sio_send_info **si, int n)
{
	for (int i = 0; i < n; i++) {
		int err = 0;
		si[i] = sio_write_message_async(s, 12, &i, sizeof i, NULL, NULL, &err);
		CHECK(si[i] != NULL);
	}
}

static void test_release_gathered(void)
{
	struct pair p;
	static sio_send_info *si[RP_N];
	CHECK_OK(pair_open(&p, PK_SEQPACKET, NULL, NULL, NULL, NULL));
	CHECK_OK(pair_start(&p));
	for (int round = 0; round < 3; round++) {
		/* two threads at once, over interleaved ranges: one gathers,
		 * the other's releases are set at once; the pool is reused by
		 * the next round */
		rp_write(p.a, si, RP_N);
		struct rp_job j[4];
		pthread_t t[4];
		for (int k = 0; k < 4; k++) {
			j[k] = (struct rp_job){si, k * RP_N / 4, (k + 1) * RP_N / 4, 0, 0, NULL, NULL, NULL};
			CHECK_OK(pthread_create(&t[k], NULL, rp_release, &j[k]));
		}
		for (int k = 0; k < 4; k++) {
			pthread_join(t[k], NULL);
			CHECK_EQ(j[k].errs, 0);
		}
	}
	/* last round: one thread releases part (some gathered, not yet
	 * set), then the session is freed, then it releases the rest */
	rp_write(p.a, si, RP_N);
	for (int i = 0; i < RP_N; i++)
		CHECK_EQ(sio_send_info_wait(si[i], 20000), 0);
	pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
	int phase = 0;
	struct rp_job d = {si, 0, RP_N, 0, RP_N / 2 + 7, &mu, &cv, &phase};
	pthread_t td;
	CHECK_OK(pthread_create(&td, NULL, rp_release, &d));
	pthread_mutex_lock(&mu);
	while (phase != 1)
		pthread_cond_wait(&cv, &mu);
	pthread_mutex_unlock(&mu);
	sio_session_free(p.a);
	p.a = NULL;
	pthread_mutex_lock(&mu);
	phase = 2;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
	pthread_join(td, NULL);
	CHECK_EQ(d.errs, 0);
	pair_free(&p);
}

int main(void)
{
	alarm(300);
	signal(SIGPIPE, SIG_DFL);
	CHECK_OK(sio_init());
	test_messenger();
	test_default_handler();
	test_async_threads(PK_SEQPACKET);
	test_async_threads(PK_TCP);
	test_async_threads(PK_UNIX_DGRAM); /* lossless, unlike UDP under load */
	test_write_queue_phases(PK_SEQPACKET);
	test_write_queue_phases(PK_TCP);
	test_queue_kinds_before_start(PK_SEQPACKET);
	test_queue_kinds_before_start(PK_TCP);
	test_queue_refused_on_io_thread(PK_SEQPACKET);
	test_queue_refused_on_io_thread(PK_TCP);
	test_batched_delivery();
	test_release_gathered();
	return check_done("test_session_messages");
}
