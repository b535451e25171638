/* Authentication over real sockets: a wrong pinned identity and a wrong PSK
 * each end the key exchange with a clear error; the same PSK on both sides
 * works; an identity learned without a pinned key is reported through
 * on_remote_identity, can be accepted (then sio_session_remote_key gives it)
 * or refused (SIO_EREFUSED). */
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "sess_pair.h"

struct ev {
	pthread_mutex_t mu;
	int errs[8], nerr;
	int asked, refuse, connects;
	uint8_t pk[32];
};

static void on_error(sio_session *s, int err, const char *msg, void *ctx)
{
	struct ev *e = ctx;
	pthread_mutex_lock(&e->mu);
	if (e->nerr < 8)
		e->errs[e->nerr++] = err;
	pthread_mutex_unlock(&e->mu);
}

static int on_remote(sio_session *s, const uint8_t pk[32], void *ctx)
{
	struct ev *e = ctx;
	pthread_mutex_lock(&e->mu);
	e->asked++;
	memcpy(e->pk, pk, 32);
	int r = e->refuse;
	pthread_mutex_unlock(&e->mu);
	/* session calls that do not need the core work from here */
	(void)sio_session_state(s);
	return r;
}

static void on_connect(sio_session *s, void *ctx)
{
	struct ev *e = ctx;
	pthread_mutex_lock(&e->mu);
	e->connects++;
	pthread_mutex_unlock(&e->mu);
}

static int first_err(struct ev *e)
{
	for (int t = 0; t < 400; t++) {
		pthread_mutex_lock(&e->mu);
		int r = e->nerr ? e->errs[0] : 0;
		pthread_mutex_unlock(&e->mu);
		if (r)
			return r;
		usleep(5000);
	}
	return 0;
}

static void ev_init(struct ev *e)
{
	memset(e, 0, sizeof *e);
	pthread_mutex_init(&e->mu, NULL);
}

static void opts_fast(sio_options *o)
{
	memset(o, 0, sizeof *o);
	o->kx_retry_ns = 100000000;   /* 100 ms */
	o->kx_timeout_ns = 1000000000; /* 1 s */
}

/* A pins a key B does not hold. On a transport whose sender the kernel
 * vouches for (a stream, a pipe, a connected UNIX socket) A fails with
 * SIO_EAUTH as soon as B's signed message arrives, long before the
 * key-exchange timeout (60 s here); over UDP, where a message can come from
 * anyone who forges B's address, or an unconnected socket (EXCLUSIVE 0), A
 * waits for the timeout (1 s here) and then says why. */
static void test_wrong_identity(enum pair_kind k, int exclusive)
{
	struct pair p;
	struct ev ea;
	ev_init(&ea);
	memset(&p, 0, sizeof p);
	sio_transport ta, tb;
	CHECK_OK(pair_identities(&p, 1, 2));
	CHECK_OK(pair_transports(&p, k, &ta, &tb));
	/* a pins the key of seed 3, but b is seed 2 */
	sio_identity *other;
	uint8_t seed[32], pk[32];
	memset(seed, 3, sizeof seed);
	CHECK_OK(sio_identity_from_seed(&other, seed));
	sio_identity_public_key(other, pk);
	sio_remote *wrong;
	CHECK_OK(sio_remote_from_public_key(&wrong, pk));
	sio_options o;
	opts_fast(&o);
	if (exclusive)
		o.kx_timeout_ns = 60000000000; /* must not be what ends it */
	sio_callbacks ca = {.ctx = &ea, .on_error = on_error};
	CHECK_OK(sio_session_new(&p.a, p.ida, wrong, &ta, &o, &ca));
	CHECK_OK(sio_session_new(&p.b, p.idb, p.rb, &tb, &o, NULL));
	CHECK_OK(sio_session_start(p.a));
	CHECK_OK(sio_session_start(p.b));
	int r = sio_session_wait_state(p.a, SIO_STATE_ESTABLISHED, exclusive ? 10000 : 20000);
	CHECK_EQ(r, SIO_EAUTH);
	CHECK_EQ(first_err(&ea), SIO_EAUTH);
	CHECK_EQ(sio_session_state(p.a), SIO_STATE_CLOSED);
	if (!exclusive)
		CHECK(sio_session_wait_state(p.b, SIO_STATE_ESTABLISHED, 20000) < 0);
	else
		CHECK(sio_session_state(p.b) != SIO_STATE_ESTABLISHED);
	uint8_t k2[32];
	CHECK_EQ(sio_session_remote_key(p.a, k2), SIO_ESTATE);
	char buf[4];
	CHECK_EQ(sio_read_timeout(p.a, buf, 4, 100), SIO_EAUTH);
	CHECK_EQ(sio_write(p.a, buf, 4), SIO_EAUTH);
	pair_free(&p);
	sio_remote_free(wrong);
	sio_identity_free(other);
}

static void test_psk(enum pair_kind k, int same)
{
	struct pair p;
	struct ev ea;
	ev_init(&ea);
	static const uint8_t psk1[32] = "0123456789abcdef0123456789abcdef";
	static const uint8_t psk2[32] = "0123456789abcdef0123456789abcdeX";
	sio_options oa, ob;
	opts_fast(&oa);
	opts_fast(&ob);
	oa.psk = psk1;
	oa.psk_len = 32;
	ob.psk = same ? psk1 : psk2;
	ob.psk_len = 32;
	sio_callbacks ca = {.ctx = &ea, .on_error = on_error};
	CHECK_OK(pair_open(&p, k, &oa, &ob, &ca, NULL));
	int r = pair_start(&p);
	if (same) {
		CHECK_OK(r);
		CHECK_EQ(sio_write(p.a, "psk", 3), 3);
		char buf[4];
		CHECK_EQ(sio_read_timeout(p.b, buf, 4, 10000), 3);
	} else {
		CHECK_EQ(r, SIO_ENOKEYX);
		CHECK_EQ(first_err(&ea), SIO_ENOKEYX);
		sio_stats st;
		sio_session_stats(p.b, &st); /* b always hears a (a may never hear a learning b) */
		/* b's messages were dropped and counted, never answered */
		CHECK(st.drop_kx + st.drop_malformed + st.drop_unknown_key + st.drop_decrypt > 0);
		CHECK(st.packets_received > 0);
	}
	pair_free(&p);
}

static void test_learned(enum pair_kind k, int refuse)
{
	struct pair p;
	struct ev eb, ea;
	ev_init(&eb);
	ev_init(&ea);
	eb.refuse = refuse;
	memset(&p, 0, sizeof p);
	sio_transport ta, tb;
	CHECK_OK(pair_identities(&p, 1, 2));
	CHECK_OK(pair_transports(&p, k, &ta, &tb));
	sio_options o;
	opts_fast(&o);
	sio_callbacks cb = {.ctx = &eb, .on_error = on_error, .on_remote_identity = on_remote,
			    .on_connect = on_connect};
	sio_callbacks ca = {.ctx = &ea, .on_error = on_error, .on_connect = on_connect};
	CHECK_OK(sio_session_new(&p.a, p.ida, p.ra, &ta, &o, &ca));
	CHECK_OK(sio_session_new(&p.b, p.idb, NULL, &tb, &o, &cb)); /* learns */
	CHECK_OK(sio_session_start(p.a));
	CHECK_OK(sio_session_start(p.b));
	int r = sio_session_wait_state(p.b, SIO_STATE_ESTABLISHED, 20000);
	uint8_t apk[32], got[32];
	sio_identity_public_key(p.ida, apk);
	pthread_mutex_lock(&eb.mu);
	CHECK(eb.asked >= 1);
	CHECK(memcmp(eb.pk, apk, 32) == 0);
	pthread_mutex_unlock(&eb.mu);
	if (!refuse) {
		CHECK_OK(r);
		CHECK_OK(sio_session_remote_key(p.b, got));
		CHECK(memcmp(got, apk, 32) == 0);
		CHECK_OK(sio_session_wait_state(p.a, SIO_STATE_ESTABLISHED, 20000));
		CHECK_EQ(sio_write(p.b, "hi", 2), 2);
		char buf[4];
		CHECK_EQ(sio_read_timeout(p.a, buf, 4, 10000), 2);
		for (int t = 0; t < 400; t++) {
			pthread_mutex_lock(&eb.mu);
			int c = eb.connects;
			pthread_mutex_unlock(&eb.mu);
			if (c)
				break;
			usleep(5000);
		}
		pthread_mutex_lock(&eb.mu);
		CHECK_EQ(eb.connects, 1);
		pthread_mutex_unlock(&eb.mu);
	} else {
		CHECK_EQ(r, SIO_EREFUSED);
		CHECK_EQ(first_err(&eb), SIO_EREFUSED);
		CHECK(sio_session_wait_state(p.a, SIO_STATE_ESTABLISHED, 20000) < 0);
		pthread_mutex_lock(&eb.mu);
		CHECK_EQ(eb.connects, 0);
		pthread_mutex_unlock(&eb.mu);
	}
	pair_free(&p);
}

/* Different answers modes: both sides end with SIO_EANSWERS at once, also
 * when the side that detects it first is an unconnected socket that learns
 * its peer's address only from the message it refuses (it must still send
 * its own message so that the peer learns the mismatch). */
static void test_answers_mismatch(enum pair_kind k)
{
	struct pair p;
	memset(&p, 0, sizeof p);
	sio_transport ta, tb;
	CHECK_OK(pair_identities(&p, 1, 2));
	CHECK_OK(pair_transports(&p, k, &ta, &tb));
	sio_options oa, ob;
	opts_fast(&oa);
	oa.kx_timeout_ns = 60000000000; /* must not be what ends it */
	oa.kx_retry_ns = 1000000000;
	ob = oa;
	oa.answers_mode = SIO_ANSWERS_ANSWER_AND_WAIT;
	ob.answers_mode = SIO_ANSWERS_ANSWER;
	CHECK_OK(sio_session_new(&p.a, p.ida, p.ra, &ta, &oa, NULL));
	CHECK_OK(sio_session_new(&p.b, p.idb, p.rb, &tb, &ob, NULL));
	CHECK_OK(sio_session_start(p.b)); /* b first: its message goes nowhere */
	CHECK_OK(sio_session_start(p.a));
	CHECK_EQ(sio_session_wait_state(p.b, SIO_STATE_ESTABLISHED, 10000), SIO_EANSWERS);
	CHECK_EQ(sio_session_wait_state(p.a, SIO_STATE_ESTABLISHED, 10000), SIO_EANSWERS);
	pair_free(&p);
}

int main(void)
{
	alarm(300);
	signal(SIGPIPE, SIG_DFL);
	CHECK_OK(sio_init());
	test_wrong_identity(PK_TCP, 1);
	test_wrong_identity(PK_UDP_CONNECTED, 0); /* spoofable: waits */
	test_wrong_identity(PK_SEQPACKET, 1);
	test_wrong_identity(PK_UNIX_STREAM, 1);
	test_wrong_identity(PK_PIPES, 1);
	test_wrong_identity(PK_UDP_UNCONNECTED, 0);
	test_answers_mismatch(PK_UDP_UNCONNECTED);
	test_answers_mismatch(PK_TCP);
	test_psk(PK_UNIX_STREAM, 0);
	test_psk(PK_UDP_UNCONNECTED, 0);
	test_psk(PK_SEQPACKET, 1);
	test_learned(PK_UNIX_STREAM, 0);
	test_learned(PK_UDP_UNCONNECTED, 0);
	test_learned(PK_TCP, 1);
	return check_done("test_session_auth");
}
