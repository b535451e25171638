/* Soak: one session over UDP through the fault relay (tests/lib/mitm.c)
 * with random loss, duplication, reordering and bit flips, continuous
 * traffic both ways and key renewal every second. Every delivered message
 * is checked (intact, from this session, at most once). Reports the heap
 * in use after warm-up and at the end, both measured with traffic paused
 * (glibc mallinfo2), and fails on any growth, any altered or duplicated
 * message, a dead session or no key renewal.
 *   SIO_SOAK_SECONDS=N  run N seconds (make soak: SOAK_SECONDS, default 60);
 *   unset: a 4-second smoke run that reports memory but does not judge it
 *   (too short to warm up; and sanitizer builds keep their own heap). */
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "lib/mitm.h"
#include "secureio.h"

#define CHAN 7
#define MAXSEQ (1u << 24)

struct rx {
	pthread_mutex_t mu;
	uint32_t tag;
	uint8_t *seen; /* bitmap */
	uint64_t count, bad;
};

static void on_msg(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	struct rx *r = ctx;
	uint32_t seq, tag;
	(void)s;
	pthread_mutex_lock(&r->mu);
	if (type != CHAN || len < 8) {
		r->bad++;
		goto out;
	}
	memcpy(&seq, d, 4);
	memcpy(&tag, d + 4, 4);
	int ok = tag == r->tag && seq < MAXSEQ && !(r->seen[seq / 8] & (1u << (seq % 8)));
	for (size_t i = 8; ok && i < len; i++)
		ok = d[i] == (uint8_t)(seq + tag + i);
	if (!ok) {
		r->bad++;
		goto out;
	}
	r->seen[seq / 8] |= (uint8_t)(1u << (seq % 8));
	r->count++;
out:
	pthread_mutex_unlock(&r->mu);
}

struct faults {
	uint64_t x;
	uint64_t lost, dup, flipped, held;
	uint8_t hold[2][2048];
	size_t holdlen[2];
	mitm *m;
};

static uint32_t rnd(struct faults *f)
{
	f->x ^= f->x << 13;
	f->x ^= f->x >> 7;
	f->x ^= f->x << 17;
	return (uint32_t)(f->x >> 11);
}

/* Runs on the relay thread: 10% loss, 3% duplicates, 2% one flipped bit,
 * 5% held back and sent after the next packet (reordering). */
static int fault(void *ctx, int dir, uint8_t *p, size_t *len)
{
	struct faults *f = ctx;
	uint32_t r = rnd(f) % 100;
	if (f->holdlen[dir]) {
		mitm_inject(f->m, dir, f->hold[dir], f->holdlen[dir]);
		f->holdlen[dir] = 0;
	}
	if (r < 10) {
		f->lost++;
		return 0;
	}
	if (r < 13) {
		f->dup++;
		mitm_inject(f->m, dir, p, *len);
	} else if (r < 15 && *len) {
		f->flipped++;
		p[rnd(f) % *len] ^= (uint8_t)(1u << (rnd(f) % 8));
	} else if (r < 20 && *len <= sizeof f->hold[0]) {
		f->held++;
		memcpy(f->hold[dir], p, *len);
		f->holdlen[dir] = *len;
		return 0;
	}
	return 1;
}

static int errors;
static void on_error(sio_session *s, int err, const char *msg, void *ctx)
{
	(void)s;
	(void)ctx;
	if (errors++ < 5)
		printf("soak: error event %d: %s\n", err, msg);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint32_t seqs[2];

static void traffic(sio_session *s[2], struct rx rx[2], double seconds)
{
	uint8_t m[300];
	double end = now_s() + seconds;
	while (now_s() < end) {
		for (int i = 0; i < 2; i++) {
			uint32_t seq = seqs[i], tag = rx[!i].tag;
			size_t len = 8 + seq % 280;
			if (seq >= MAXSEQ)
				continue;
			memcpy(m, &seq, 4);
			memcpy(m + 4, &tag, 4);
			for (size_t k = 8; k < len; k++)
				m[k] = (uint8_t)(seq + tag + k);
			if (sio_write_message(s[i], CHAN, m, len) == 0)
				seqs[i]++;
		}
		usleep(500);
	}
}

static size_t heap_in_use(void)
{
	struct mallinfo2 mi = mallinfo2();
	return mi.uordblks;
}

int main(void)
{
	const char *e = getenv("SIO_SOAK_SECONDS");
	int judge = e != NULL;
	double secs = e ? atof(e) : 4;
	if (secs < 4)
		secs = 4;
	alarm((unsigned)secs + 120);
	signal(SIGPIPE, SIG_IGN);
	CHECK_OK(sio_init());

	sio_identity *id[2];
	sio_remote *rem[2];
	uint8_t seed[SIO_SEED_BYTES], pk[SIO_PUBLIC_KEY_BYTES];
	for (int i = 0; i < 2; i++) {
		memset(seed, 0x51 + i, sizeof seed);
		CHECK_OK(sio_identity_from_seed(&id[i], seed));
	}
	for (int i = 0; i < 2; i++) {
		sio_identity_public_key(id[!i], pk);
		CHECK_OK(sio_remote_from_public_key(&rem[i], pk));
	}
	struct faults f = {.x = 0x9e3779b97f4a7c15ull};
	int fd[2];
	CHECK_OK(mitm_open(&f.m, &fd[0], &fd[1]));
	mitm_record(f.m, 0);
	mitm_set_filter(f.m, fault, &f);

	struct rx rx[2];
	sio_session *s[2];
	sio_callbacks cb = {.on_error = on_error};
	for (int i = 0; i < 2; i++) {
		sio_transport t;
		sio_options o;
		pthread_mutex_init(&rx[i].mu, NULL);
		rx[i].tag = 0x50a0 + (uint32_t)i;
		rx[i].seen = calloc(MAXSEQ / 8, 1);
		rx[i].count = rx[i].bad = 0;
		sio_transport_fd(&t, fd[i], fd[i]);
		sio_options_default(&o);
		o.kx_interval_ns = 1000000000;
		o.kx_retry_ns = 200000000;
		o.error_on_decrypt_fails = -1; /* flipped bits are expected here */
		CHECK_OK(sio_session_new(&s[i], id[i], rem[i], &t, &o, &cb));
		CHECK_OK(sio_set_handler(s[i], CHAN, on_msg, NULL, &rx[i]));
	}
	for (int i = 0; i < 2; i++)
		CHECK_OK(sio_session_start(s[i]));
	CHECK_OK(sio_session_wait_state(s[0], SIO_STATE_ESTABLISHED, 30000));
	CHECK_OK(sio_session_wait_state(s[1], SIO_STATE_ESTABLISHED, 30000));

	double warm = secs / 4 < 2 ? 2 : secs / 4;
	traffic(s, rx, warm);
	usleep(500000);
	size_t m0 = heap_in_use();
	traffic(s, rx, secs - warm);
	usleep(500000);
	size_t m1 = heap_in_use();

	/* the relay thread stops calling fault() (and its mutex orders its
	 * last counter updates before the reads below) */
	mitm_set_filter(f.m, NULL, NULL);
	sio_stats st[2];
	for (int i = 0; i < 2; i++) {
		sio_session_stats(s[i], &st[i]);
		CHECK_EQ(sio_session_state(s[i]), SIO_STATE_ESTABLISHED);
		CHECK_EQ(rx[i].bad, 0);
		CHECK(rx[i].count > 0);
		CHECK(st[i].rekeys > 0);
	}
	long long growth = (long long)m1 - (long long)m0;
	printf("soak: %.0f s; sent %u/%u msgs, delivered %llu/%llu, rekeys %llu/%llu\n", secs,
	       seqs[0], seqs[1], (unsigned long long)rx[1].count, (unsigned long long)rx[0].count,
	       (unsigned long long)st[0].rekeys, (unsigned long long)st[1].rekeys);
	printf("soak: faults: lost %llu, duplicated %llu, flipped %llu, reordered %llu; drops at B: "
	       "decrypt %llu replay %llu too-old %llu unknown-key %llu kx %llu malformed %llu\n",
	       (unsigned long long)f.lost, (unsigned long long)f.dup, (unsigned long long)f.flipped,
	       (unsigned long long)f.held, (unsigned long long)st[1].drop_decrypt,
	       (unsigned long long)st[1].drop_replay, (unsigned long long)st[1].drop_too_old,
	       (unsigned long long)st[1].drop_unknown_key, (unsigned long long)st[1].drop_kx,
	       (unsigned long long)st[1].drop_malformed);
	printf("soak: heap in use after warm-up %zu B, at end %zu B, growth %lld B%s; error events %d\n",
	       m0, m1, growth, judge ? "" : " (smoke run: not judged)", errors);
	if (judge)
		CHECK(growth <= 0);

	for (int i = 0; i < 2; i++)
		sio_session_free(s[i]);
	mitm_free(f.m);
	for (int i = 0; i < 2; i++) {
		sio_remote_free(rem[i]);
		sio_identity_free(id[i]);
		free(rx[i].seen);
		pthread_mutex_destroy(&rx[i].mu);
	}
	return check_done("test_soak");
}
