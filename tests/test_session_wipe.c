/* Decrypted data does not stay in the library's buffers after use: once a
 * message was read (sio_read, a messenger) or its handler returned, no copy
 * of it is left in the transport's receive slots or stream buffer (where
 * packets are opened in place), the event arena, the read stream, the
 * messenger queue, or a reassembly buffer (kept for reuse). docs/SECURITY.md
 * ("Plaintext in memory") lists these buffers. Sessions run in event-loop
 * mode, so that every buffer can be inspected between two calls. */
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "frag.h"
#include "sess_pair.h"
#include "session_int.h"

static const char marker[] = "plaintext-marker-3f9c1d7e-must-be-wiped";
#define MLEN (sizeof marker - 1)

static int has_marker(const uint8_t *buf, size_t len)
{
	return buf && len >= MLEN && memmem(buf, len, marker, MLEN) != NULL;
}

/* Every buffer of S that held received plaintext, whole (capacity); names
 * those where the marker is found in *WHERE. */
static int session_has_marker(sio_session *s, sio_messenger *m, const char **where)
{
	static char names[256];
	names[0] = 0;
	pthread_mutex_lock(&s->sh->mu);
	const sio_tp *tp = &s->tp;
	struct {
		const char *name;
		const uint8_t *buf;
		size_t len;
	} b[] = {
	    {"transport slots", tp->slots, (size_t)tp->nslots * tp->slot_size},
	    {"stream receive buffer", tp->rbuf, tp->rcap},
	    {"read stream", s->rd.buf, s->rd.cap},
	    {"event arena", s->arena.buf, s->arena.cap},
	    {"spare event arena", s->arena2.buf, s->arena2.cap},
	    {"messenger queue", m ? m->q.buf : NULL, m ? m->q.cap : 0},
	};
	for (size_t i = 0; i < sizeof b / sizeof b[0]; i++)
		if (has_marker(b[i].buf, b[i].len)) {
			strncat(names, " ", sizeof names - strlen(names) - 1);
			strncat(names, b[i].name, sizeof names - strlen(names) - 1);
		}
	pthread_mutex_unlock(&s->sh->mu);
	*where = names;
	return names[0] != 0;
}

static void spin(struct pair *p)
{
	struct pollfd f[2] = {{sio_session_fd(p->a), POLLIN, 0}, {sio_session_fd(p->b), POLLIN, 0}};
	poll(f, 2, 10);
	sio_session_process(p->a);
	sio_session_process(p->b);
}

static uint8_t *big_msg(size_t len)
{
	uint8_t *b = malloc(len);
	for (size_t i = 0; i < len; i++)
		b[i] = (uint8_t)('a' + i % 23);
	memcpy(b + len / 2, marker, MLEN); /* in the middle: not in the first fragment */
	return b;
}

static int handled;
static size_t handled_len;
static void on_msg(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	(void)s;
	(void)type;
	(void)ctx;
	if (has_marker(d, len))
		handled++;
	handled_len = len;
}

static void run(enum pair_kind k)
{
	struct pair p;
	const char *where = "";
	const char *kn = pair_kind_name(k);
	CHECK_OK(pair_open(&p, k, NULL, NULL, NULL, NULL));
	CHECK_OK(sio_set_handler(p.b, 1, on_msg, NULL, NULL));
	sio_messenger *m = NULL;
	CHECK_OK(sio_messenger_open(p.b, 3, &m));
	CHECK_OK(sio_session_start_loop(p.a));
	CHECK_OK(sio_session_start_loop(p.b));
	for (int i = 0; i < 2000 && (sio_session_state(p.a) < SIO_STATE_ESTABLISHED ||
				     sio_session_state(p.b) < SIO_STATE_ESTABLISHED);
	     i++)
		spin(&p);
	CHECK_EQ(sio_session_state(p.b), SIO_STATE_ESTABLISHED);

	/* the default stream, read with sio_read */
	char msg[128], buf[256];
	int n = snprintf(msg, sizeof msg, "small %s message", marker);
	CHECK_EQ(sio_write(p.a, msg, (size_t)n), n);
	ssize_t r = SIO_EAGAIN;
	for (int i = 0; i < 2000 && r == SIO_EAGAIN; i++) {
		spin(&p);
		r = sio_read(p.b, buf, sizeof buf);
	}
	CHECK_EQ(r, n);
	if (session_has_marker(p.b, m, &where))
		check_fail(__FILE__, __LINE__, "%s: read data left in:%s", kn, where);

	/* a handler, given the message in place in the receive buffer */
	handled = 0;
	CHECK_OK(sio_write_message(p.a, 1, msg, (size_t)n));
	for (int i = 0; i < 2000 && !handled; i++)
		spin(&p);
	CHECK_EQ(handled, 1);
	if (session_has_marker(p.b, m, &where))
		check_fail(__FILE__, __LINE__, "%s: handled message left in:%s", kn, where);

	/* a messenger */
	CHECK_OK(sio_write_message(p.a, 3, msg, (size_t)n));
	r = SIO_EAGAIN;
	for (int i = 0; i < 2000 && r == SIO_EAGAIN; i++) {
		spin(&p);
		r = sio_messenger_read(m, buf, sizeof buf, NULL, 0);
	}
	CHECK_EQ(r, n);
	if (session_has_marker(p.b, m, &where))
		check_fail(__FILE__, __LINE__, "%s: messenger message left in:%s", kn, where);

	/* large messages: fragmented (handler: through the event arena) and a
	 * long read stream that grows its buffer */
	size_t blen = 150000;
	uint8_t *big = big_msg(blen);
	handled = 0;
	CHECK_OK(sio_write_message(p.a, 1, big, blen));
	for (int i = 0; i < 4000 && !handled; i++)
		spin(&p);
	CHECK_EQ(handled, 1);
	CHECK_EQ(handled_len, blen);
	if (session_has_marker(p.b, m, &where))
		check_fail(__FILE__, __LINE__, "%s: large handled message left in:%s", kn, where);
	for (int j = 0; j < 4; j++)
		CHECK_OK(sio_write_message(p.a, SIO_TYPE_READWRITE, big, blen));
	size_t got = 0;
	uint8_t *rb = malloc(4 * blen);
	for (int i = 0; i < 8000 && got < 4 * blen; i++) {
		spin(&p);
		r = sio_read(p.b, rb + got, 4 * blen - got);
		if (r > 0)
			got += (size_t)r;
	}
	CHECK_EQ(got, 4 * blen);
	CHECK(memcmp(rb + 3 * blen, big, blen) == 0);
	if (session_has_marker(p.b, m, &where))
		check_fail(__FILE__, __LINE__, "%s: large read data left in:%s", kn, where);
	/* our own copies too: malloc may hand this memory to the next
	 * session's buffers, where it would look like a leftover */
	explicit_bzero(rb, 4 * blen);
	explicit_bzero(big, blen);
	free(rb);
	free(big);
	sio_messenger_close(m);
	pair_free(&p);
}

/* The reassembly buffer of a delivered message is kept for reuse: without
 * the message in it. */
static const uint8_t *frag_seen;
static size_t frag_len;
static void on_frag(void *ctx, uint32_t type, const uint8_t *d, size_t len)
{
	(void)ctx;
	(void)type;
	frag_seen = d;
	frag_len = len;
	CHECK(has_marker(d, len));
}

static void test_frag_cache(void)
{
	sio_frag_rx *r = NULL;
	CHECK_OK(sio_frag_rx_new(&r, NULL));
	size_t total = 9000;
	uint8_t *msg = big_msg(total);
	for (uint32_t off = 0; off < total; off += 1000) {
		sio_frag_hdr h = {.type = 5, .id = 1, .total = (uint32_t)total, .off = off, .len = 1000};
		sio_frag_rx_add(r, 1, &h, msg + off, on_frag, NULL);
	}
	CHECK_EQ(frag_len, total);
	/* the buffer is cached (still allocated): it must hold no plaintext */
	if (frag_seen)
		CHECK(!has_marker(frag_seen, frag_len));
	explicit_bzero(msg, total);
	free(msg);
	sio_frag_rx_free(r);
}

int main(void)
{
	alarm(120);
	signal(SIGPIPE, SIG_DFL);
	CHECK_OK(sio_init());
	run(PK_UNIX_STREAM);
	run(PK_UNIX_DGRAM);
	run(PK_UDP_CONNECTED);
	run(PK_CUSTOM);
	test_frag_cache();
	return check_done("test_session_wipe");
}
