/* Key-exchange junk rows: the CPU one established session spends on a
 * key-exchange packet it must drop, measured on the protocol core alone
 * (no socket, no thread), one op = one packet handed to sio_core_recv().
 *  - KxJunkStranger: a well-formed message with the right session ids,
 *    signed by an identity that is not pinned (dropped on the identity).
 *  - KxJunkPinned: the pinned identity, the right session ids, the next
 *    generation, a signature that does not verify (a fresh one each op).
 *    Only 8 of these a second reach the signature check; the rest are
 *    dropped by the budget.
 *  - KxJunkReplayOld: the peer's genuine generation-1 message replayed after
 *    a renewal (dropped on the generation, before the signature).
 * The target: both of the last two within 2 us of the first. */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "core.h"
#include "kx.h"

struct kxb {
	sio_core *a, *b;
	sio_remote *ra, *rb;
	uint8_t ska[64], pka[32], skb[64], pkb[32];
	uint8_t old[SIO_KX_MSG_LEN]; /* A's generation-1 message */
	uint8_t bmsg[SIO_KX_MSG_LEN]; /* one of B's messages (B's session id) */
	int have_old, have_b;
	uint8_t pkt[SIO_KX_MSG_LEN]; /* the junk template of the row */
	uint64_t now;
	size_t arg;
};

/* Moves packets between the two cores until both are idle; keeps A's first
 * key-exchange message. */
static void pump(struct kxb *k)
{
	struct iovec iov[16];
	for (int round = 0; round < 64; round++) {
		size_t moved = 0;
		for (int side = 0; side < 2; side++) {
			sio_core *from = side ? k->b : k->a, *to = side ? k->a : k->b;
			size_t n = sio_core_pending(from, k->now, iov, 16);
			for (size_t i = 0; i < n; i++) {
				uint8_t buf[2048];
				size_t len = iov[i].iov_len < sizeof buf ? iov[i].iov_len : sizeof buf;
				memcpy(buf, iov[i].iov_base, len);
				if (!side && !k->have_old && len == SIO_KX_MSG_LEN && buf[0] == SIO_PKT_KX) {
					memcpy(k->old, buf, len);
					k->have_old = 1;
				}
				if (side && !k->have_b && len == SIO_KX_MSG_LEN && buf[0] == SIO_PKT_KX) {
					memcpy(k->bmsg, buf, len);
					k->have_b = 1;
				}
				sio_core_recv(to, k->now, buf, len);
			}
			if (n)
				sio_core_sent(from, n, 0);
			moved += n;
		}
		k->now += 1000;
		sio_core_tick(k->a, k->now);
		sio_core_tick(k->b, k->now);
		if (!moved && round > 4)
			break;
	}
}

static void kx_teardown(void *st)
{
	struct kxb *k = st;
	if (!k)
		return;
	sio_core_free(k->a);
	sio_core_free(k->b);
	sio_remote_free(k->ra);
	sio_remote_free(k->rb);
	sodium_memzero(k, sizeof *k);
	free(k);
}

static int kx_setup(void **st, const struct bench_row *r)
{
	struct kxb *k = calloc(1, sizeof *k);
	if (!k)
		return bench_fail("out of memory"), -1;
	k->arg = r->arg;
	crypto_sign_keypair(k->pka, k->ska);
	crypto_sign_keypair(k->pkb, k->skb);
	if (sio_remote_from_public_key(&k->ra, k->pkb) || sio_remote_from_public_key(&k->rb, k->pka)) {
		kx_teardown(k);
		return bench_fail("remote sets"), -1;
	}
	sio_core_config ca = {.ed25519_sk = k->ska, .remote = k->ra, .datagram = 1,
			      .wallclock_ns = 1700000000ull * 1000000000ull};
	sio_core_config cb = ca;
	cb.ed25519_sk = k->skb;
	cb.remote = k->rb;
	cb.wallclock_ns += 1000;
	if (sio_core_new(&k->a, &ca, NULL) || sio_core_new(&k->b, &cb, NULL)) {
		kx_teardown(k);
		return bench_fail("sio_core_new"), -1;
	}
	k->now = bench_now_ns();
	sio_core_start(k->a, k->now);
	sio_core_start(k->b, k->now);
	pump(k);
	/* One renewal, so that generation 1 is old. */
	k->now += 61ull * 1000000000ull;
	sio_core_tick(k->a, k->now);
	pump(k);
	if (sio_core_state(k->b) != SIO_STATE_ESTABLISHED || !k->have_old || !k->have_b) {
		kx_teardown(k);
		return bench_fail("the two cores did not establish"), -1;
	}
	sio_kx_fields f, fb;
	if (sio_kx_parse(k->old, &f) != 0 || sio_kx_parse(k->bmsg, &fb) != 0) {
		kx_teardown(k);
		return bench_fail("captured message does not parse"), -1;
	}
	/* Both session ids are known from the captured traffic. */
	if (k->arg == 2) {
		memcpy(k->pkt, k->old, sizeof k->pkt);
	} else {
		uint8_t sks[64], pks[32];
		memcpy(f.sid_receiver, fb.sid_sender, 16); /* addressed to B */
		f.gen = 3; /* B is at generation 2: the next one */
		f.created_ns += 100ull * 1000000000ull;
		crypto_scalarmult_base(f.epub, (const uint8_t[32]){9});
		if (k->arg == 0) {
			crypto_sign_keypair(pks, sks);
			memcpy(f.idpk, pks, 32);
			sio_kx_build(k->pkt, &f, sks);
			sodium_memzero(sks, sizeof sks);
		} else {
			sio_kx_build(k->pkt, &f, k->ska);
			k->pkt[SIO_KX_MSG_LEN - 1] ^= 0x55; /* signature no longer verifies */
		}
	}
	*st = k;
	return 0;
}

static int kx_run(void *st, uint64_t n)
{
	struct kxb *k = st;
	uint8_t buf[SIO_KX_MSG_LEN];
	bench_start();
	for (uint64_t i = 0; i < n; i++) {
		memcpy(buf, k->pkt, sizeof buf);
		/* a different signature each time (the last 8 bytes) */
		if (k->arg == 1)
			memcpy(buf + SIO_KX_MSG_LEN - 8, &i, 8);
		/* real time: the signature budget refills as it would */
		if ((i & 1023) == 0)
			k->now = bench_now_ns();
		if (sio_core_recv(k->b, k->now, buf, sizeof buf) != 0) {
			bench_stop();
			return bench_fail("junk key exchange accepted"), -1;
		}
	}
	bench_stop();
	if (sio_core_state(k->b) != SIO_STATE_ESTABLISHED)
		return bench_fail("session did not survive the junk"), -1;
	return 0;
}

const struct bench_row bench_rows_kx[] = {
	{"KxJunkStranger", "limit", 0, 0, kx_setup, kx_run, kx_teardown, 0},
	{"KxJunkPinned", "limit", 1, 0, kx_setup, kx_run, kx_teardown, 0},
	{"KxJunkReplayOld", "limit", 2, 0, kx_setup, kx_run, kx_teardown, 0},
	{NULL, NULL, 0, 0, NULL, NULL, NULL, 0},
};
