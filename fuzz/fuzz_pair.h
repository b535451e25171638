/* Shared by the fuzz targets: a deterministic pair of protocol cores that
 * talk through an in-memory wire, so a target can complete a real
 * handshake and then play the attacker. Not a fuzz target itself. */
#ifndef SIO_FUZZ_PAIR_H
#define SIO_FUZZ_PAIR_H

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "core_int.h"

typedef struct fz_ctx {
	uint64_t s;
	uint64_t sum; /* of delivered bytes, so delivery touches every byte */
	uint64_t msgs;
} fz_ctx;

static inline void fz_random(void *ctx, uint8_t *buf, size_t len)
{
	fz_ctx *r = ctx;
	for (size_t i = 0; i < len; i++) {
		r->s = r->s * 6364136223846793005ull + 1442695040888963407ull;
		buf[i] = (uint8_t)(r->s >> 56);
	}
}

static inline void fz_deliver(void *ctx, uint32_t type, const uint8_t *d, size_t len)
{
	fz_ctx *r = ctx;
	(void)type;
	r->msgs++;
	for (size_t i = 0; i < len; i++)
		r->sum += d[i];
}

static uint8_t fz_sk[3][64], fz_pk[3][32];
static const uint8_t fz_psk[32] = "fuzzing pre-shared key, 32 byte";

static inline void fz_init(void)
{
	static int done;
	if (done)
		return;
	if (sodium_init() < 0)
		abort();
	for (int i = 0; i < 3; i++) {
		uint8_t seed[32];
		memset(seed, i + 1, 32);
		crypto_sign_seed_keypair(fz_pk[i], fz_sk[i], seed);
	}
	done = 1;
}

/* Core number I (identity I), datagram mode, optional PSK; CTX must start
 * with an fz_ctx (the random generator state). */
typedef void (*fz_deliver_fn)(void *, uint32_t, const uint8_t *, size_t);

static inline sio_core *fz_core_cb(int i, void *ctx, int psk, fz_deliver_fn dl)
{
	sio_core_config cfg;
	sio_core_cbs cb = {.ctx = ctx, .random = fz_random, .deliver = dl};
	sio_core *c;
	memset(&cfg, 0, sizeof cfg);
	cfg.ed25519_sk = fz_sk[i];
	cfg.datagram = 1;
	cfg.wallclock_ns = 1000000000ull * (1 + (uint64_t)i);
	cfg.opts.detach_on_decrypt_fails = 1000;
	if (psk) {
		cfg.opts.psk = fz_psk;
		cfg.opts.psk_len = sizeof fz_psk;
	}
	if (sio_core_new(&c, &cfg, &cb) != 0)
		abort();
	sio_core_start(c, 0);
	return c;
}

static inline sio_core *fz_core(int i, fz_ctx *ctx, int psk)
{
	return fz_core_cb(i, ctx, psk, fz_deliver);
}

#define FZ_CAP 16
typedef struct fz_wire {
	uint8_t pkt[FZ_CAP][2048];
	size_t len[FZ_CAP];
	size_t n;
} fz_wire;

static uint8_t fz_buf[1 << 17];

/* Moves FROM's pending packets to TO; keeps copies in CAP (if any). */
static inline void fz_pump(sio_core *from, sio_core *to, uint64_t now, fz_wire *cap)
{
	struct iovec iov[32];
	size_t n = sio_core_pending(from, now, iov, 32);
	for (size_t i = 0; i < n; i++) {
		size_t l = iov[i].iov_len;
		memcpy(fz_buf, iov[i].iov_base, l);
		if (cap && l <= sizeof cap->pkt[0]) {
			size_t k = cap->n++ % FZ_CAP;
			memcpy(cap->pkt[k], iov[i].iov_base, l);
			cap->len[k] = l;
		}
		if (to)
			sio_core_recv(to, now, fz_buf, l);
	}
	sio_core_sent(from, n, 0);
}

/* Runs the handshake between A and B to completion (aborts if it fails:
 * that would be a bug, not a finding of the input). */
static inline uint64_t fz_handshake(sio_core *a, sio_core *b, uint64_t now, fz_wire *cap)
{
	for (int k = 0; k < 8; k++) {
		fz_pump(a, b, now, cap);
		fz_pump(b, a, now, cap);
		now += 1000;
	}
	if (sio_core_state(a) != SIO_STATE_ESTABLISHED || sio_core_state(b) != SIO_STATE_ESTABLISHED)
		abort();
	return now;
}

#endif
