/* Attacks through the public API on real UDP sockets, with an in-process
 * man-in-the-middle relay (tests/lib/mitm.c) between sessions A and B:
 * bit flips in every byte of every captured packet, replays later in the
 * session and in a new session (including the old session's key exchange,
 * signed by the right identity), reordering beyond the replay window,
 * truncation to every length, key exchanges from a third identity, a third
 * identity in a two-key pin set forging key exchanges as the peer (during
 * the first handshake and later), and a flood of junk key-exchange messages. In each: nothing altered, foreign or
 * duplicated is delivered (every message carries its sequence number, a
 * session tag and a pattern checked on arrival), every injected packet is
 * counted as a drop in sio_session_stats, and the session keeps working. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "check.h"
#include "lib/forge.h"
#include "lib/mitm.h"
#include "secureio.h"

#define CHAN 1
#define MSG_LEN 48
#define MAXSEQ 4096

struct rx {
	pthread_mutex_t mu;
	uint32_t tag; /* session tag every message must carry */
	uint8_t seen[MAXSEQ];
	unsigned count, bad;
};

static uint8_t pat(uint32_t seq, uint32_t tag, size_t i)
{
	return (uint8_t)(seq * 131u + tag * 7u + (uint32_t)i);
}

static void on_msg(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	struct rx *r = ctx;
	uint32_t seq, tag;
	(void)s;
	pthread_mutex_lock(&r->mu);
	if (type != CHAN || len != MSG_LEN) {
		r->bad++;
		goto out;
	}
	memcpy(&seq, d, 4);
	memcpy(&tag, d + 4, 4);
	if (tag != r->tag || seq >= MAXSEQ || r->seen[seq]) {
		r->bad++;
		goto out;
	}
	for (size_t i = 8; i < len; i++)
		if (d[i] != pat(seq, tag, i)) {
			r->bad++;
			goto out;
		}
	r->seen[seq] = 1;
	r->count++;
out:
	pthread_mutex_unlock(&r->mu);
}

static sio_identity *ida, *idb, *idc;
static sio_remote *ra, *rb, *rc;
static uint8_t skc[64]; /* C's secret key, for the forger */

struct duo {
	mitm *m;
	sio_session *a, *b;
	struct rx rx; /* what B receives */
	uint32_t next;
};

static uint64_t drops(sio_session *s)
{
	sio_stats st;
	sio_session_stats(s, &st);
	return st.drop_malformed + st.drop_decrypt + st.drop_replay + st.drop_too_old +
	       st.drop_unknown_key + st.drop_kx + st.drop_fragments;
}

static unsigned rx_count(struct rx *r, unsigned *bad)
{
	pthread_mutex_lock(&r->mu);
	unsigned n = r->count;
	if (bad)
		*bad = r->bad;
	pthread_mutex_unlock(&r->mu);
	return n;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static int duo_open(struct duo *d, uint32_t tag, const sio_options *ob, int start_a)
{
	int fa, fb;
	sio_transport ta, tb;
	sio_options oa;
	memset(d, 0, sizeof *d);
	pthread_mutex_init(&d->rx.mu, NULL);
	d->rx.tag = tag;
	sio_options_default(&oa);
	oa.send_delay_ns = -1; /* one message, one packet */
	if (mitm_open(&d->m, &fa, &fb))
		return -1;
	sio_transport_fd(&ta, fa, fa);
	sio_transport_fd(&tb, fb, fb);
	if (sio_session_new(&d->a, ida, ra, &ta, &oa, NULL) ||
	    sio_session_new(&d->b, idb, rb, &tb, ob, NULL) ||
	    sio_set_handler(d->b, CHAN, on_msg, NULL, &d->rx) || sio_session_start(d->b))
		return -1;
	if (!start_a)
		return 0;
	if (sio_session_start(d->a) || sio_session_wait_state(d->a, SIO_STATE_ESTABLISHED, 20000) ||
	    sio_session_wait_state(d->b, SIO_STATE_ESTABLISHED, 20000))
		return -1;
	return 0;
}

static void duo_close(struct duo *d)
{
	sio_session_free(d->a);
	sio_session_free(d->b);
	mitm_free(d->m);
	pthread_mutex_destroy(&d->rx.mu);
}

/* A sends N genuine messages; returns once B has all of them (bounded). */
static void send_msgs(struct duo *d, unsigned n, unsigned expect_total)
{
	uint8_t m[MSG_LEN];
	for (unsigned k = 0; k < n; k++) {
		uint32_t seq = d->next++;
		memcpy(m, &seq, 4);
		memcpy(m + 4, &d->rx.tag, 4);
		for (size_t i = 8; i < MSG_LEN; i++)
			m[i] = pat(seq, d->rx.tag, i);
		CHECK_OK(sio_write_message(d->a, CHAN, m, sizeof m));
	}
	for (int w = 0; w < 2000 && rx_count(&d->rx, NULL) < expect_total; w++)
		sleep_ms(10);
	CHECK_EQ(rx_count(&d->rx, NULL), expect_total);
}

/* Waits (bounded) until S has counted at least WANT drops; returns the count. */
static uint64_t wait_drops(sio_session *s, uint64_t want)
{
	uint64_t n = drops(s);
	for (int w = 0; w < 2000 && n < want; w++) {
		sleep_ms(5);
		n = drops(s);
	}
	return n;
}

/* Injects toward the session of DIR, pacing so the socket never overflows
 * (an overflow would lose packets uncounted): every 32 packets it waits
 * for the drops to catch up. BASE = drops before; *SENT counts. */
static void inject_paced(struct duo *d, int dir, const uint8_t *p, size_t len, uint64_t base,
			 uint64_t *sent)
{
	sio_session *to = dir == MITM_A2B ? d->b : d->a;
	CHECK_OK(mitm_inject(d->m, dir, p, len));
	if (++*sent % 32 == 0)
		wait_drops(to, base + *sent);
}

static void check_survives(struct duo *d, unsigned have)
{
	unsigned bad;
	CHECK_EQ(sio_session_state(d->a), SIO_STATE_ESTABLISHED);
	CHECK_EQ(sio_session_state(d->b), SIO_STATE_ESTABLISHED);
	send_msgs(d, 5, have + 5);
	rx_count(&d->rx, &bad);
	CHECK_EQ(bad, 0);
}

static uint8_t cap[64][2048];
static size_t capl[64];

static size_t capture(struct duo *d, int dir, size_t max)
{
	size_t n = mitm_count(d->m, dir), k = 0;
	for (size_t i = 0; i < n && k < max && k < 64; i++)
		if ((capl[k] = mitm_get(d->m, dir, i, cap[k], sizeof cap[k])) > 0)
			k++;
	return k;
}

static void test_bitflips(int dir)
{
	struct duo d;
	CHECK_OK(duo_open(&d, 0x1000 + (uint32_t)dir, NULL, 1));
	send_msgs(&d, 10, 10);
	/* B answers something too: a message B -> A goes through the relay */
	CHECK_OK(sio_write_message(d.b, CHAN, "x", 1));
	sleep_ms(200);
	size_t n = capture(&d, dir, 24);
	CHECK(n >= 2);
	sio_session *to = dir == MITM_A2B ? d.b : d.a;
	uint64_t base = drops(to), sent = 0;
	for (size_t k = 0; k < n; k++)
		for (size_t i = 0; i < capl[k]; i++) {
			uint8_t p[2048];
			memcpy(p, cap[k], capl[k]);
			p[i] ^= (uint8_t)(1u << (i % 8));
			inject_paced(&d, dir, p, capl[k], base, &sent);
		}
	CHECK_EQ(wait_drops(to, base + sent) - base, sent);
	unsigned bad;
	CHECK_EQ(rx_count(&d.rx, &bad), 10);
	CHECK_EQ(bad, 0);
	printf("bitflips %s: %zu packets, %llu flipped copies, all dropped\n",
	       dir == MITM_A2B ? "A->B" : "B->A", n, (unsigned long long)sent);
	check_survives(&d, 10);
	duo_close(&d);
}

static void test_truncation(void)
{
	struct duo d;
	CHECK_OK(duo_open(&d, 0x2000, NULL, 1));
	send_msgs(&d, 6, 6);
	size_t n = capture(&d, MITM_A2B, 12);
	uint64_t base = drops(d.b), sent = 0;
	for (size_t k = 0; k < n; k++)
		for (size_t l = 1; l < capl[k]; l++)
			inject_paced(&d, MITM_A2B, cap[k], l, base, &sent);
	CHECK_EQ(wait_drops(d.b, base + sent) - base, sent);
	unsigned bad;
	CHECK_EQ(rx_count(&d.rx, &bad), 6);
	CHECK_EQ(bad, 0);
	printf("truncation: %zu packets, %llu truncated copies, all dropped\n", n,
	       (unsigned long long)sent);
	check_survives(&d, 6);
	duo_close(&d);
}

static uint8_t old[64][2048];
static size_t oldl[64], nold;

static void test_replay(void)
{
	struct duo d;
	CHECK_OK(duo_open(&d, 0x3000, NULL, 1));
	send_msgs(&d, 20, 20);
	nold = capture(&d, MITM_A2B, 64);
	memcpy(old, cap, sizeof old);
	memcpy(oldl, capl, sizeof oldl);
	send_msgs(&d, 20, 40); /* later in the session */
	uint64_t base = drops(d.b), sent = 0;
	/* The peer's key exchange of the current generation is the one
	 * exception: byte for byte the message B holds, it is taken as a
	 * retransmission (B answers it again; core.c) rather than counted. */
	uint64_t same_kx = 0;
	for (size_t k = 0; k < nold; k++) {
		same_kx += old[k][0] == 0x80;
		inject_paced(&d, MITM_A2B, old[k], oldl[k], base, &sent);
	}
	uint64_t got = wait_drops(d.b, base + sent) - base;
	CHECK(got >= sent - same_kx && got <= sent);
	unsigned bad;
	CHECK_EQ(rx_count(&d.rx, &bad), 40);
	CHECK_EQ(bad, 0);
	check_survives(&d, 40);
	duo_close(&d);

	/* A new session between the same identities: every packet of the old
	 * one, its signed key exchange included, is refused. */
	CHECK_OK(duo_open(&d, 0x3001, NULL, 1));
	send_msgs(&d, 3, 3);
	base = drops(d.b);
	sent = 0;
	for (size_t k = 0; k < nold; k++)
		inject_paced(&d, MITM_A2B, old[k], oldl[k], base, &sent);
	CHECK_EQ(wait_drops(d.b, base + sent) - base, sent);
	CHECK_EQ(rx_count(&d.rx, &bad), 3);
	CHECK_EQ(bad, 0);
	printf("replay: %zu packets replayed later in the session and into a new one: none delivered\n",
	       nold);
	check_survives(&d, 3);
	duo_close(&d);
}

/* Holds back the next A->B packet that is not a key exchange. */
struct hold {
	int armed;
	uint8_t p[2048];
	size_t len;
};

static int hold_filter(void *ctx, int dir, uint8_t *pkt, size_t *len)
{
	struct hold *h = ctx;
	if (dir != MITM_A2B || !h->armed || pkt[0] == 0x80 || pkt[0] == 0x81 || *len > sizeof h->p)
		return 1;
	memcpy(h->p, pkt, *len);
	h->len = *len;
	h->armed = 0;
	return 0;
}

static void test_reorder(void)
{
	struct duo d;
	struct hold h = {0};
	sio_options ob;
	sio_stats st0, st1;
	sio_options_default(&ob);
	ob.replay_window = 32;
	CHECK_OK(duo_open(&d, 0x4000, &ob, 1));
	send_msgs(&d, 2, 2);
	mitm_set_filter(d.m, hold_filter, &h);

	/* Inside the window: a late packet is still accepted, once. */
	h.armed = 1;
	send_msgs(&d, 6, 7);
	CHECK(!h.armed);
	CHECK_OK(mitm_inject(d.m, MITM_A2B, h.p, h.len));
	for (int w = 0; w < 1000 && rx_count(&d.rx, NULL) < 8; w++)
		sleep_ms(5);
	CHECK_EQ(rx_count(&d.rx, NULL), 8);
	sio_session_stats(d.b, &st0);
	CHECK_OK(mitm_inject(d.m, MITM_A2B, h.p, h.len)); /* and not twice */
	wait_drops(d.b, drops(d.b) + 1);
	sio_session_stats(d.b, &st1);
	CHECK_EQ(st1.drop_replay, st0.drop_replay + 1);

	/* Beyond the window: held back for 100 packets, then refused. */
	h.armed = 1;
	send_msgs(&d, 101, 108);
	CHECK(!h.armed);
	sio_session_stats(d.b, &st0);
	CHECK_OK(mitm_inject(d.m, MITM_A2B, h.p, h.len));
	wait_drops(d.b, drops(d.b) + 1);
	sio_session_stats(d.b, &st1);
	CHECK_EQ(st1.drop_too_old, st0.drop_too_old + 1);
	unsigned bad;
	CHECK_EQ(rx_count(&d.rx, &bad), 108);
	CHECK_EQ(bad, 0);
	mitm_set_filter(d.m, NULL, NULL);
	printf("reorder: late packet inside the window delivered once, beyond it dropped\n");
	check_survives(&d, 108);
	duo_close(&d);
}

/* A third identity's session whose packets the relay injects toward B. */
static ssize_t third_send(void *ctx, const void *buf, size_t len)
{
	return mitm_inject(ctx, MITM_A2B, buf, len) ? -EIO : (ssize_t)len;
}

static ssize_t third_recv(void *ctx, void *buf, size_t len)
{
	(void)ctx;
	(void)buf;
	(void)len;
	return -EAGAIN;
}

static void test_third_identity(void)
{
	struct duo d;
	sio_session *c;
	sio_transport tc;
	sio_options oc;
	CHECK_OK(duo_open(&d, 0x5000, NULL, 1));
	send_msgs(&d, 3, 3);
	memset(&tc, 0, sizeof tc);
	tc.kind = SIO_TRANSPORT_DATAGRAM;
	tc.read_fd = tc.write_fd = tc.poll_fd = -1;
	tc.send = third_send;
	tc.recv = third_recv;
	tc.ctx = d.m;
	sio_options_default(&oc);
	oc.kx_retry_ns = 200000000; /* 5 key exchanges a second */
	uint64_t base = drops(d.b);
	CHECK_OK(sio_session_new(&c, idc, rc, &tc, &oc, NULL));
	CHECK_OK(sio_session_start(c));
	uint64_t got = wait_drops(d.b, base + 5);
	CHECK(got >= base + 5);
	sio_session_free(c);
	unsigned bad;
	CHECK_EQ(rx_count(&d.rx, &bad), 3);
	CHECK_EQ(bad, 0);
	printf("third identity: %llu key exchanges dropped\n", (unsigned long long)(got - base));
	check_survives(&d, 3);
	duo_close(&d);
}

/* C holds a key of B's two-key pin set {A, C} and forges key exchanges as A
 * from the relay (tests/lib/forge.h), then seals data under the keys a reply
 * would agree. B must drop every forgery, deliver nothing C sealed, keep
 * reporting A, and keep working with A. */
struct forger {
	pthread_mutex_t mu;
	forge g;
	mitm *m;
	int hold; /* drop A's packets other than key exchanges */
	uint64_t data_sent;
};

static int forge_filter(void *ctx, int dir, uint8_t *pkt, size_t *len)
{
	struct forger *f = ctx;
	uint8_t out[FORGE_DATA_LEN];
	int fwd = 1;
	pthread_mutex_lock(&f->mu);
	if (forge_observe(&f->g, dir == MITM_B2A, pkt, *len, out) &&
	    mitm_inject(f->m, MITM_A2B, out, sizeof out) == 0)
		f->data_sent++;
	if (dir == MITM_A2B && f->hold && !(pkt[0] & 0x80))
		fwd = 0;
	pthread_mutex_unlock(&f->mu);
	return fwd;
}

static void test_pinset_takeover(int first_handshake)
{
	struct duo d;
	struct forger f;
	sio_remote *two, *save = rb;
	uint8_t pk[SIO_PUBLIC_KEY_BYTES], kx[FORGE_KX_MAX];
	sio_stats st0, st1;
	sio_identity_public_key(ida, pk);
	CHECK_OK(sio_remote_from_public_key(&two, pk));
	sio_identity_public_key(idc, pk);
	CHECK_OK(sio_remote_add(two, pk));
	memset(&f, 0, sizeof f);
	pthread_mutex_init(&f.mu, NULL);
	forge_init(&f.g, skc, NULL, 0);
	rb = two; /* B pins {A, C} */
	CHECK_OK(duo_open(&d, 0x7000 + (uint32_t)first_handshake, NULL, 0));
	rb = save;
	sio_remote_free(two); /* the session holds its reference */
	f.m = d.m;
	f.hold = first_handshake; /* keep B waiting for A's answer */
	mitm_set_filter(d.m, forge_filter, &f);
	CHECK_OK(sio_session_start(d.a));
	unsigned have = 0;
	if (first_handshake) {
		/* B has taken A's first message and is not established yet */
		for (int w = 0; w < 2000 && sio_session_remote_key(d.b, pk) != 0; w++)
			sleep_ms(5);
		CHECK_EQ(sio_session_state(d.b), SIO_STATE_KEY_EXCHANGING);
	} else {
		CHECK_OK(sio_session_wait_state(d.a, SIO_STATE_ESTABLISHED, 20000));
		CHECK_OK(sio_session_wait_state(d.b, SIO_STATE_ESTABLISHED, 20000));
		send_msgs(&d, 5, 5);
		have = 5;
	}
	sio_session_stats(d.b, &st0);
	for (int variant = 0; variant < 3; variant++) {
		pthread_mutex_lock(&f.mu);
		size_t n = forge_kx(&f.g, variant, (uint64_t)time(NULL) * 1000000000ull + 1000000000ull,
				    kx);
		pthread_mutex_unlock(&f.mu);
		CHECK(n > 0);
		CHECK_OK(mitm_inject(d.m, MITM_A2B, kx, n));
	}
	uint64_t got = wait_drops(d.b, drops(d.b) + 3);
	(void)got;
	sleep_ms(300); /* time for a reply and C's sealed data, were there any */
	sio_session_stats(d.b, &st1);
	CHECK_EQ(st1.drop_kx - st0.drop_kx, 3);
	pthread_mutex_lock(&f.mu);
	f.hold = 0;
	uint64_t data_sent = f.data_sent;
	pthread_mutex_unlock(&f.mu);
	CHECK_EQ(data_sent, 0); /* B never answered a forgery */
	CHECK_OK(sio_session_wait_state(d.a, SIO_STATE_ESTABLISHED, 20000));
	CHECK_OK(sio_session_wait_state(d.b, SIO_STATE_ESTABLISHED, 20000));
	CHECK_OK(sio_session_remote_key(d.b, pk));
	uint8_t pka[SIO_PUBLIC_KEY_BYTES];
	sio_identity_public_key(ida, pka);
	CHECK(memcmp(pk, pka, sizeof pk) == 0);
	check_survives(&d, have);
	sio_session_stats(d.b, &st1);
	CHECK_EQ(st1.messages_received, (uint64_t)have + 5); /* nothing of C's */
	printf("pin-set takeover (%s): 3 forged key exchanges as A from C dropped\n",
	       first_handshake ? "first handshake" : "renewal");
	mitm_set_filter(d.m, NULL, NULL);
	duo_close(&d);
	forge_wipe(&f.g);
	pthread_mutex_destroy(&f.mu);
}

static long rss_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = -1;
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static void test_kx_flood(void)
{
	struct duo d;
	enum { FLOOD = 4000 };
	CHECK_OK(duo_open(&d, 0x6000, NULL, 0)); /* B runs, A not yet */
	CHECK(nold > 0 && oldl[0] > 100); /* a real key exchange from test_replay */
	uint64_t base = drops(d.b), sent = 0;
	long rss0 = rss_kb();
	uint8_t p[2048];
	uint64_t x = 88172645463325252ull;
	for (int i = 0; i < FLOOD; i++) {
		size_t len;
		if (i % 2) { /* a real signed message with bytes changed */
			memcpy(p, old[0], oldl[0]);
			len = oldl[0];
		} else { /* random bytes behind the key-exchange type byte */
			len = 175;
		}
		for (size_t k = 1; k < len; k += 1 + i % 7) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			p[k] = (uint8_t)x;
		}
		p[0] = 0x80;
		inject_paced(&d, MITM_A2B, p, len, base, &sent);
	}
	CHECK_EQ(wait_drops(d.b, base + sent) - base, sent);
	long rss1 = rss_kb();
	printf("kx flood: %d junk key exchanges dropped; RSS %ld -> %ld kB\n", FLOOD, rss0, rss1);
	CHECK(rss1 - rss0 < 16 * 1024);
	/* the real peer still connects */
	CHECK_OK(sio_session_start(d.a));
	CHECK_OK(sio_session_wait_state(d.a, SIO_STATE_ESTABLISHED, 20000));
	CHECK_OK(sio_session_wait_state(d.b, SIO_STATE_ESTABLISHED, 20000));
	send_msgs(&d, 3, 3);
	unsigned bad;
	rx_count(&d.rx, &bad);
	CHECK_EQ(bad, 0);
	duo_close(&d);
}

int main(void)
{
	uint8_t seed[SIO_SEED_BYTES], pk[SIO_PUBLIC_KEY_BYTES];
	alarm(600);
	signal(SIGPIPE, SIG_IGN);
	CHECK_OK(sio_init());
	memset(seed, 0xa1, sizeof seed);
	CHECK_OK(sio_identity_from_seed(&ida, seed));
	memset(seed, 0xb2, sizeof seed);
	CHECK_OK(sio_identity_from_seed(&idb, seed));
	memset(seed, 0xc3, sizeof seed);
	CHECK_OK(sio_identity_from_seed(&idc, seed));
	{
		uint8_t pkc[32];
		crypto_sign_seed_keypair(pkc, skc, seed);
	}
	sio_identity_public_key(idb, pk);
	CHECK_OK(sio_remote_from_public_key(&ra, pk));
	CHECK_OK(sio_remote_from_public_key(&rc, pk));
	sio_identity_public_key(ida, pk);
	CHECK_OK(sio_remote_from_public_key(&rb, pk));

	test_bitflips(MITM_A2B);
	test_bitflips(MITM_B2A);
	test_truncation();
	test_replay();
	test_reorder();
	test_third_identity();
	test_pinset_takeover(1);
	test_pinset_takeover(0);
	test_kx_flood();

	sio_remote_free(ra);
	sio_remote_free(rb);
	sio_remote_free(rc);
	sio_identity_free(ida);
	sio_identity_free(idb);
	sio_identity_free(idc);
	return check_done("test_attacks");
}
