/* The hot path allocates nothing: once established, writing, sealing,
 * handing out, receiving, opening and delivering messages (OpenSSL or
 * libsodium AEAD, with and without a PSK) never calls malloc. Counted by
 * interposing malloc in this test program (skipped under sanitizers, which
 * interpose malloc themselves). */
#include <sodium.h>
#include <string.h>

#include "check.h"
#include "core_int.h"
#include "lib/sim.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SIO_NO_INTERPOSE 1
#endif
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SIO_NO_INTERPOSE 1
#endif
#endif

static volatile int counting;
static volatile unsigned long allocs;

#ifndef SIO_NO_INTERPOSE
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

void *malloc(size_t n)
{
	if (counting)
		allocs++;
	return __libc_malloc(n);
}

void *calloc(size_t a, size_t b)
{
	if (counting)
		allocs++;
	return __libc_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
	if (counting)
		allocs++;
	return __libc_realloc(p, n);
}
#endif

static int both_established(sim *s, void *ctx)
{
	(void)ctx;
	return sim_established(s);
}

static void run(int with_psk, int datagram)
{
	static const uint8_t psk[32] = "allocation test pre-shared key.";
	sim s;
	sim_config cfg;
	memset(&cfg, 0, sizeof cfg);
	cfg.datagram = datagram;
	cfg.net.delay = SIM_MS;
	cfg.pin[0] = cfg.pin[1] = 1;
	if (with_psk) {
		cfg.opts[0].psk = cfg.opts[1].psk = psk;
		cfg.opts[0].psk_len = cfg.opts[1].psk_len = 32;
	}
	CHECK_OK(sim_init(&s, 7, &cfg));
	CHECK(sim_run(&s, 3 * SIM_S, both_established, NULL));
	sim_run(&s, s.now + 100 * SIM_MS, NULL, NULL);
	s.keep_msgs = 0;
	static uint8_t msg[70000], wire[70000];
	size_t big = sio_core_max_packet(s.p[0].core) - SIO_OVERHEAD - 1;
	uint64_t now = s.now;
	sio_stats st0, st1;
	sio_core_stats(s.p[1].core, &st0);
	counting = 1;
	allocs = 0;
	for (int i = 0; i < 2000; i++) {
		sio_core *a = s.p[i & 1].core, *b = s.p[!(i & 1)].core;
		size_t len = i % 10 == 0 ? big : (size_t)(i % 200);
		now += 10000;
		for (int k = 0; k < 4; k++)
			CHECK_OK(sio_core_write(a, now, (uint32_t)(i % 3), msg, len / 4, (uint64_t)i + 1));
		CHECK_OK(sio_core_write(a, now, SIO_TYPE_READWRITE, msg, len, (uint64_t)i + 1));
		sio_core_flush(a, now);
		struct iovec iov[16];
		size_t n = sio_core_pending(a, now, iov, 16);
		for (size_t k = 0; k < n; k++) {
			memcpy(wire, iov[k].iov_base, iov[k].iov_len);
			CHECK_EQ(sio_core_recv(b, now, wire, iov[k].iov_len), SIO_CORE_RX_DATA);
		}
		sio_core_sent(a, n, 0);
		sio_core_tick(a, now);
		(void)sio_core_deadline(a);
	}
	counting = 0;
	sio_core_stats(s.p[1].core, &st1);
	CHECK_EQ(st1.messages_received - st0.messages_received, 5000);
#ifndef SIO_NO_INTERPOSE
	CHECK_EQ(allocs, 0);
#endif
	sim_free(&s);
}

int main(void)
{
	CHECK_OK(sio_init());
#ifndef SIO_NO_INTERPOSE
	/* the counter itself works */
	counting = 1;
	allocs = 0;
	void *volatile p = malloc(10);
	counting = 0;
	free(p);
	CHECK_EQ(allocs, 1);
#endif
	for (int psk = 0; psk < 2; psk++)
		for (int dg = 0; dg < 2; dg++)
			run(psk, dg);
	return check_done("test_core_alloc");
}
