/* The hot path allocates nothing: once established, writing, sealing,
 * handing out, receiving, opening and delivering messages (OpenSSL or
 * libsodium AEAD, with and without a PSK) never calls malloc. Counted by
 * interposing malloc in this test program (skipped under sanitizers, which
 * interpose malloc themselves). The buffers a busy session needs are
 * allocated when it gets busy and returned once it is idle again. */
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

/* ITERS rounds of traffic both ways (messages of every size up to a full
 * packet, with tokens), each packet handed straight to the other core. */
static void traffic(sim *s, uint64_t *now, int iters)
{
	static uint8_t msg[70000], wire[70000];
	size_t big = sio_core_max_packet(s->p[0].core) - SIO_OVERHEAD - 1;
	sio_stats st0, st1;
	sio_core_stats(s->p[1].core, &st0);
	int to1 = 0;
	for (int i = 0; i < iters; i++) {
		sio_core *a = s->p[i & 1].core, *b = s->p[!(i & 1)].core;
		size_t len = i % 10 == 0 ? big : (size_t)(i % 200);
		*now += 10000;
		for (int k = 0; k < 4; k++)
			CHECK_OK(sio_core_write(a, *now, (uint32_t)(i % 3), msg, len / 4, (uint64_t)i + 1));
		CHECK_OK(sio_core_write(a, *now, SIO_TYPE_READWRITE, msg, len, (uint64_t)i + 1));
		to1 += !(i & 1);
		sio_core_flush(a, *now);
		struct iovec iov[16];
		size_t n = sio_core_pending(a, *now, iov, 16);
		for (size_t k = 0; k < n; k++) {
			memcpy(wire, iov[k].iov_base, iov[k].iov_len);
			CHECK_EQ(sio_core_recv(b, *now, wire, iov[k].iov_len), SIO_CORE_RX_DATA);
		}
		sio_core_sent(a, n, 0);
		sio_core_tick(a, *now);
		(void)sio_core_deadline(a);
	}
	sio_core_stats(s->p[1].core, &st1);
	CHECK_EQ(st1.messages_received - st0.messages_received, (uint64_t)to1 * 5);
}

/* Hands every packet still queued (answers, acknowledgements) to the peer. */
static void drain(sim *s, uint64_t now)
{
	static uint8_t wire[70000];
	for (int round = 0; round < 4; round++)
		for (int k = 0; k < 2; k++) {
			struct iovec iov[16];
			size_t n = sio_core_pending(s->p[k].core, now, iov, 16);
			for (size_t i = 0; i < n; i++) {
				memcpy(wire, iov[i].iov_base, iov[i].iov_len);
				sio_core_recv(s->p[!k].core, now, wire, iov[i].iov_len);
			}
			sio_core_sent(s->p[k].core, n, 0);
		}
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
	uint64_t now = s.now;
	/* A session getting busy allocates its buffers (packet rings in
	 * chunks, the token ring, AEAD contexts) while its traffic grows... */
	traffic(&s, &now, 2000);
	/* ...and nothing more once it is busy: the hot path allocates nothing. */
	counting = 1;
	allocs = 0;
	traffic(&s, &now, 2000);
	counting = 0;
#ifndef SIO_NO_INTERPOSE
	CHECK_EQ(allocs, 0);
#endif
	/* Idle for SIO_TRIM_NS: the buffers go back (core_tx.c). The cores'
	 * own timers may still send a packet or two (answers, probes): the
	 * time runs from deadline to deadline, as an I/O layer would. */
	CHECK(sio_core_held_bytes(s.p[0].core) > 0 && sio_core_held_bytes(s.p[1].core) > 0);
	uint64_t quiet = now, end = now + 10 * SIO_TRIM_NS;
	while (now < end && (sio_core_held_bytes(s.p[0].core) || sio_core_held_bytes(s.p[1].core))) {
		drain(&s, now);
		uint64_t d = UINT64_MAX;
		for (int k = 0; k < 2; k++) {
			uint64_t dk = sio_core_deadline(s.p[k].core);
			d = dk < d ? dk : d;
		}
		CHECK(d <= end); /* a tick is asked for while buffers are held */
		now = d > now ? d : now + 1;
		for (int k = 0; k < 2; k++)
			sio_core_tick(s.p[k].core, now);
	}
	CHECK(now >= quiet + SIO_TRIM_NS); /* not before the session was idle that long */
	for (int k = 0; k < 2; k++) {
		sio_core *c = s.p[k].core;
		CHECK_EQ(sio_core_held_bytes(c), 0);
		CHECK(sio_core_deadline(c) > now + SIO_TRIM_NS); /* no trim left to ask for */
		CHECK_EQ(sio_core_state(c), SIO_STATE_ESTABLISHED);
	}
	/* Busy again: buffers come back, every message arrives (traffic()
	 * checks them), and the steady state allocates nothing again. */
	traffic(&s, &now, 2000);
	CHECK(sio_core_held_bytes(s.p[0].core) > 0);
	counting = 1;
	allocs = 0;
	traffic(&s, &now, 500);
	counting = 0;
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
