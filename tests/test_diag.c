/* Diagnostics callback (sio_callbacks.on_diag, docs/API.md "Diagnostics"):
 * levels, handshake and renewal lines, learned addresses, a refused identity
 * reported once (and only when its signature holds), drop summaries
 * rate-limited with counts that add up, and no callback = no change. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "kx.h"
#include "sess_pair.h"
#include "transport.h"

#define MAXL 4096

struct log {
	pthread_mutex_t mu;
	int n;
	int level[MAXL];
	char text[MAXL][256];
	int bad; /* a line with a newline, empty, or a level out of range */
};

static void on_diag(sio_session *s, int level, const char *msg, void *ctx)
{
	struct log *l = ctx;
	/* never called with the session lock held: this call takes it */
	sio_stats st;
	sio_session_stats(s, &st);
	pthread_mutex_lock(&l->mu);
	if (!msg[0] || strchr(msg, '\n') || level < SIO_DIAG_ERROR || level > SIO_DIAG_DEBUG)
		l->bad++;
	if (l->n < MAXL) {
		l->level[l->n] = level;
		snprintf(l->text[l->n], sizeof l->text[0], "%s", msg);
		l->n++;
	}
	pthread_mutex_unlock(&l->mu);
}

static void log_init(struct log *l)
{
	memset(l, 0, sizeof *l);
	pthread_mutex_init(&l->mu, NULL);
}

/* Lines containing WHAT (at LEVEL, or any level if 0). */
static int count(struct log *l, const char *what, int level)
{
	int k = 0;
	pthread_mutex_lock(&l->mu);
	for (int i = 0; i < l->n; i++)
		if (strstr(l->text[i], what) && (!level || l->level[i] == level))
			k++;
	pthread_mutex_unlock(&l->mu);
	return k;
}

static int max_level(struct log *l)
{
	int m = 0;
	pthread_mutex_lock(&l->mu);
	for (int i = 0; i < l->n; i++)
		if (l->level[i] > m)
			m = l->level[i];
	pthread_mutex_unlock(&l->mu);
	return m;
}

/* Sum of N in "dropped N ... (REASON..." lines. */
static uint64_t dropped(struct log *l, const char *reason, int *lines)
{
	uint64_t sum = 0;
	*lines = 0;
	pthread_mutex_lock(&l->mu);
	for (int i = 0; i < l->n; i++) {
		const char *t = l->text[i];
		if (strncmp(t, "dropped ", 8) || !strstr(t, reason))
			continue;
		sum += strtoull(t + 8, NULL, 10);
		(*lines)++;
	}
	pthread_mutex_unlock(&l->mu);
	return sum;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Waits (bounded: 20 s) until COND holds; the result is checked by the caller. */
#define WAIT_FOR(cond)                                                 \
	do {                                                               \
		for (int w_ = 0; w_ < 2000 && !(cond); w_++)               \
			usleep(10000);                                     \
	} while (0)

static void fp_of(int seed, char *fp, uint8_t pk[32])
{
	uint8_t s[32];
	sio_identity *id;
	memset(s, seed, sizeof s);
	sio_identity_from_seed(&id, s);
	sio_identity_public_key(id, pk);
	sio_fingerprint(pk, fp, SIO_FINGERPRINT_MAX);
	sio_identity_free(id);
}

/* Handshake and renewal lines, the learned address, and levels: A at
 * DEBUG sees each key-exchange message, B at the default (INFO) none. */
static void test_handshake(void)
{
	struct log la, lb;
	log_init(&la);
	log_init(&lb);
	sio_options o;
	memset(&o, 0, sizeof o);
	o.kx_interval_ns = 300000000; /* renewals every 0.3 s */
	sio_callbacks ca = {.ctx = &la, .on_diag = on_diag, .diag_level = SIO_DIAG_DEBUG};
	sio_callbacks cb = {.ctx = &lb, .on_diag = on_diag};
	struct pair p;
	memset(&p, 0, sizeof p);
	CHECK_OK(pair_open(&p, PK_UDP_UNCONNECTED, &o, &o, &ca, &cb));
	CHECK_OK(pair_start(&p));
	char fpa[SIO_FINGERPRINT_MAX], fpb[SIO_FINGERPRINT_MAX], want[128];
	uint8_t pk[32];
	fp_of(1, fpa, pk);
	fp_of(2, fpb, pk);
	snprintf(want, sizeof want, "established with %s (key generation 1)", fpb);
	WAIT_FOR(count(&la, want, SIO_DIAG_INFO) == 1);
	CHECK_EQ(count(&la, want, SIO_DIAG_INFO), 1);
	snprintf(want, sizeof want, "established with %s (key generation 1)", fpa);
	WAIT_FOR(count(&lb, want, SIO_DIAG_INFO) == 1);
	CHECK_EQ(count(&lb, want, SIO_DIAG_INFO), 1);
	CHECK(count(&la, "key exchange: sent generation 1", SIO_DIAG_DEBUG) >= 1);
	snprintf(want, sizeof want, "key exchange: received generation 1 from %s", fpb);
	CHECK(count(&la, want, SIO_DIAG_DEBUG) >= 1);
	/* B learns A's address: tentative from the key exchange, then
	 * validated by authenticated data */
	WAIT_FOR(count(&lb, "validated", SIO_DIAG_INFO) == 1);
	CHECK_EQ(count(&lb, "peer address 127.0.0.1:", SIO_DIAG_INFO), 2);
	CHECK_EQ(count(&lb, "(tentative: a key exchange came from it)", SIO_DIAG_INFO), 1);
	CHECK_EQ(count(&lb, "validated (authenticated data came from it)", SIO_DIAG_INFO), 1);
	CHECK_EQ(count(&la, "peer address", 0), 0); /* A's peer address is fixed */
	WAIT_FOR(count(&la, "keys renewed (generation 3)", SIO_DIAG_INFO) == 1);
	CHECK_EQ(count(&la, "keys renewed (generation 2)", SIO_DIAG_INFO), 1);
	CHECK_EQ(count(&la, "keys renewed (generation 3)", SIO_DIAG_INFO), 1);
	CHECK_EQ(max_level(&lb), SIO_DIAG_INFO); /* nothing more detailed than asked */
	CHECK_EQ(max_level(&la), SIO_DIAG_DEBUG);
	CHECK_EQ(la.bad + lb.bad, 0);
	/* a graceful close reports no error */
	CHECK_OK(sio_close_and_wait(p.a, 5000));
	pair_free(&p);
	CHECK_EQ(count(&la, "", SIO_DIAG_ERROR), 0);
	CHECK(la.n < MAXL && lb.n < MAXL);
}

/* A raw key-exchange message from identity SIGNER_SEED naming CLAIM_SEED. */
static void kx_msg(uint8_t m[SIO_KX_MSG_LEN], int claim_seed, int signer_seed)
{
	uint8_t seed[32], pk[32], sk[64];
	sio_kx_fields f;
	memset(&f, 0, sizeof f);
	randombytes_buf(f.sid_sender, sizeof f.sid_sender);
	f.gen = 1;
	f.flags = SIO_ANSWERS_ANSWER_AND_WAIT;
	f.created_ns = (uint64_t)time(NULL) * 1000000000ull;
	uint8_t esk[32];
	randombytes_buf(esk, sizeof esk);
	crypto_scalarmult_base(f.epub, esk);
	memset(seed, claim_seed, sizeof seed);
	crypto_sign_seed_keypair(pk, sk, seed);
	memcpy(f.idpk, pk, 32);
	memset(seed, signer_seed, sizeof seed);
	crypto_sign_seed_keypair(pk, sk, seed);
	sio_kx_build(m, &f, sk);
	sodium_memzero(sk, sizeof sk);
}

/* B (unconnected, learning) pins an identity A does not hold: A's retries
 * give one "refused" line, forged messages none; 1000 junk datagrams give a
 * bounded number of summary lines whose counts add up to the counters. */
static void test_refused_and_drops(void)
{
	struct log lb;
	log_init(&lb);
	struct pair p;
	memset(&p, 0, sizeof p);
	sio_transport ta, tb;
	CHECK_OK(pair_identities(&p, 1, 2));
	CHECK_OK(pair_transports(&p, PK_UDP_UNCONNECTED, &ta, &tb));
	char fpa[SIO_FINGERPRINT_MAX], fp4[SIO_FINGERPRINT_MAX], fp6[SIO_FINGERPRINT_MAX];
	char want[128];
	uint8_t pk3[32], pk[32];
	fp_of(1, fpa, pk);
	fp_of(4, fp4, pk);
	fp_of(6, fp6, pk);
	fp_of(3, want, pk3);
	sio_remote *wrong;
	CHECK_OK(sio_remote_from_public_key(&wrong, pk3));
	sio_options o;
	memset(&o, 0, sizeof o);
	o.kx_retry_ns = 50000000; /* A retries every 50 ms */
	sio_callbacks cb = {.ctx = &lb, .on_diag = on_diag};
	CHECK_OK(sio_session_new(&p.a, p.ida, p.ra, &ta, &o, NULL));
	CHECK_OK(sio_session_new(&p.b, p.idb, wrong, &tb, &o, &cb));
	CHECK_OK(sio_session_start(p.b));
	CHECK_OK(sio_session_start(p.a));
	/* many retries from A: one line */
	sio_stats st;
	for (int i = 0; i < 2000; i++) {
		sio_session_stats(p.b, &st);
		if (st.drop_kx >= 10)
			break;
		usleep(10000);
	}
	CHECK(st.drop_kx >= 10);
	snprintf(want, sizeof want, "refused %s (not pinned)", fpa);
	WAIT_FOR(count(&lb, want, SIO_DIAG_WARN) == 1);
	CHECK_EQ(count(&lb, want, SIO_DIAG_WARN), 1);
	CHECK_EQ(count(&lb, "refused", 0), 1);

	/* a message naming identity 4 but signed by another key: not reported;
	 * then a genuine one from identity 6: reported (events keep their
	 * order, so once 6's line is here, 4's would be too) */
	int raw = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in bto;
	socklen_t bl = sizeof bto;
	CHECK_OK(getsockname(p.fds[1], (struct sockaddr *)&bto, &bl));
	uint8_t m[SIO_KX_MSG_LEN];
	kx_msg(m, 4, 5);
	CHECK_EQ(sendto(raw, m, sizeof m, 0, (struct sockaddr *)&bto, bl), (ssize_t)sizeof m);
	kx_msg(m, 6, 6);
	CHECK_EQ(sendto(raw, m, sizeof m, 0, (struct sockaddr *)&bto, bl), (ssize_t)sizeof m);
	snprintf(want, sizeof want, "refused %s (not pinned)", fp6);
	WAIT_FOR(count(&lb, want, SIO_DIAG_WARN) == 1);
	CHECK_EQ(count(&lb, want, SIO_DIAG_WARN), 1);
	CHECK_EQ(count(&lb, fp4, 0), 0);

	/* 1000 junk datagrams, 50 at a time (each batch read before the next,
	 * so the socket buffer drops none): half look like data packets under
	 * a key B does not have, half are malformed */
	double t0 = now_s();
	uint8_t junk[64];
	for (int i = 0; i < 1000; i++) {
		randombytes_buf(junk, sizeof junk);
		junk[0] = i % 2 ? 0x40 : 0x01;
		CHECK_EQ(sendto(raw, junk, sizeof junk, 0, (struct sockaddr *)&bto, bl), (ssize_t)sizeof junk);
		if (i % 50 == 49) {
			sio_session_stats(p.b, &st);
			uint64_t target = (uint64_t)(i + 1) / 2;
			for (int w = 0; w < 2000 && (st.drop_unknown_key < target || st.drop_malformed < target); w++) {
				usleep(1000);
				sio_session_stats(p.b, &st);
			}
		}
	}
	sio_session_stats(p.b, &st);
	CHECK_EQ(st.drop_unknown_key, 500);
	CHECK_EQ(st.drop_malformed, 500);
	int nk = 0, nm = 0;
	WAIT_FOR(dropped(&lb, "(unknown key", &nk) == 500 && dropped(&lb, "(malformed", &nm) == 500);
	double el = now_s() - t0;
	CHECK_EQ(dropped(&lb, "(unknown key", &nk), 500);
	CHECK_EQ(dropped(&lb, "(malformed", &nm), 500);
	/* at most one line per reason and second (plus the first at once) */
	CHECK(nk >= 1 && nk <= 2 + (int)el);
	CHECK(nm >= 1 && nm <= 2 + (int)el);
	/* the refusals of A go on, summarised the same way */
	int ni = 0;
	WAIT_FOR(dropped(&lb, "(identity", &ni) > 0);
	CHECK(dropped(&lb, "(identity", &ni) > 0);
	CHECK_EQ(lb.bad, 0);
	CHECK_EQ(sio_session_state(p.b), SIO_STATE_KEY_EXCHANGING); /* still waiting */
	close(raw);
	pair_free(&p);
	sio_remote_free(wrong);
}

static int errors_seen;
static void on_error_count(sio_session *s, int err, const char *msg, void *ctx)
{
	(void)s;
	(void)msg;
	(void)ctx;
	if (err == SIO_EDECRYPT)
		__atomic_add_fetch(&errors_seen, 1, __ATOMIC_SEQ_CST);
}

/* Non-fatal error events (a run of decrypt failures, which anyone can
 * cause) reach on_error every time but on_diag rate-limited: 4 lines, then
 * one a second, the next shown line counting those not shown. */
static void test_warnings_limited(void)
{
	struct log lb;
	log_init(&lb);
	sio_options o;
	memset(&o, 0, sizeof o);
	o.error_on_decrypt_fails = 1; /* an event for each run, however short */
	sio_callbacks cb = {.ctx = &lb, .on_diag = on_diag, .on_error = on_error_count};
	struct pair p;
	memset(&p, 0, sizeof p);
	CHECK_OK(pair_open(&p, PK_UDP_UNCONNECTED, &o, &o, NULL, &cb));
	CHECK_OK(pair_start(&p));
	int raw = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in bto;
	socklen_t bl = sizeof bto;
	CHECK_OK(getsockname(p.fds[1], (struct sockaddr *)&bto, &bl));
	uint8_t junk[64], buf[8];
	double t0 = now_s();
	for (int i = 0; i < 40; i++) {
		randombytes_buf(junk, sizeof junk);
		junk[0] = 0x41; /* the key of generation 1 */
		CHECK_EQ(sendto(raw, junk, sizeof junk, 0, (struct sockaddr *)&bto, bl), (ssize_t)sizeof junk);
		/* a good packet ends the run */
		CHECK_EQ(sio_write(p.a, "x", 1), 1);
		CHECK_EQ(sio_read_timeout(p.b, buf, sizeof buf, 10000), 1);
	}
	WAIT_FOR(__atomic_load_n(&errors_seen, __ATOMIC_SEQ_CST) == 40);
	double el = now_s() - t0;
	CHECK_EQ(__atomic_load_n(&errors_seen, __ATOMIC_SEQ_CST), 40);
	int n = count(&lb, "failed to decrypt", SIO_DIAG_WARN);
	CHECK(n >= 4 && n <= 5 + (int)el);
	close(raw);
	pair_free(&p);
}

static void on_ldiag(sio_listener *l, int level, const char *msg, void *ctx)
{
	/* no lock of the listener held: this call takes it */
	sio_listener_stats st;
	sio_listener_stats_get(l, &st);
	on_diag(NULL, level, msg, ctx);
}

static int udp_sock(struct sockaddr_in *a)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	memset(a, 0, sizeof *a);
	a->sin_family = AF_INET;
	a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t l = sizeof *a;
	if (fd < 0 || bind(fd, (struct sockaddr *)a, sizeof *a) || getsockname(fd, (struct sockaddr *)a, &l))
		return -1;
	return fd;
}

/* A listener whose allowed set lacks the client: the client's retries give
 * one "refused" line, a forged message naming another identity none, the
 * drops are summarised; the allowed client is then served. */
static void test_listener(void)
{
	struct log ll;
	log_init(&ll);
	uint8_t seed[32], pk2[32], pk1[32];
	char fp1[SIO_FINGERPRINT_MAX], fp4[SIO_FINGERPRINT_MAX], want[128];
	fp_of(1, fp1, pk1);
	fp_of(2, want, pk2);
	fp_of(4, fp4, pk1);
	fp_of(1, fp1, pk1);
	sio_identity *srv, *c1;
	memset(seed, 9, sizeof seed);
	CHECK_OK(sio_identity_from_seed(&srv, seed));
	memset(seed, 1, sizeof seed);
	CHECK_OK(sio_identity_from_seed(&c1, seed));
	uint8_t spk[32];
	sio_identity_public_key(srv, spk);
	sio_remote *allowed, *srvr;
	CHECK_OK(sio_remote_from_public_key(&allowed, pk2));
	CHECK_OK(sio_remote_from_public_key(&srvr, spk));
	struct sockaddr_in sa, ca;
	int sfd = udp_sock(&sa);
	sio_listener_options lo;
	memset(&lo, 0, sizeof lo);
	lo.on_diag = on_ldiag;
	lo.ctx = &ll;
	lo.close_fd = 1;
	sio_listener *l;
	CHECK_OK(sio_listener_new(&l, srv, sfd, allowed, &lo));
	CHECK_OK(sio_listener_start(l));
	int cfd = udp_sock(&ca);
	sio_transport t;
	sio_transport_fd(&t, cfd, cfd);
	memcpy(&t.peer, &sa, sizeof sa);
	t.peer_len = sizeof sa;
	t.close_fds = 1;
	sio_options o;
	memset(&o, 0, sizeof o);
	o.listener_peer = 1;
	o.kx_retry_ns = 50000000;
	sio_session *cs;
	CHECK_OK(sio_session_new(&cs, c1, srvr, &t, &o, NULL));
	CHECK_OK(sio_session_start(cs));
	sio_listener_stats st;
	for (int i = 0; i < 2000; i++) {
		sio_listener_stats_get(l, &st);
		if (st.drop_unauthorized >= 5)
			break;
		usleep(10000);
	}
	CHECK(st.drop_unauthorized >= 5);
	/* a first message naming identity 4 but signed by another key, with
	 * the listener's prefix (mark, fresh connection id) */
	uint8_t m[1 + SIO_LISTENER_CID_BYTES + SIO_KX_MSG_LEN];
	m[0] = SIO_LISTENER_MARK;
	randombytes_buf(m + 1, SIO_LISTENER_CID_BYTES);
	kx_msg(m + 1 + SIO_LISTENER_CID_BYTES, 4, 5);
	int raw = socket(AF_INET, SOCK_DGRAM, 0);
	CHECK_EQ(sendto(raw, m, sizeof m, 0, (struct sockaddr *)&sa, sizeof sa), (ssize_t)sizeof m);
	/* then a genuine one from identity 6: once its line is here, 4's
	 * would be too (same socket, read in order) */
	randombytes_buf(m + 1, SIO_LISTENER_CID_BYTES);
	kx_msg(m + 1 + SIO_LISTENER_CID_BYTES, 6, 6);
	CHECK_EQ(sendto(raw, m, sizeof m, 0, (struct sockaddr *)&sa, sizeof sa), (ssize_t)sizeof m);
	char fp6[SIO_FINGERPRINT_MAX];
	fp_of(6, fp6, pk1);
	snprintf(want, sizeof want, "refused %s (not allowed)", fp6);
	WAIT_FOR(count(&ll, want, SIO_DIAG_WARN) == 1);
	CHECK_EQ(count(&ll, want, SIO_DIAG_WARN), 1);
	snprintf(want, sizeof want, "refused %s (not allowed)", fp1);
	WAIT_FOR(count(&ll, "(identity not allowed", SIO_DIAG_INFO) >= 2);
	CHECK_EQ(count(&ll, want, SIO_DIAG_WARN), 1);
	CHECK_EQ(count(&ll, fp4, 0), 0);
	CHECK(count(&ll, "(identity not allowed", SIO_DIAG_INFO) >= 2);
	sio_session_free(cs);
	sio_listener_stats_get(l, &st);
	int nl = 0;
	WAIT_FOR(dropped(&ll, "(identity not allowed", &nl) == st.drop_unauthorized);
	CHECK_EQ(dropped(&ll, "(identity not allowed", &nl), st.drop_unauthorized);
	CHECK_EQ(ll.bad, 0);
	close(raw);
	sio_listener_free(l);
	sio_remote_free(allowed);
	sio_remote_free(srvr);
	sio_identity_free(srv);
	sio_identity_free(c1);
}

/* No callback: nothing changes (a diag_level alone does nothing). */
static void test_no_callback(void)
{
	sio_callbacks c = {.diag_level = SIO_DIAG_DEBUG};
	struct pair p;
	memset(&p, 0, sizeof p);
	CHECK_OK(pair_open(&p, PK_UDP_UNCONNECTED, NULL, NULL, &c, &c));
	CHECK_OK(pair_start(&p));
	CHECK_EQ(sio_write(p.a, "hi", 2), 2);
	char buf[4];
	CHECK_EQ(sio_read_timeout(p.b, buf, sizeof buf, 10000), 2);
	CHECK_OK(sio_close_and_wait(p.a, 5000));
	pair_free(&p);
	CHECK(strcmp(sio_diag_level_name(SIO_DIAG_WARN), "warn") == 0);
	CHECK(strcmp(sio_diag_level_name(0), "?") == 0);
}

int main(void)
{
	if (sio_init())
		return 1;
	test_handshake();
	test_refused_and_drops();
	test_warnings_limited();
	test_listener();
	test_no_callback();
	return check_done("test_diag");
}
