/* Closing: from either side, from inside a handler (no deadlock), from
 * another thread while a reader blocks, both at once; sessions freed with
 * completions outstanding; a peer that vanishes (stream: truncation; UDP:
 * dead-peer timeout), each reported as an error event and a state change. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "lib/mitm.h"
#include "sess_pair.h"

struct evrec {
	pthread_mutex_t mu;
	int errs[16], nerr;
	int closed_seen, handler_close_rc, handler_wait_rc, herr;
	int bad_events; /* checked by the main thread (CHECK is not thread-safe) */
};

static void on_error(sio_session *s, int err, const char *msg, void *ctx)
{
	struct evrec *e = ctx;
	pthread_mutex_lock(&e->mu);
	if (e->nerr < 16)
		e->errs[e->nerr++] = err;
	if (!msg || !msg[0])
		e->bad_events++;
	pthread_mutex_unlock(&e->mu);
}

static void on_state(sio_session *s, sio_state o, sio_state n, void *ctx)
{
	struct evrec *e = ctx;
	pthread_mutex_lock(&e->mu);
	if (n <= o)
		e->bad_events++;
	if (n == SIO_STATE_CLOSED)
		e->closed_seen++;
	pthread_mutex_unlock(&e->mu);
}

/* Error events run on the I/O thread, maybe just after the state change
 * that woke the test: wait for it (bounded). */
static int has_err(struct evrec *e, int err)
{
	int f = 0;
	for (int t = 0; t < 400 && !f; t++) {
		pthread_mutex_lock(&e->mu);
		for (int i = 0; i < e->nerr; i++)
			f |= e->errs[i] == err;
		pthread_mutex_unlock(&e->mu);
		if (!f)
			usleep(5000);
	}
	return f;
}

static void test_close_from_b(void)
{
	struct pair p;
	CHECK_OK(pair_open(&p, PK_UNIX_STREAM, NULL, NULL, NULL, NULL));
	CHECK_OK(pair_start(&p));
	CHECK_EQ(sio_write(p.b, "bye", 3), 3);
	CHECK_OK(sio_close_and_wait(p.b, 10000));
	CHECK_OK(sio_session_wait_state(p.a, SIO_STATE_CLOSED, 10000));
	char buf[8];
	/* what was written before the close is still delivered, then the end */
	CHECK_EQ(sio_read_timeout(p.a, buf, sizeof buf, 1000), 3);
	CHECK_EQ(sio_read_timeout(p.a, buf, sizeof buf, 1000), 0);
	CHECK_OK(sio_close(p.a)); /* closing a closed session is fine */
	pair_free(&p);

	/* closed before it was started: straight to CLOSED, cannot start */
	CHECK_OK(pair_open(&p, PK_UNIX_STREAM, NULL, NULL, NULL, NULL));
	CHECK_EQ(sio_session_state(p.a), SIO_STATE_NEW);
	CHECK_OK(sio_close(p.a));
	CHECK_EQ(sio_session_state(p.a), SIO_STATE_CLOSED);
	CHECK_EQ(sio_session_start(p.a), SIO_ECLOSED);
	CHECK_EQ(sio_session_wait_state(p.a, SIO_STATE_ESTABLISHED, 100), SIO_ECLOSED);
	CHECK_EQ(sio_write(p.a, "x", 1), SIO_ECLOSED);
	pair_free(&p);
}

/* A handler that closes its own session, and waits for it (which must not
 * wait on the I/O thread: it returns at once). */
static void closing_handler(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	struct evrec *e = ctx;
	int w = sio_write_message(s, 2, "ack", 3); /* from a handler: queued */
	int c = sio_close(s);
	int cw = sio_close_and_wait(s, 1000);
	pthread_mutex_lock(&e->mu);
	e->handler_close_rc = c | w;
	e->handler_wait_rc = cw;
	pthread_mutex_unlock(&e->mu);
}

static void herr(sio_session *s, uint32_t type, int err, void *ctx)
{
	struct evrec *e = ctx;
	pthread_mutex_lock(&e->mu);
	e->herr++;
	pthread_mutex_unlock(&e->mu);
}

static void test_close_in_handler(enum pair_kind k)
{
	struct pair p;
	struct evrec e;
	memset(&e, 0, sizeof e);
	pthread_mutex_init(&e.mu, NULL);
	sio_callbacks cb = {.ctx = &e, .on_state = on_state, .on_error = on_error};
	CHECK_OK(pair_open(&p, k, NULL, NULL, NULL, &cb));
	CHECK_OK(sio_set_handler(p.b, 1, closing_handler, herr, &e));
	CHECK_OK(pair_start(&p));
	CHECK_OK(sio_write_message(p.a, 1, "x", 1));
	CHECK_OK(sio_session_wait_state(p.b, SIO_STATE_CLOSED, 10000));
	CHECK_OK(sio_session_wait_state(p.a, SIO_STATE_CLOSED, 10000));
	pthread_mutex_lock(&e.mu);
	CHECK_EQ(e.handler_close_rc, 0);
	CHECK_EQ(e.handler_wait_rc, 0);
	pthread_mutex_unlock(&e.mu);
	for (int i = 0; i < 400; i++) {
		pthread_mutex_lock(&e.mu);
		int c = e.closed_seen;
		pthread_mutex_unlock(&e.mu);
		if (c)
			break;
		usleep(5000);
	}
	pthread_mutex_lock(&e.mu);
	CHECK_EQ(e.closed_seen, 1);
	CHECK_EQ(e.nerr, 0); /* graceful */
	CHECK_EQ(e.bad_events, 0);
	pthread_mutex_unlock(&e.mu);
	pair_free(&p);
}

struct reader {
	sio_session *s;
	ssize_t r;
};

static void *blocked_reader(void *arg)
{
	struct reader *rd = arg;
	char buf[4];
	rd->r = sio_read(rd->s, buf, sizeof buf);
	return NULL;
}

static void *closer(void *arg)
{
	sio_close(arg);
	return NULL;
}

static void test_close_while_reading(void)
{
	struct pair p;
	CHECK_OK(pair_open(&p, PK_SEQPACKET, NULL, NULL, NULL, NULL));
	CHECK_OK(pair_start(&p));
	struct reader ra = {p.a, 99}, rb = {p.b, 99};
	pthread_t ta, tb, c1, c2;
	pthread_create(&ta, NULL, blocked_reader, &ra);
	pthread_create(&tb, NULL, blocked_reader, &rb);
	usleep(20000);
	/* both sides close at once, from other threads */
	pthread_create(&c1, NULL, closer, p.a);
	pthread_create(&c2, NULL, closer, p.b);
	pthread_join(c1, NULL);
	pthread_join(c2, NULL);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	CHECK_EQ(ra.r, 0);
	CHECK_EQ(rb.r, 0);
	CHECK_EQ(sio_session_state(p.a), SIO_STATE_CLOSED);
	CHECK_EQ(sio_session_state(p.b), SIO_STATE_CLOSED);
	pair_free(&p);
}

static void done_cb(sio_send_info *si, int err, void *ctx)
{
	int *n = ctx;
	__atomic_add_fetch(n, 1, __ATOMIC_SEQ_CST);
}

/* Completions outstanding at free fail with SIO_ECANCELED; the objects stay
 * valid until released, even after the session is gone. */
static void test_free_with_pending(void)
{
	struct pair p;
	CHECK_OK(pair_open(&p, PK_UNIX_STREAM, NULL, NULL, NULL, NULL));
	/* not started: messages are queued until established, which never comes */
	int ncb = 0, err = -1;
	sio_send_info *si[5];
	for (int i = 0; i < 5; i++) {
		si[i] = sio_write_message_async(p.a, 3, "abc", 3, i < 2 ? done_cb : NULL, &ncb, &err);
		CHECK(si[i] != NULL);
		CHECK_OK(err);
	}
	CHECK_EQ(sio_send_info_done(si[0]), 0);
	CHECK_EQ(sio_send_info_wait(si[0], 0), SIO_ETIMEDOUT);
	sio_send_info_release(si[4]); /* released before completion */
	sio_session_free(p.a);
	p.a = NULL;
	for (int i = 0; i < 4; i++) {
		CHECK(sio_send_info_done(si[i]));
		CHECK_EQ(sio_send_info_wait(si[i], -1), SIO_ECANCELED);
		CHECK_EQ(sio_send_info_err(si[i]), SIO_ECANCELED);
		sio_send_info_release(si[i]);
	}
	CHECK_EQ(ncb, 2);
	pair_free(&p);
}

/* The peer disappears without a close: on a stream the end of file without
 * a close message is a truncation. */
static void test_vanish_stream(enum pair_kind k)
{
	struct pair p;
	struct evrec e;
	memset(&e, 0, sizeof e);
	pthread_mutex_init(&e.mu, NULL);
	sio_callbacks ca = {.ctx = &e, .on_state = on_state, .on_error = on_error};
	CHECK_OK(pair_open(&p, k, NULL, NULL, &ca, NULL));
	CHECK_OK(pair_start(&p));
	sio_session_free(p.b);
	p.b = NULL;
	for (int i = 1; i < 4; i++) { /* b's descriptors (pipes: b holds 1 and 2) */
		if (k == PK_PIPES ? (i == 1 || i == 2) : i == 1) {
			close(p.fds[i]);
			p.fds[i] = -1;
		}
	}
	CHECK_OK(sio_session_wait_state(p.a, SIO_STATE_CLOSED, 10000));
	/* waiting for a state the session never reached reports why it ended */
	int r = sio_session_wait_state(p.a, SIO_STATE_ESTABLISHED, 0);
	CHECK_EQ(r, 0); /* it was established before */
	char buf[4];
	r = (int)sio_read_timeout(p.a, buf, 4, 1000);
	CHECK(r == SIO_ETRUNCATED || r == SIO_EIO);
	CHECK(has_err(&e, r));
	CHECK_EQ(e.bad_events, 0);
	pair_free(&p);
}

static void test_vanish_udp(void)
{
	struct pair p;
	struct evrec e;
	memset(&e, 0, sizeof e);
	pthread_mutex_init(&e.mu, NULL);
	sio_callbacks ca = {.ctx = &e, .on_state = on_state, .on_error = on_error};
	sio_options o;
	memset(&o, 0, sizeof o);
	o.keepalive_ns = 50000000;   /* 50 ms */
	o.dead_peer_ns = 400000000;  /* 400 ms */
	CHECK_OK(pair_open(&p, PK_UDP_CONNECTED, &o, &o, &ca, NULL));
	CHECK_OK(pair_start(&p));
	usleep(600000); /* alive: keepalives flow both ways */
	CHECK_EQ(sio_session_state(p.a), SIO_STATE_ESTABLISHED);
	/* a reader blocked (polling the transport itself) must be woken by a
	 * timer-driven end, when no packet arrives at all */
	struct reader ra = {p.a, 99};
	pthread_t tr;
	pthread_create(&tr, NULL, blocked_reader, &ra);
	usleep(50000);
	sio_session_free(p.b);
	p.b = NULL;
	CHECK_OK(sio_session_wait_state(p.a, SIO_STATE_CLOSED, 20000));
	pthread_join(tr, NULL);
	CHECK_EQ(ra.r, SIO_EPEERDEAD);
	CHECK(has_err(&e, SIO_EPEERDEAD));
	char buf[4];
	CHECK_EQ(sio_read_timeout(p.a, buf, 4, 1000), SIO_EPEERDEAD);
	pair_free(&p);
}

/* A callback transport that fails: the error becomes an event and CLOSED. */
static int broken_fd = -1;
static atomic_int broken;
static int broken_errno; /* what the broken side's recv fails with */

static ssize_t brk_send(void *ctx, const void *buf, size_t len)
{
	ssize_t r = send(*(int *)ctx, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
	return r < 0 ? -errno : r;
}

static ssize_t brk_recv(void *ctx, void *buf, size_t len)
{
	if (*(int *)ctx == broken_fd && atomic_load(&broken))
		return -broken_errno;
	ssize_t r = recv(*(int *)ctx, buf, len, MSG_DONTWAIT);
	return r < 0 ? -errno : r;
}

/* A custom transport whose recv fails with ENO ends the session with WANT:
 * a reset connection (ECONNRESET) is the peer gone without a graceful
 * close, other errors are transport failures. */
static void test_custom_error_one(int eno, int want)
{
	struct pair p;
	struct evrec e;
	memset(&e, 0, sizeof e);
	pthread_mutex_init(&e.mu, NULL);
	sio_callbacks ca = {.ctx = &e, .on_state = on_state, .on_error = on_error};
	memset(&p, 0, sizeof p);
	sio_transport ta, tb;
	CHECK_OK(pair_identities(&p, 1, 2));
	CHECK_OK(pair_transports(&p, PK_CUSTOM, &ta, &tb));
	ta.send = tb.send = brk_send;
	ta.recv = tb.recv = brk_recv;
	ta.poll_fd = -1; /* polled: the failure is found without any input */
	broken_fd = p.fds[0];
	broken_errno = eno;
	atomic_store(&broken, 0);
	CHECK_OK(sio_session_new(&p.a, p.ida, p.ra, &ta, NULL, &ca));
	CHECK_OK(sio_session_new(&p.b, p.idb, p.rb, &tb, NULL, NULL));
	CHECK_OK(pair_start(&p));
	atomic_store(&broken, 1);
	CHECK_OK(sio_session_wait_state(p.a, SIO_STATE_CLOSED, 10000));
	CHECK(has_err(&e, want));
	char buf[2];
	CHECK_EQ(sio_read_timeout(p.a, buf, 2, 1000), want);
	pair_free(&p);
}

static void test_custom_error(void)
{
	test_custom_error_one(EIO, SIO_EIO);
	test_custom_error_one(ECONNRESET, SIO_ETRUNCATED);
}

/* A synchronous write whose packet was sealed but never accepted by the
 * transport (full) must return once the transport fails and the session
 * closes, not wait forever for a send that cannot happen. */
static atomic_int send_stalled;

static ssize_t stall_send(void *ctx, const void *buf, size_t len)
{
	if (atomic_load(&send_stalled))
		return -EAGAIN;
	return brk_send(ctx, buf, len);
}

struct sync_writer {
	sio_session *s;
	atomic_int rc, done;
};

static void *sync_write(void *arg)
{
	struct sync_writer *w = arg;
	atomic_store(&w->rc, sio_write_message(w->s, 1, "stuck", 5));
	atomic_store(&w->done, 1);
	return NULL;
}

static void test_sync_write_transport_dies(void)
{
	struct pair p;
	memset(&p, 0, sizeof p);
	sio_transport ta, tb;
	CHECK_OK(pair_identities(&p, 1, 2));
	CHECK_OK(pair_transports(&p, PK_CUSTOM, &ta, &tb));
	ta.send = stall_send;
	tb.send = brk_send;
	ta.recv = tb.recv = brk_recv;
	ta.poll_fd = -1;
	broken_fd = p.fds[0];
	broken_errno = EIO;
	atomic_store(&broken, 0);
	atomic_store(&send_stalled, 0);
	CHECK_OK(sio_session_new(&p.a, p.ida, p.ra, &ta, NULL, NULL));
	CHECK_OK(sio_session_new(&p.b, p.idb, p.rb, &tb, NULL, NULL));
	CHECK_OK(pair_start(&p));
	atomic_store(&send_stalled, 1);
	struct sync_writer w = {.s = p.a};
	pthread_t th;
	CHECK_OK(pthread_create(&th, NULL, sync_write, &w));
	usleep(200000); /* the writer waits for a send that cannot happen */
	CHECK_EQ(atomic_load(&w.done), 0);
	atomic_store(&broken, 1); /* then the transport fails */
	for (int i = 0; i < 500 && !atomic_load(&w.done); i++)
		usleep(10000);
	CHECK_EQ(atomic_load(&w.done), 1);
	if (atomic_load(&w.done)) {
		pthread_join(th, NULL);
		CHECK_EQ(atomic_load(&w.rc), SIO_EIO);
	} else {
		atomic_store(&send_stalled, 0); /* let it finish to clean up */
		pthread_join(th, NULL);
	}
	pair_free(&p);
}

static void freeing_handler(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	atomic_fetch_add((atomic_int *)ctx, 1);
	sio_session_free(s); /* the I/O thread frees it once this returns */
}

/* A handler frees its own session: no deadlock, no use after free (ASan);
 * the transport is handed back (flags restored) once the I/O thread is done. */
static void test_free_in_handler(void)
{
	struct pair p;
	CHECK_OK(pair_open(&p, PK_UNIX_STREAM, NULL, NULL, NULL, NULL));
	atomic_int calls = 0;
	CHECK_OK(sio_set_handler(p.b, 1, freeing_handler, NULL, &calls));
	CHECK_OK(pair_start(&p));
	CHECK(fcntl(p.fds[1], F_GETFL) & O_NONBLOCK);
	/* three messages merged into one packet: after the first handler
	 * freed the session, the other two are not delivered */
	CHECK_OK(sio_write_message(p.a, 1, "x", 1));
	CHECK_OK(sio_write_message(p.a, 1, "y", 1));
	CHECK_OK(sio_write_message(p.a, 1, "z", 1));
	p.b = NULL; /* freed by its handler */
	int restored = 0;
	for (int i = 0; i < 1000 && !restored; i++) {
		restored = !(fcntl(p.fds[1], F_GETFL) & O_NONBLOCK);
		if (!restored)
			usleep(5000);
	}
	CHECK(restored);
	CHECK_EQ(atomic_load(&calls), 1);
	/* b's descriptor is still open (close_fds 0); shutting it down, a sees
	 * the end without a close message. (Not closed here: ThreadSanitizer
	 * cannot see that the detached I/O thread that used it has ended.) */
	shutdown(p.fds[1], SHUT_RDWR);
	p.fds[1] = -1; /* left to process exit */
	CHECK_OK(sio_session_wait_state(p.a, SIO_STATE_CLOSED, 10000));
	char buf[2];
	CHECK_EQ(sio_read_timeout(p.a, buf, 2, 1000), SIO_ETRUNCATED);
	pair_free(&p);
}

/* The program may free its identity and remote handles right after
 * sio_session_new(): the sessions hold references (ASan would see a use
 * after free otherwise), through the handshake and a key renewal. */
static void test_handles_freed_early(void)
{
	struct pair p;
	sio_options o = {0};
	o.kx_interval_ns = 200000000; /* renew every 0.2 s */
	CHECK_OK(pair_open(&p, PK_UDP_CONNECTED, &o, &o, NULL, NULL));
	sio_identity_free(p.ida);
	sio_identity_free(p.idb);
	sio_remote_free(p.ra);
	sio_remote_free(p.rb);
	p.ida = p.idb = NULL;
	p.ra = p.rb = NULL;
	CHECK_OK(pair_start(&p));
	usleep(600000);
	CHECK_EQ(sio_write(p.a, "hello", 5), 5);
	char buf[8];
	CHECK_EQ(sio_read_timeout(p.b, buf, sizeof buf, 5000), 5);
	CHECK(memcmp(buf, "hello", 5) == 0);
	sio_stats st;
	sio_session_stats(p.a, &st);
	CHECK(st.rekeys > 0);
	pair_free(&p);
}

/* Over UDP, B's acknowledgement of A's CLOSE is lost: B keeps answering
 * A's repeated CLOSE for a while after it closed (the linger), also while
 * the program frees it, so A's close still completes gracefully instead of
 * timing out after ten tries. */
static atomic_int drop_b2a;

static int drop_filter(void *ctx, int dir, uint8_t *pkt, size_t *len)
{
	(void)ctx;
	(void)len;
	if (dir == MITM_B2A && !(pkt[0] & 0x80) && atomic_load(&drop_b2a) > 0) {
		atomic_fetch_sub(&drop_b2a, 1);
		return 0;
	}
	return 1;
}

static void test_lost_close_ack(int free_b_at_once)
{
	mitm *m;
	int fa, fb;
	sio_transport ta, tb;
	sio_identity *ia, *ib;
	sio_remote *ra, *rb;
	uint8_t seed[32], pk[32];
	struct evrec ea;
	memset(&ea, 0, sizeof ea);
	pthread_mutex_init(&ea.mu, NULL);
	memset(seed, 0x5a, sizeof seed);
	CHECK_OK(sio_identity_from_seed(&ia, seed));
	memset(seed, 0x5b, sizeof seed);
	CHECK_OK(sio_identity_from_seed(&ib, seed));
	sio_identity_public_key(ib, pk);
	CHECK_OK(sio_remote_from_public_key(&ra, pk));
	sio_identity_public_key(ia, pk);
	CHECK_OK(sio_remote_from_public_key(&rb, pk));
	CHECK_OK(mitm_open(&m, &fa, &fb));
	sio_transport_fd(&ta, fa, fa);
	sio_transport_fd(&tb, fb, fb);
	sio_session *a, *b;
	sio_callbacks ca = {.ctx = &ea, .on_error = on_error};
	CHECK_OK(sio_session_new(&a, ia, ra, &ta, NULL, &ca));
	CHECK_OK(sio_session_new(&b, ib, rb, &tb, NULL, NULL));
	CHECK_OK(sio_session_start(a));
	CHECK_OK(sio_session_start(b));
	CHECK_OK(sio_session_wait_state(a, SIO_STATE_ESTABLISHED, 10000));
	CHECK_OK(sio_session_wait_state(b, SIO_STATE_ESTABLISHED, 10000));
	mitm_set_filter(m, drop_filter, NULL);
	atomic_store(&drop_b2a, 1);
	CHECK_OK(sio_close(a));
	CHECK_OK(sio_session_wait_state(b, SIO_STATE_CLOSED, 5000));
	if (free_b_at_once) {
		sio_session_free(b); /* lingers until A stopped repeating */
		b = NULL;
	}
	/* A's close completes well before its 10 s give-up */
	CHECK_OK(sio_session_wait_state(a, SIO_STATE_CLOSED, 5000));
	CHECK_EQ(atomic_load(&drop_b2a), 0); /* the first acknowledgement was lost */
	pthread_mutex_lock(&ea.mu);
	for (int i = 0; i < ea.nerr; i++)
		CHECK(ea.errs[i] != SIO_ETIMEDOUT);
	pthread_mutex_unlock(&ea.mu);
	sio_session_free(a);
	sio_session_free(b);
	mitm_free(m);
	sio_remote_free(ra);
	sio_remote_free(rb);
	sio_identity_free(ia);
	sio_identity_free(ib);
	pthread_mutex_destroy(&ea.mu);
}

int main(void)
{
	alarm(300);
	signal(SIGPIPE, SIG_DFL);
	CHECK_OK(sio_init());
	test_close_from_b();
	test_close_in_handler(PK_UNIX_STREAM);
	test_close_in_handler(PK_UDP_CONNECTED);
	test_close_while_reading();
	test_free_with_pending();
	test_vanish_stream(PK_UNIX_STREAM);
	test_vanish_stream(PK_TCP);
	test_vanish_stream(PK_PIPES);
	test_vanish_stream(PK_SEQPACKET);
	test_vanish_udp();
	test_free_in_handler();
	test_handles_freed_early();
	test_custom_error();
	test_sync_write_transport_dies();
	test_lost_close_ack(0);
	test_lost_close_ack(1);
	return check_done("test_session_close");
}
