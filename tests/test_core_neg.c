/* Negative tests of the protocol core: wrong remote identity, refused
 * learned identity, wrong / missing PSK, answers-mode mismatch, key exchange
 * replayed from an older session, reflected messages, low-order keys, a key
 * that did not change, creation time going backwards, remote clock too far
 * off, every single-bit flip of data and kx packets, truncated and oversized
 * packets, decrypt-failure runs, the packet-number hard limit, keepalive and
 * dead-peer detection, forged and genuine port-unreachable reports. */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core_int.h"
#include "lib/sim.h"
#include "options.h"
#include "wire.h"

typedef struct capture {
	int side;
	size_t n;
	uint8_t *pkt[4096];
	size_t len[4096];
} capture;

static void on_wire(sim *s, int from, const uint8_t *pkt, size_t len, void *ctx)
{
	capture *c = ctx;
	(void)s;
	if (from != c->side || c->n == 4096)
		return;
	c->pkt[c->n] = malloc(len);
	memcpy(c->pkt[c->n], pkt, len);
	c->len[c->n++] = len;
}

static void capture_free(capture *c)
{
	for (size_t i = 0; i < c->n; i++)
		free(c->pkt[i]);
	c->n = 0;
}

static sim_config base(void)
{
	sim_config cfg;
	memset(&cfg, 0, sizeof cfg);
	cfg.datagram = 1;
	cfg.net.delay = 1 * SIM_MS;
	cfg.pin[0] = cfg.pin[1] = 1;
	for (int i = 0; i < 2; i++) {
		cfg.opts[i].kx_timeout_ns = 5 * SIM_S;
		memset(cfg.id_seed[i], 0x11 * (i + 1), 32);
	}
	return cfg;
}

static int both_established(sim *s, void *ctx)
{
	(void)ctx;
	return sim_established(s);
}

static int both_closed(sim *s, void *ctx)
{
	(void)ctx;
	return sio_core_state(s->p[0].core) == SIO_STATE_CLOSED &&
	       sio_core_state(s->p[1].core) == SIO_STATE_CLOSED;
}

static uint64_t drops(sio_core *c)
{
	sio_stats st;
	sio_core_stats(c, &st);
	return st.drop_malformed + st.drop_decrypt + st.drop_replay + st.drop_too_old +
	       st.drop_unknown_key + st.drop_kx;
}

static sio_stats stats(sio_core *c)
{
	sio_stats st;
	sio_core_stats(c, &st);
	return st;
}

static void test_wrong_identity(void)
{
	sim s;
	sim_config cfg = base();
	memset(cfg.pin_key[0], 0x42, 32); /* side 0 expects someone else */
	CHECK_OK(sim_init(&s, 10, &cfg));
	CHECK(sim_run(&s, 30 * SIM_S, both_closed, NULL));
	CHECK(!s.p[0].established_at && !s.p[1].established_at);
	CHECK(sim_has_error(&s.p[0], SIO_EAUTH));
	CHECK(stats(s.p[0].core).drop_kx > 0);
	/* side 1 got valid messages but never an answer */
	CHECK(sim_has_error(&s.p[1], SIO_ETIMEDOUT));
	CHECK(sio_core_remote_key(s.p[0].core, (uint8_t[32]){0}) == SIO_ESTATE);
	sim_free(&s);

	/* learned identity refused by the program */
	cfg = base();
	cfg.pin[1] = 0;
	CHECK_OK(sim_init(&s, 11, &cfg));
	s.p[1].refuse_identity = 1;
	sim_run(&s, 3 * SIM_S, NULL, NULL);
	CHECK_EQ(sio_core_state(s.p[1].core), SIO_STATE_CLOSED);
	CHECK(sim_has_error(&s.p[1], SIO_EREFUSED));
	CHECK(!s.p[0].established_at);
	sim_free(&s);

	/* learned identity accepted: reported and pinned */
	cfg = base();
	cfg.pin[0] = cfg.pin[1] = 0;
	CHECK_OK(sim_init(&s, 12, &cfg));
	CHECK(sim_run(&s, 3 * SIM_S, both_established, NULL));
	uint8_t pk[32];
	CHECK_OK(sio_core_remote_key(s.p[0].core, pk));
	CHECK(memcmp(pk, s.p[1].pk, 32) == 0);
	sim_free(&s);
}

static void test_psk(void)
{
	static const uint8_t k1[32] = "first pre-shared key, 32 bytes.", k2[32] = "other pre-shared key, 32 bytes.";
	sim s;
	sim_config cfg = base();
	/* same PSK: works */
	cfg.opts[0].psk = cfg.opts[1].psk = k1;
	cfg.opts[0].psk_len = cfg.opts[1].psk_len = 32;
	CHECK_OK(sim_init(&s, 20, &cfg));
	CHECK(sim_run(&s, 3 * SIM_S, both_established, NULL));
	sim_free(&s);
	/* different PSKs, or one side without: dropped before any signature
	 * work, never established, ENOKEYX says why */
	for (int variant = 0; variant < 2; variant++) {
		cfg.opts[1].psk = variant ? NULL : k2;
		cfg.opts[1].psk_len = variant ? 0 : 32;
		CHECK_OK(sim_init(&s, 21, &cfg));
		CHECK(sim_run(&s, 30 * SIM_S, both_closed, NULL));
		for (int i = 0; i < 2; i++) {
			CHECK(!s.p[i].established_at);
			CHECK(sim_has_error(&s.p[i], SIO_ENOKEYX));
			CHECK(stats(s.p[i].core).drop_kx >= 4);
		}
		sim_free(&s);
	}
	/* bad PSK length */
	sio_core *c;
	sio_core_config cc;
	uint8_t sk[64], pkk[32];
	crypto_sign_keypair(pkk, sk);
	memset(&cc, 0, sizeof cc);
	cc.ed25519_sk = sk;
	cc.opts.psk = k1;
	cc.opts.psk_len = 8;
	CHECK_EQ(sio_core_new(&c, &cc, NULL), SIO_EINVAL);
}

static void test_answers_mismatch(void)
{
	for (int a = 1; a <= 3; a++)
		for (int b = 1; b <= 3; b++) {
			if (a == b)
				continue;
			sim s;
			sim_config cfg = base();
			cfg.opts[0].answers_mode = (sio_answers_mode)a;
			cfg.opts[1].answers_mode = (sio_answers_mode)b;
			CHECK_OK(sim_init(&s, 30, &cfg));
			/* a clear error quickly, not a hang until the timeout */
			CHECK(sim_run(&s, 1 * SIM_S, both_closed, NULL));
			CHECK(sim_has_error(&s.p[0], SIO_EANSWERS));
			CHECK(sim_has_error(&s.p[1], SIO_EANSWERS));
			sim_free(&s);
			/* side 1 can only answer (it learns its peer's address from
			 * what arrives): it must still let side 0 learn the
			 * mismatch, by sending its own message */
			cfg.learn[1] = 1;
			CHECK_OK(sim_init(&s, 31, &cfg));
			CHECK(sim_run(&s, 1 * SIM_S, both_closed, NULL));
			CHECK(sim_has_error(&s.p[0], SIO_EANSWERS));
			CHECK(sim_has_error(&s.p[1], SIO_EANSWERS));
			sim_free(&s);
		}
}

static int is_kx(const uint8_t *p)
{
	return (p[0] & 0x80) != 0;
}

static void test_replayed_kx(void)
{
	capture cap;
	sim s;
	sim_config cfg = base();
	cfg.opts[0].kx_interval_ns = cfg.opts[1].kx_interval_ns = 1 * SIM_S;
	memset(&cap, 0, sizeof cap);
	cap.side = 0;
	/* session 1: record everything side 0 sends, over a few renewals */
	CHECK_OK(sim_init(&s, 40, &cfg));
	s.on_wire = on_wire;
	s.hook_ctx = &cap;
	CHECK(sim_run(&s, 3 * SIM_S, both_established, NULL));
	sim_run(&s, 5 * SIM_S, NULL, NULL);
	CHECK(stats(s.p[0].core).rekeys >= 2);
	sim_free(&s);
	size_t nkx = 0;
	for (size_t i = 0; i < cap.n; i++)
		nkx += is_kx(cap.pkt[i]);
	CHECK(nkx >= 4);

	/* session 2, same identities, later: old messages are refused */
	cfg.wall_offset[0] = cfg.wall_offset[1] = 3600 * (int64_t)SIM_S;
	CHECK_OK(sim_init(&s, 41, &cfg));
	CHECK(sim_run(&s, 3 * SIM_S, both_established, NULL));
	for (size_t i = 0; i < cap.n; i++) {
		uint8_t buf[2048];
		memcpy(buf, cap.pkt[i], cap.len[i]);
		uint64_t d0 = drops(s.p[1].core);
		CHECK_EQ(sio_core_recv(s.p[1].core, s.now, buf, cap.len[i]), 0);
		CHECK_EQ(drops(s.p[1].core), d0 + 1);
	}
	sim_run(&s, s.now + 5 * SIM_S, NULL, NULL);
	CHECK(sim_established(&s));
	CHECK_EQ(s.p[1].nerrors, 0);
	uint8_t pk[32];
	CHECK_OK(sio_core_remote_key(s.p[1].core, pk));
	CHECK(memcmp(pk, s.p[0].pk, 32) == 0);
	sim_free(&s);

	/* replayed first message reaching a fresh peer before the real one: the
	 * real, newer session still wins */
	cfg.no_start[0] = 1;
	CHECK_OK(sim_init(&s, 42, &cfg));
	for (size_t i = 0; i < cap.n; i++)
		if (is_kx(cap.pkt[i])) {
			sim_inject(&s, 1, cap.pkt[i], cap.len[i], 10 * SIM_MS);
			break;
		}
	sim_run(&s, 500 * SIM_MS, NULL, NULL);
	CHECK(!s.p[1].established_at);
	CHECK_OK(sio_core_start(s.p[0].core, s.now));
	CHECK(sim_run(&s, s.now + 5 * SIM_S, both_established, NULL));
	sim_free(&s);
	capture_free(&cap);
}

/* The first data packet side 0 sends after establishment, holding MSG. */
static void test_bit_flips(int with_psk)
{
	static const uint8_t k1[32] = "first pre-shared key, 32 bytes.";
	capture cap;
	sim s;
	sim_config cfg = base();
	if (with_psk) {
		cfg.opts[0].psk = cfg.opts[1].psk = k1;
		cfg.opts[0].psk_len = cfg.opts[1].psk_len = 32;
	}
	memset(&cap, 0, sizeof cap);
	cap.side = 0;
	CHECK_OK(sim_init(&s, 50 + with_psk, &cfg));
	CHECK(sim_run(&s, 3 * SIM_S, both_established, NULL));
	s.net.loss = 1.0; /* capture only */
	s.on_wire = on_wire;
	s.hook_ctx = &cap;
	const char *msg = "attack at dawn";
	CHECK_OK(sio_core_write(s.p[0].core, s.now, 5, (const uint8_t *)msg, strlen(msg), 0));
	sio_core_flush(s.p[0].core, s.now);
	sim_flush(&s);
	CHECK_EQ(cap.n, 1);
	size_t len = cap.len[0];
	uint8_t *orig = cap.pkt[0], buf[256];
	CHECK_EQ(len, 21 + 2 + strlen(msg)); /* frame: kind, channel; no length */
	sio_core *b = s.p[1].core;
	size_t before = s.p[1].nmsgs;
	/* every single-bit flip is dropped and counted */
	for (size_t bit = 0; bit < len * 8; bit++) {
		memcpy(buf, orig, len);
		buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		uint64_t d0 = drops(b);
		CHECK_EQ(sio_core_recv(b, s.now, buf, len), 0);
		CHECK_EQ(drops(b), d0 + 1);
	}
	/* truncations, an extra byte, an oversized packet */
	for (size_t l = 0; l < len; l++) {
		memcpy(buf, orig, len);
		uint64_t d0 = drops(b);
		CHECK_EQ(sio_core_recv(b, s.now, buf, l), 0);
		CHECK_EQ(drops(b), d0 + 1);
	}
	memcpy(buf, orig, len);
	buf[len] = 0;
	CHECK_EQ(sio_core_recv(b, s.now, buf, len + 1), 0);
	uint8_t *big = calloc(1, SIO_MAX_PACKET + 1);
	memcpy(big, orig, len);
	uint64_t m0 = stats(b).drop_malformed;
	CHECK_EQ(sio_core_recv(b, s.now, big, SIO_MAX_PACKET + 1), 0);
	CHECK_EQ(stats(b).drop_malformed, m0 + 1);
	free(big);
	CHECK_EQ(s.p[1].nmsgs, before);
	/* a run of failures raised one error event (default threshold 16) */
	CHECK(stats(b).decrypt_fail_runs >= 1);
	CHECK(sim_has_error(&s.p[1], SIO_EDECRYPT));
	CHECK_EQ(sio_core_state(b), SIO_STATE_ESTABLISHED);
	/* the genuine packet once, then its replay */
	memcpy(buf, orig, len);
	CHECK_EQ(sio_core_recv(b, s.now, buf, len), SIO_CORE_RX_DATA);
	CHECK_EQ(s.p[1].nmsgs, before + 1);
	CHECK(s.p[1].msgs[before].len == strlen(msg) &&
	      memcmp(s.p[1].msgs[before].data, msg, strlen(msg)) == 0);
	memcpy(buf, orig, len);
	uint64_t r0 = stats(b).drop_replay;
	CHECK_EQ(sio_core_recv(b, s.now, buf, len), 0);
	CHECK_EQ(stats(b).drop_replay, r0 + 1);
	CHECK_EQ(s.p[1].nmsgs, before + 1);
	capture_free(&cap);

	/* every single-bit flip of a kx message (a renewal) is dropped too */
	sio_core_tick(s.p[0].core, s.now + 70 * SIM_S); /* forces a renewal message */
	s.now += 70 * SIM_S;
	sim_flush(&s);
	size_t k;
	for (k = 0; k < cap.n && !is_kx(cap.pkt[k]); k++)
		;
	CHECK(k < cap.n);
	if (k < cap.n) {
		len = cap.len[k];
		for (size_t bit = 0; bit < len * 8; bit++) {
			memcpy(buf, cap.pkt[k], len);
			buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
			uint64_t d0 = drops(b);
			CHECK_EQ(sio_core_recv(b, s.now, buf, len), 0);
			CHECK_EQ(drops(b), d0 + 1);
		}
		/* Without a PSK, flips that passed the cheap checks spent the
		 * signature budget (bursts of 64): the genuine message gets its
		 * check a second later. With one, none got past the PSK AEAD. */
		if (!with_psk) {
			CHECK(stats(b).drop_kx_limited > 0);
			memcpy(buf, cap.pkt[k], len);
			CHECK_EQ(sio_core_recv(b, s.now, buf, len), 0);
		} else {
			CHECK_EQ(stats(b).drop_kx_limited, 0);
		}
		memcpy(buf, cap.pkt[k], len);
		CHECK_EQ(sio_core_recv(b, s.now + 1 * SIM_S, buf, len), SIO_CORE_RX_KX);
	}
	capture_free(&cap);
	sim_free(&s);
}

static void test_decrypt_detach(void)
{
	sim s;
	sim_config cfg = base();
	cfg.opts[1].error_on_decrypt_fails = 3;
	cfg.opts[1].detach_on_decrypt_fails = 5;
	CHECK_OK(sim_init(&s, 60, &cfg));
	CHECK(sim_run(&s, 3 * SIM_S, both_established, NULL));
	uint8_t junk[100];
	memset(junk, 0, sizeof junk);
	junk[0] = SIO_PKT_DATA | (uint8_t)s.p[1].core->tx_slot;
	for (int i = 0; i < 4; i++) {
		uint8_t b[100];
		memcpy(b, junk, sizeof b);
		sio_put_le32(b + 1, 1000 + (uint32_t)i);
		CHECK_EQ(sio_core_recv(s.p[1].core, s.now, b, sizeof b), 0);
	}
	CHECK(sim_has_error(&s.p[1], SIO_EDECRYPT));
	CHECK_EQ(stats(s.p[1].core).decrypt_fail_runs, 1);
	CHECK_EQ(sio_core_state(s.p[1].core), SIO_STATE_ESTABLISHED);
	/* a good packet resets the run */
	sim_run(&s, s.now + 15 * SIM_S, NULL, NULL); /* keepalives flow */
	for (int i = 0; i < 5; i++) {
		uint8_t b[100];
		memcpy(b, junk, sizeof b);
		sio_put_le32(b + 1, 2000 + (uint32_t)i);
		sio_core_recv(s.p[1].core, s.now, b, sizeof b);
	}
	CHECK_EQ(stats(s.p[1].core).decrypt_fail_runs, 2);
	CHECK_EQ(sio_core_state(s.p[1].core), SIO_STATE_CLOSED);
	sim_free(&s);
}

static void test_crafted_kx(void)
{
	sim s;
	sim_config cfg = base();
	cfg.no_start[0] = 1;
	CHECK_OK(sim_init(&s, 70, &cfg));
	sio_core *a = s.p[0].core, *b = s.p[1].core;
	sio_kx_fields f;
	uint8_t m[SIO_KX_MSG_LEN];
	memset(&f, 0, sizeof f);
	memcpy(f.sid_sender, a->sid, 16);
	f.gen = 1;
	f.flags = SIO_ANSWERS_ANSWER_AND_WAIT;
	f.created_ns = s.wall;
	memcpy(f.idpk, s.p[0].pk, 32);
	/* low-order points: all zero, and the order-8 point */
	static const uint8_t low[2][32] = {
		{0},
		{0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3,
		 0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32,
		 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00}};
	for (int i = 0; i < 2; i++) {
		memcpy(f.epub, low[i], 32);
		sio_kx_build(m, &f, s.p[0].sk);
		CHECK_EQ(sio_kx_verify(m), 0);
		uint64_t d0 = stats(b).drop_kx;
		CHECK_EQ(sio_core_recv(b, 0, m, sizeof m), 0);
		CHECK_EQ(stats(b).drop_kx, d0 + 1);
		CHECK(!b->derived);
	}
	CHECK(sim_has_error(&s.p[1], SIO_EPROTO));
	/* a message signed by an identity other than the one it names */
	crypto_scalarmult_base(f.epub, (const uint8_t[32]){1, 2, 3});
	sio_kx_build(m, &f, s.p[1].sk);
	CHECK_EQ(sio_kx_verify(m), -1);
	CHECK_EQ(sio_core_recv(b, 0, m, sizeof m), 0);
	/* reflection: B's own message back to B */
	CHECK_EQ(sio_core_recv(b, 0, b->local_wire, b->local_wire_len), 0);
	CHECK(!b->have_peer_sid);
	/* a message for another session of B */
	memset(f.sid_receiver, 9, 16);
	sio_kx_build(m, &f, s.p[0].sk);
	CHECK_EQ(sio_core_recv(b, 0, m, sizeof m), 0);
	sim_free(&s);

	/* established: a renewal that reuses the old key, or goes back in time */
	cfg = base();
	CHECK_OK(sim_init(&s, 71, &cfg));
	CHECK(sim_run(&s, 3 * SIM_S, both_established, NULL));
	a = s.p[0].core;
	b = s.p[1].core;
	CHECK_OK(sio_kx_parse(a->local_msg, &f));
	memcpy(f.sid_receiver, b->sid, 16);
	f.gen = a->gen + 1;
	f.created_ns += 1000;
	sio_kx_build(m, &f, s.p[0].sk);
	uint64_t d0 = stats(b).drop_kx;
	CHECK_EQ(sio_core_recv(b, s.now, m, sizeof m), 0);
	CHECK_EQ(stats(b).drop_kx, d0 + 1);
	CHECK(sim_has_error(&s.p[1], SIO_EPROTO));
	crypto_scalarmult_base(f.epub, (const uint8_t[32]){7, 7, 7});
	f.created_ns -= 1000000;
	sio_kx_build(m, &f, s.p[0].sk);
	CHECK_EQ(sio_core_recv(b, s.now, m, sizeof m), 0);
	CHECK_EQ(stats(b).drop_kx, d0 + 2);
	CHECK(sim_has_error(&s.p[1], SIO_ECLOCK));
	/* a generation from far ahead */
	f.gen = a->gen + 5;
	f.created_ns += 10000000;
	sio_kx_build(m, &f, s.p[0].sk);
	CHECK_EQ(sio_core_recv(b, s.now, m, sizeof m), 0);
	sim_run(&s, s.now + 5 * SIM_S, NULL, NULL);
	CHECK(sim_established(&s));
	sim_free(&s);
}

/* Replaying the peer's current kx message: authentic, but answered at most
 * once per quarter retry period, and not taken as a sign of life. */
static void test_kx_replay_flood(void)
{
	sim s;
	sim_config cfg = base();
	CHECK_OK(sim_init(&s, 75, &cfg));
	CHECK(sim_run(&s, 3 * SIM_S, both_established, NULL));
	sio_core *b = s.p[1].core;
	uint64_t last_recv = b->last_recv, t = s.now + 1 * SIM_S;
	struct iovec iov[64];
	size_t before = sio_core_pending(b, t, iov, 64);
	for (int i = 0; i < 100; i++) {
		uint8_t m[SIO_KX_MSG_LEN];
		memcpy(m, b->remote_msg, sizeof m);
		CHECK_EQ(sio_core_recv(b, t, m, sizeof m), SIO_CORE_RX_KX_REPEAT);
	}
	CHECK(sio_core_pending(b, t, iov, 64) <= before + 1);
	CHECK_EQ(b->last_recv, last_recv);
	sim_free(&s);
}

static void test_time_sanity(void)
{
	sim s;
	sim_config cfg = base();
	cfg.opts[1].max_time_diff_ns = 10 * (int64_t)SIM_S;
	cfg.wall_offset[0] = 3600 * (int64_t)SIM_S; /* side 0's clock is an hour ahead */
	CHECK_OK(sim_init(&s, 80, &cfg));
	CHECK(sim_run(&s, 30 * SIM_S, both_closed, NULL));
	CHECK(sim_has_error(&s.p[1], SIO_ECLOCK));
	CHECK(!s.p[1].established_at);
	sim_free(&s);
	cfg.wall_offset[0] = 5 * (int64_t)SIM_S; /* within the bound */
	CHECK_OK(sim_init(&s, 81, &cfg));
	CHECK(sim_run(&s, 3 * SIM_S, both_established, NULL));
	sim_free(&s);
}

static void test_pn_limit(void)
{
	sim s;
	sim_config cfg = base();
	cfg.opts[0].send_delay_ns = -1;
	cfg.opts[0].kx_timeout_ns = cfg.opts[1].kx_timeout_ns = 60 * (int64_t)SIM_S;
	CHECK_OK(sim_init(&s, 90, &cfg));
	CHECK(sim_run(&s, 3 * SIM_S, both_established, NULL));
	sio_core *a = s.p[0].core;
	s.net.loss = 1.0; /* the renewal cannot complete */
	a->keys[a->tx_slot].tx_pn = SIO_PN_LIMIT - 2;
	uint8_t x = 1;
	CHECK_OK(sio_core_write(a, s.now, 1, &x, 1, 0));
	CHECK_OK(sio_core_write(a, s.now, 1, &x, 1, 0));
	CHECK_EQ(a->keys[a->tx_slot].tx_pn, SIO_PN_LIMIT);
	CHECK_EQ(sio_core_write(a, s.now, 1, &x, 1, 0), SIO_ELIMIT);
	sio_core_tick(a, s.now);
	CHECK(sio_core_deadline(a) > s.now); /* blocked, but no busy loop */
	/* a keepalive queued behind the limit does not make it spin either */
	sio_core_tick(a, s.now + 11 * SIM_S);
	CHECK(a->data.count > a->data_sealed);
	CHECK(sio_core_deadline(a) > s.now + 11 * SIM_S);
	s.now += 11 * SIM_S;
	sim_run(&s, s.now + 100 * SIM_MS, NULL, NULL);
	CHECK(a->gen >= 2); /* a renewal started (packet count) */
	s.net.loss = 0;
	sim_run(&s, s.now + 3 * SIM_S, NULL, NULL);
	CHECK_OK(sio_core_write(a, s.now, 1, &x, 1, 0));
	sim_free(&s);
}

static void test_liveness(void)
{
	sim s;
	sim_config cfg = base();
	CHECK_OK(sim_init(&s, 100, &cfg));
	CHECK(sim_run(&s, 3 * SIM_S, both_established, NULL));
	/* idle for two minutes: keepalives keep both alive */
	sim_run(&s, s.now + 120 * SIM_S, NULL, NULL);
	CHECK(sim_established(&s));
	CHECK(stats(s.p[0].core).packets_sent > 10);
	/* the path dies: dead-peer timeout (default >= 30 s) */
	s.net.loss = 1.0;
	sim_run(&s, s.now + 200 * SIM_S, both_closed, NULL);
	CHECK(sim_has_error(&s.p[0], SIO_EPEERDEAD) || sim_has_error(&s.p[0], SIO_ETIMEDOUT));
	CHECK_EQ(sio_core_state(s.p[0].core), SIO_STATE_CLOSED);
	sim_free(&s);
}

/* Refusals (ICMP port unreachable on a connected UDP socket) every
 * 100 ms for TICKS ticks, the simulated network running in between. */
static void refuse_for(sim *s, int side, int ticks)
{
	for (int i = 0; i < ticks && sio_core_state(s->p[side].core) != SIO_STATE_CLOSED; i++) {
		sio_core_unreachable(s->p[side].core, s->now);
		sim_run(s, s->now + 100 * SIM_MS, NULL, NULL);
	}
}

/* ICMP is not authenticated: forged port-unreachable reports must not end a
 * session whose peer is alive, even an idle one that hears from its peer
 * only every keepalive (the liveness probe makes the peer answer at once);
 * a peer that is really gone ends the session with SIO_EUNREACH after at
 * least SIO_UNREACH_NS, not before; before the key exchange, refusals with
 * no valid message from the peer end it too. */
static void test_port_unreachable(void)
{
	sim s;
	sim_config cfg = base();
	CHECK_OK(sim_init(&s, 101, &cfg));
	CHECK(sim_run(&s, 3 * SIM_S, both_established, NULL));
	sim_run(&s, s.now + 25 * SIM_S, NULL, NULL); /* idle: keepalives only */
	refuse_for(&s, 0, 100);                      /* 10 s of forged refusals */
	CHECK_EQ(sio_core_state(s.p[0].core), SIO_STATE_ESTABLISHED);
	CHECK(!sim_has_error(&s.p[0], SIO_EUNREACH));
	/* a few refusals then nothing: the run does not end the session later */
	refuse_for(&s, 0, 2);
	sim_run(&s, s.now + 5 * SIM_S, NULL, NULL);
	CHECK_EQ(sio_core_state(s.p[0].core), SIO_STATE_ESTABLISHED);
	/* the peer is gone: nothing comes back any more */
	s.net.loss = 1.0;
	uint64_t t0 = s.now;
	refuse_for(&s, 0, 9); /* 0.9 s: not yet */
	CHECK_EQ(sio_core_state(s.p[0].core), SIO_STATE_ESTABLISHED);
	refuse_for(&s, 0, 20);
	CHECK_EQ(sio_core_state(s.p[0].core), SIO_STATE_CLOSED);
	CHECK(sim_has_error(&s.p[0], SIO_EUNREACH));
	CHECK(s.now - t0 >= 1 * SIM_S && s.now - t0 <= 2 * SIM_S);
	sim_free(&s);

	/* before any key exchange: nobody listens at the peer's port */
	cfg = base();
	cfg.no_start[1] = 1;
	CHECK_OK(sim_init(&s, 102, &cfg));
	refuse_for(&s, 0, 30);
	CHECK_EQ(sio_core_state(s.p[0].core), SIO_STATE_CLOSED);
	CHECK(sim_has_error(&s.p[0], SIO_EUNREACH));
	sim_free(&s);
}

/* Junk that can only be dropped costs no signature check: a replayed
 * message of an older generation, a second message for a generation already
 * held, generations far ahead, an unknown "new session" that is not newer;
 * messages that pass those checks (naming the pinned key, right session ids,
 * a bad signature) get at most 8 checks per second, the rest are dropped and
 * counted, and a genuine renewal still gets through once the flood stops. */
static void test_kx_cheap_checks(void)
{
	sim s;
	sim_config cfg = base();
	capture cap = {.side = 0};
	CHECK_OK(sim_init(&s, 90, &cfg));
	s.on_wire = on_wire;
	s.hook_ctx = &cap;
	CHECK(sim_run(&s, 3 * SIM_S, both_established, NULL));
	sio_core *a = s.p[0].core, *b = s.p[1].core;
	/* two renewals, so that generation-1 and -2 messages are old */
	for (int i = 0; i < 2; i++) {
		sio_core_tick(a, s.now + 61 * SIM_S);
		s.now += 61 * SIM_S;
		sim_run(&s, s.now + 1 * SIM_S, NULL, NULL);
	}
	CHECK(b->gen >= 3);
	uint64_t v0 = b->verifies, d0 = stats(b).drop_kx + stats(b).drop_replay;
	size_t n = 0;
	for (size_t k = 0; k < cap.n; k++) {
		if (!is_kx(cap.pkt[k]))
			continue;
		uint8_t m[SIO_KX_WIRE_MAX];
		memcpy(m, cap.pkt[k], cap.len[k]);
		sio_kx_fields f;
		CHECK_OK(sio_kx_parse(m, &f));
		if (f.gen >= b->gen)
			continue;
		CHECK_EQ(sio_core_recv(b, s.now, m, cap.len[k]), 0);
		n++;
	}
	CHECK(n >= 2);
	sio_kx_fields f;
	uint8_t m[SIO_KX_MSG_LEN];
	CHECK_OK(sio_kx_parse(a->local_msg, &f));
	/* a different message for the generation B holds, and one far ahead */
	f.created_ns += 1000;
	crypto_scalarmult_base(f.epub, (const uint8_t[32]){5});
	sio_kx_build(m, &f, s.p[0].sk);
	CHECK_EQ(sio_core_recv(b, s.now, m, sizeof m), 0);
	f.gen += 2;
	sio_kx_build(m, &f, s.p[0].sk);
	CHECK_EQ(sio_core_recv(b, s.now, m, sizeof m), 0);
	/* an older "new session" of A, and a newer one while A has proven itself */
	sio_kx_fields g = f;
	g.gen = 1;
	sio_put_le64(g.sid_sender, sio_get_le64(f.sid_sender) - 1);
	sio_kx_build(m, &g, s.p[0].sk);
	CHECK_EQ(sio_core_recv(b, s.now, m, sizeof m), 0);
	sio_put_le64(g.sid_sender, sio_get_le64(f.sid_sender) + 1);
	sio_kx_build(m, &g, s.p[0].sk);
	CHECK_EQ(sio_core_recv(b, s.now, m, sizeof m), 0);
	CHECK_EQ(b->verifies, v0);
	CHECK_EQ(stats(b).drop_kx + stats(b).drop_replay, d0 + n + 4);
	/* the next generation with a bad signature: rationed */
	f.gen -= 1;
	sio_kx_build(m, &f, s.p[0].sk);
	m[SIO_KX_MSG_LEN - 1] ^= 1;
	uint64_t l0 = stats(b).drop_kx_limited;
	for (int i = 0; i < 1000; i++) {
		uint8_t x[SIO_KX_MSG_LEN];
		memcpy(x, m, sizeof x);
		CHECK_EQ(sio_core_recv(b, s.now + (uint64_t)i * SIM_MS, x, sizeof x), 0);
	}
	/* 64 at once, then 256 a second over the flood's one second */
	CHECK(b->verifies - v0 >= 64 && b->verifies - v0 <= 64 + 257);
	CHECK_EQ(stats(b).drop_kx_limited - l0, 1000 - (b->verifies - v0));
	/* the session goes on renewing its keys */
	uint64_t r0 = stats(b).rekeys;
	s.now += 2 * SIM_S;
	sio_core_tick(a, s.now + 61 * SIM_S);
	s.now += 61 * SIM_S;
	sim_run(&s, s.now + 2 * SIM_S, NULL, NULL);
	CHECK(stats(b).rekeys > r0);
	CHECK(sim_established(&s));
	capture_free(&cap);
	sim_free(&s);
}

/* A packet lost on the way and replayed later (from anywhere) is still
 * fresh for the replay window and is delivered, but only a packet numbered
 * above everything before it under the newest key may move the peer's
 * address: the late copy says SIO_CORE_RX_DATA_OLD. */
static void test_late_packet_moves_nothing(void)
{
	sim s;
	sim_config cfg = base();
	CHECK_OK(sim_init(&s, 95, &cfg));
	CHECK(sim_run(&s, 3 * SIM_S, both_established, NULL));
	sio_core *a = s.p[0].core, *b = s.p[1].core;
	uint8_t pkt[2][256];
	size_t len[2] = {0, 0};
	for (int i = 0; i < 2; i++) {
		struct iovec iov[8];
		CHECK_OK(sio_core_write(a, s.now, 3, (const uint8_t *)"late", 4, 0));
		sio_core_flush(a, s.now);
		size_t n = sio_core_pending(a, s.now, iov, 8);
		CHECK_EQ(n, 1);
		if (n == 1 && iov[0].iov_len <= sizeof pkt[i]) {
			memcpy(pkt[i], iov[0].iov_base, iov[0].iov_len);
			len[i] = iov[0].iov_len;
		}
		sio_core_sent(a, n, 0);
	}
	size_t before = s.p[1].nmsgs;
	CHECK_EQ(sio_core_recv(b, s.now, pkt[1], len[1]), SIO_CORE_RX_DATA);
	CHECK_EQ(sio_core_recv(b, s.now, pkt[0], len[0]), SIO_CORE_RX_DATA_OLD);
	CHECK_EQ(s.p[1].nmsgs, before + 2); /* both delivered, once */
	sim_free(&s);
}

static int victim_established(sim *s, void *ctx)
{
	(void)ctx;
	return sio_core_state(s->p[1].core) == SIO_STATE_ESTABLISHED;
}

/* Side 1 pins two keys: side 0's and the adversary's (tests/lib/sim.h).
 * The adversary forges key exchanges as side 0 (next generation, current
 * generation during the first handshake, a "new session" of side 0) and
 * seals data under the keys they would agree: every forgery is dropped
 * before its signature is checked, nothing it sealed is delivered, and the
 * reported identity stays side 0's. */
static void test_pinset_takeover(void)
{
	static const uint8_t psk[32] = "pin-set takeover test pre-shared";
	for (int with_psk = 0; with_psk < 2; with_psk++) {
		sim s;
		sim_config cfg = base();
		cfg.adversary = 2;
		for (int i = 0; i < 2; i++) {
			cfg.opts[i].kx_interval_ns = 1 * SIM_S; /* renewals to imitate */
			if (with_psk) {
				cfg.opts[i].psk = psk;
				cfg.opts[i].psk_len = sizeof psk;
			}
		}
		CHECK_OK(sim_init(&s, 80 + (uint64_t)with_psk, &cfg));
		s.adv->period = 100 * SIM_MS;
		/* First handshake: forgeries arrive before the victim is established. */
		CHECK(sim_run(&s, 3 * SIM_S, victim_established, NULL));
		CHECK(s.adv->g.forged >= 1);
		uint64_t kx0 = stats(s.p[1].core).drop_kx;
		uint32_t nsent = 0;
		for (uint64_t t = s.now; t < 8 * SIM_S; t += 50 * SIM_MS) {
			uint8_t msg[8] = {'h', 'o', 'n', 'e', 's', 't', (uint8_t)nsent, 0};
			if (sio_core_write(s.p[0].core, s.now, 7, msg, sizeof msg, 0) == 0)
				nsent++;
			sim_run(&s, t, NULL, NULL);
		}
		sim_run(&s, s.now + 1 * SIM_S, NULL, NULL);
		sim_peer *v = &s.p[1];
		CHECK(s.adv->g.forged >= 60);
		CHECK(s.adv->g.data_made > 0); /* it answered renewals of side 0 */
		CHECK(stats(v->core).drop_kx >= kx0 + s.adv->g.forged - 2);
		CHECK_EQ(stats(v->core).drop_kx_limited, 0); /* dropped before the budget */
		CHECK_EQ(v->corrupt_accepted, 0);
		CHECK_EQ(v->corrupted_in, v->dropped_on_corrupt);
		CHECK(stats(v->core).rekeys >= 4);
		CHECK(sim_established(&s));
		CHECK_EQ(v->nmsgs, nsent);
		for (size_t i = 0; i < v->nmsgs; i++)
			CHECK(v->msgs[i].len == 8 && memcmp(v->msgs[i].data, "honest", 6) == 0);
		uint8_t pk[32];
		CHECK_OK(sio_core_remote_key(v->core, pk));
		CHECK(memcmp(pk, s.p[0].pk, 32) == 0);
		sim_free(&s);
	}
}

int main(void)
{
	CHECK_OK(sio_init());
	test_wrong_identity();
	test_pinset_takeover();
	test_kx_cheap_checks();
	test_late_packet_moves_nothing();
	test_psk();
	test_answers_mismatch();
	test_replayed_kx();
	test_bit_flips(0);
	test_bit_flips(1);
	test_decrypt_detach();
	test_crafted_kx();
	test_kx_replay_flood();
	test_time_sanity();
	test_pn_limit();
	test_liveness();
	test_port_unreachable();
	return check_done("test_core_neg");
}
