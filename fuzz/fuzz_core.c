/* libFuzzer target for the protocol core's receive path. Each input builds
 * a fresh, deterministic pair of cores, then (first byte):
 *   0: the rest is packets (2-byte LE length prefixes) fed to an
 *      established core: header, key lookup, replay, AEAD, PSK unmasking;
 *   1: the rest is frame bytes sealed by the peer (so they authenticate)
 *      and fed through: frame parser, delivery, close handling;
 *   2: packets fed to a core in key exchange: kx parsing, unwrapping.
 * Odd second byte: both cores use a PSK. */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "core_int.h"

typedef struct rng {
	uint64_t s;
	uint64_t sum; /* of delivered bytes, so delivery reads every byte */
} rng;

static void det_random(void *ctx, uint8_t *buf, size_t len)
{
	rng *r = ctx;
	for (size_t i = 0; i < len; i++) {
		r->s = r->s * 6364136223846793005ull + 1442695040888963407ull;
		buf[i] = (uint8_t)(r->s >> 56);
	}
}

static void deliver(void *ctx, uint32_t type, const uint8_t *d, size_t len)
{
	rng *r = ctx;
	(void)type;
	for (size_t i = 0; i < len; i++)
		r->sum += d[i];
}

static uint8_t sk[2][64], pk[2][32], pkt[1 << 17];

static void pump(sio_core *from, sio_core *to, uint64_t now)
{
	struct iovec iov[32];
	size_t n = sio_core_pending(from, now, iov, 32);
	for (size_t i = 0; i < n; i++) {
		memcpy(pkt, iov[i].iov_base, iov[i].iov_len);
		sio_core_recv(to, now, pkt, iov[i].iov_len);
	}
	sio_core_sent(from, n, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int init;
	static const uint8_t psk[32] = "fuzzing pre-shared key, 32 byte";
	if (!init) {
		if (sodium_init() < 0)
			abort();
		for (int i = 0; i < 2; i++) {
			uint8_t seed[32];
			memset(seed, i + 1, 32);
			crypto_sign_seed_keypair(pk[i], sk[i], seed);
		}
		init = 1;
	}
	if (size < 2)
		return 0;
	int mode = data[0] % 3, with_psk = data[1] & 1;
	data += 2;
	size -= 2;
	rng r[2] = {{1, 0}, {2, 0}};
	sio_core *c[2];
	for (int i = 0; i < 2; i++) {
		sio_core_config cfg;
		sio_core_cbs cb = {.ctx = &r[i], .random = det_random, .deliver = deliver};
		memset(&cfg, 0, sizeof cfg);
		cfg.ed25519_sk = sk[i];
		cfg.datagram = 1;
		cfg.wallclock_ns = 1000000000ull * (1 + (uint64_t)i);
		cfg.opts.detach_on_decrypt_fails = 50;
		if (with_psk) {
			cfg.opts.psk = psk;
			cfg.opts.psk_len = sizeof psk;
		}
		if (sio_core_new(&c[i], &cfg, &cb) != 0)
			abort();
		sio_core_start(c[i], 0);
	}
	uint64_t now = 1000;
	if (mode != 2) {
		for (int k = 0; k < 6; k++) {
			pump(c[0], c[1], now);
			pump(c[1], c[0], now);
			now += 1000;
		}
		if (sio_core_state(c[1]) != SIO_STATE_ESTABLISHED)
			abort();
	}
	if (mode == 1) {
		if (size <= c[0]->o.max_packet_size - SIO_OVERHEAD &&
		    sio_core_tx_frame(c[0], now, data, size, NULL, 0, 1) == 0)
			pump(c[0], c[1], now);
	} else {
		while (size >= 2) {
			size_t len = (size_t)data[0] | (size_t)data[1] << 8;
			data += 2;
			size -= 2;
			if (len > size)
				len = size;
			memcpy(pkt, data, len);
			sio_core_recv(c[1], now, pkt, len);
			data += len;
			size -= len;
			now += 1000;
			sio_core_tick(c[1], now);
			struct iovec iov[32];
			sio_core_sent(c[1], sio_core_pending(c[1], now, iov, 32), 0);
		}
	}
	sio_core_free(c[0]);
	sio_core_free(c[1]);
	return 0;
}
