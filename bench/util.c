/* Small helpers shared by the rows: a wait-for-counter gate that costs a
 * system call only when a thread really sleeps. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "bench.h"

uint64_t bench_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct bench_gate {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	atomic_int sleepers;
};

struct bench_gate *bench_gate_new(void)
{
	struct bench_gate *g = calloc(1, sizeof(*g));
	if (!g)
		return NULL;
	pthread_mutex_init(&g->mu, NULL);
	pthread_condattr_t a;
	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(&g->cv, &a);
	pthread_condattr_destroy(&a);
	return g;
}

void bench_gate_free(struct bench_gate *g)
{
	if (!g)
		return;
	pthread_cond_destroy(&g->cv);
	pthread_mutex_destroy(&g->mu);
	free(g);
}

int bench_gate_wait(struct bench_gate *g, const _Atomic uint64_t *v, uint64_t target, int stall_ms)
{
	uint64_t last = atomic_load(v);
	uint64_t last_change = bench_now_ns();
	while (last < target) {
		pthread_mutex_lock(&g->mu);
		atomic_fetch_add(&g->sleepers, 1);
		/* seq_cst: either the notifier sees sleepers > 0, or we see its value */
		uint64_t cur = atomic_load(v);
		if (cur < target) {
			struct timespec ts;
			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts.tv_nsec += 100 * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&g->cv, &g->mu, &ts);
		}
		atomic_fetch_sub(&g->sleepers, 1);
		pthread_mutex_unlock(&g->mu);
		cur = atomic_load(v);
		uint64_t now = bench_now_ns();
		if (cur != last) {
			last = cur;
			last_change = now;
		} else if (now - last_change > (uint64_t)stall_ms * 1000000u) {
			return -1;
		}
	}
	return 0;
}

void bench_gate_notify(struct bench_gate *g)
{
	if (atomic_load(&g->sleepers) > 0) {
		pthread_mutex_lock(&g->mu);
		pthread_cond_broadcast(&g->cv);
		pthread_mutex_unlock(&g->mu);
	}
}
