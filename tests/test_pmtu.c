/* Packet-size negotiation state machine (src/core/pmtu.c) over simulated paths:
 * loopback-like, lower MTU, black hole above X, no answers at all, random
 * probe loss, path change mid-session (down then up again). */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "pmtu.h"

#define MS 1000000ull
#define US 1000ull

typedef struct path {
	uint32_t mtu;      /* packets above are dropped */
	uint64_t rtt;      /* round trip */
	int answer;        /* 0: the peer never answers */
	uint32_t loss_pct; /* random loss of probes or acks */
	uint64_t seed;
	uint64_t ready_at; /* the peer answers only from this time on */
} path;

typedef struct inflight {
	uint64_t at;
	uint32_t id, size;
} inflight;

static inflight fl[256];
static size_t nfl;
static uint64_t sent_probes;

static uint32_t prng(path *pa)
{
	pa->seed ^= pa->seed << 13;
	pa->seed ^= pa->seed >> 7;
	pa->seed ^= pa->seed << 17;
	return (uint32_t)(pa->seed >> 20);
}

/* Runs the machine on PATH from *NOW until STOP (or until the initial search
 * is done when UNTIL_DONE). Returns the time it stopped at. */
static uint64_t run(sio_pmtu *p, path *pa, uint64_t now, uint64_t stop, int until_done)
{
	for (int guard = 0; guard < 100000; guard++) {
		sio_pmtu_probe pr[SIO_PMTU_MAX_PER_ROUND + 1];
		size_t n = sio_pmtu_poll(p, now, pr, SIO_PMTU_MAX_PER_ROUND + 1);
		for (size_t i = 0; i < n; i++) {
			sent_probes++;
			CHECK(pr[i].size <= p->cfg.max);
			CHECK(pr[i].size >= p->cfg.base);
			if (!pa->answer || pr[i].size > pa->mtu || now < pa->ready_at)
				continue;
			if (pa->loss_pct && prng(pa) % 100 < pa->loss_pct)
				continue;
			if (nfl < 256)
				fl[nfl++] = (inflight){now + pa->rtt, pr[i].id, pr[i].size};
		}
		if (until_done && sio_pmtu_done(p))
			return now;
		uint64_t next = sio_pmtu_deadline(p);
		CHECK(next != 0); /* everything due was taken */
		for (size_t i = 0; i < nfl; i++)
			if (fl[i].at < next)
				next = fl[i].at;
		if (next == UINT64_MAX || next >= stop)
			return stop;
		CHECK(next >= now);
		now = next;
		for (size_t i = 0; i < nfl;) {
			if (fl[i].at <= now) {
				sio_pmtu_ack(p, now, fl[i].id, fl[i].size);
				fl[i] = fl[--nfl];
			} else {
				i++;
			}
		}
	}
	CHECK(0); /* no progress */
	return now;
}

static void mk(sio_pmtu *p, uint32_t max)
{
	sio_pmtu_cfg c;
	memset(&c, 0, sizeof c);
	c.max = max;
	sio_pmtu_init(p, &c);
	nfl = 0;
}

static void test_loopback(void)
{
	sio_pmtu p;
	path pa = {65535, 50 * US, 1, 0, 1, 0};
	mk(&p, 65535);
	CHECK_EQ(sio_pmtu_size(&p), SIO_PMTU_BASE);
	CHECK(!sio_pmtu_done(&p));
	sio_pmtu_start(&p, 1000);
	CHECK_EQ(sio_pmtu_deadline(&p), 0);
	uint64_t t = run(&p, &pa, 1000, 10000 * MS, 1);
	CHECK(sio_pmtu_done(&p));
	CHECK_EQ(sio_pmtu_size(&p), 65535);
	/* One round trip: the first round includes the maximum. */
	CHECK_EQ(t - 1000, 50 * US);
	CHECK_EQ(p.st.searches, 1);
	CHECK_EQ(p.st.fallbacks, 0);
}

static void test_lower_mtu(uint32_t max, uint32_t mtu, uint64_t rtt)
{
	sio_pmtu p;
	path pa = {mtu, rtt, 1, 0, 2, 0};
	mk(&p, max);
	sio_pmtu_start(&p, 0);
	uint64_t t = run(&p, &pa, 0, 10000 * MS, 1);
	CHECK(sio_pmtu_done(&p));
	uint32_t s = sio_pmtu_size(&p);
	CHECK(s <= mtu);
	/* Within the granularity below the true value, unless the search ran
	 * out of rounds first (wide range): then within the last round's step. */
	uint32_t tol = 8;
	if (!(s + tol >= mtu))
		fprintf(stderr, "max %u mtu %u got %u\n", max, mtu, s);
	CHECK(s + tol >= mtu);
	CHECK(t <= 500 * MS); /* bounded by the negotiation timeout */
	if (getenv("SIO_PMTU_VERBOSE"))
		fprintf(stderr, "max %u mtu %u rtt %llu us: size %u after %llu us, %llu probes\n",
		        max, mtu, (unsigned long long)(rtt / US), s, (unsigned long long)(t / US),
		        (unsigned long long)p.st.probes_sent);
}

static void test_no_answers(void)
{
	sio_pmtu p;
	path pa = {65535, 1 * MS, 0, 0, 3, 0};
	mk(&p, 1452);
	sio_pmtu_start(&p, 5 * MS);
	uint64_t t = run(&p, &pa, 5 * MS, 10000 * MS, 1);
	CHECK(sio_pmtu_done(&p));
	CHECK_EQ(sio_pmtu_size(&p), SIO_PMTU_BASE);
	CHECK(t - 5 * MS <= 500 * MS);
	CHECK_EQ(p.st.fallbacks, 1);
	/* Settled at base: nothing to confirm; only the raise timer (600 s)
	 * tries larger sizes again. */
	uint64_t before = sent_probes;
	t = run(&p, &pa, t, t + 500000 * MS, 0);
	CHECK_EQ(sent_probes, before);
	t = run(&p, &pa, t, t + 200000 * MS, 0);
	CHECK(sent_probes > before);
	CHECK_EQ(p.st.searches, 2);
	CHECK_EQ(sio_pmtu_size(&p), SIO_PMTU_BASE);
}

static void test_random_loss(void)
{
	for (uint64_t seed = 1; seed <= 50; seed++) {
		sio_pmtu p;
		path pa = {1400, 20 * MS, 1, 20, seed * 7919, 0};
		mk(&p, 1452);
		sio_pmtu_start(&p, 0);
		uint64_t t = run(&p, &pa, 0, 10000 * MS, 1);
		CHECK(sio_pmtu_done(&p));
		CHECK(sio_pmtu_size(&p) <= 1400);
		CHECK(sio_pmtu_size(&p) >= SIO_PMTU_BASE);
		CHECK(t <= 500 * MS);
	}
}

/* The peer installs its key late (answers modes without waiting): the
 * first rounds get no answer at all, which must not shrink the result. */
static void test_late_peer(void)
{
	sio_pmtu p;
	path pa = {1452, 1 * MS, 1, 0, 5, 100 * MS};
	mk(&p, 1452);
	sio_pmtu_start(&p, 0);
	uint64_t t = run(&p, &pa, 0, 10000 * MS, 1);
	CHECK_EQ(sio_pmtu_size(&p), 1452);
	CHECK(t <= 500 * MS);
	CHECK_EQ(p.st.fallbacks, 0);
}

static void test_path_change(void)
{
	sio_pmtu p;
	sio_pmtu_cfg c;
	memset(&c, 0, sizeof c);
	c.max = 1452;
	c.confirm_ns = 1000 * MS;
	c.raise_ns = 30000 * MS;
	sio_pmtu_init(&p, &c);
	nfl = 0;
	path pa = {1500, 2 * MS, 1, 0, 4, 0};
	sio_pmtu_start(&p, 0);
	uint64_t t = run(&p, &pa, 0, 10000 * MS, 1);
	CHECK_EQ(sio_pmtu_size(&p), 1452);
	/* Periodic confirmations keep it while the path holds. */
	t = run(&p, &pa, t, t + 5000 * MS, 0);
	CHECK_EQ(sio_pmtu_size(&p), 1452);
	CHECK_EQ(p.st.path_changes, 0);
	CHECK(p.st.acks >= 5);

	/* The path shrinks; the loss signal confirms at once: 3 misses, then a
	 * new search settles on the new size, long before the next periodic
	 * confirmation would have started. */
	pa.mtu = 1280;
	sio_pmtu_loss(&p, t);
	CHECK_EQ(sio_pmtu_deadline(&p), 0);
	uint64_t t0 = t;
	for (int i = 0; i < 200 && (p.st.path_changes == 0 || p.phase != SIO_PMTU_SETTLED); i++)
		t = run(&p, &pa, t, t + 10 * MS, 0);
	CHECK_EQ(p.st.path_changes, 1);
	CHECK(sio_pmtu_size(&p) <= 1280 && sio_pmtu_size(&p) + 8 >= 1280);
	CHECK(t - t0 < 1000 * MS);

	/* Without a loss signal, the periodic confirmation finds a shrink too. */
	pa.mtu = 1240;
	t = run(&p, &pa, t, t + 3000 * MS, 0);
	CHECK_EQ(p.st.path_changes, 2);
	CHECK(sio_pmtu_size(&p) <= 1240 && sio_pmtu_size(&p) + 8 >= 1240);

	/* The path grows back: the raise timer finds the larger size. */
	pa.mtu = 1500;
	t = run(&p, &pa, t, t + 31000 * MS, 0);
	CHECK_EQ(sio_pmtu_size(&p), 1452);

	/* A loss signal on a healthy path costs one answered probe, no change. */
	uint64_t pc = p.st.path_changes;
	sio_pmtu_loss(&p, t);
	t = run(&p, &pa, t, t + 100 * MS, 0);
	CHECK_EQ(p.st.path_changes, pc);
	CHECK_EQ(sio_pmtu_size(&p), 1452);
}

static void test_acks_checked(void)
{
	sio_pmtu p;
	mk(&p, 1452);
	sio_pmtu_start(&p, 0);
	sio_pmtu_probe pr[8];
	size_t n = sio_pmtu_poll(&p, 0, pr, 8);
	/* The known-good base, then three sizes up to the maximum. */
	CHECK_EQ(n, 4);
	CHECK_EQ(pr[0].size, SIO_PMTU_BASE);
	CHECK_EQ(pr[3].size, 1452);
	CHECK(pr[1].size > SIO_PMTU_BASE && pr[1].size < pr[2].size && pr[2].size < pr[3].size);
	memmove(pr, pr + 1, 3 * sizeof pr[0]);
	/* Each probe is handed out once. */
	CHECK_EQ(sio_pmtu_poll(&p, 0, pr + 3, 5), 0);
	/* Unknown id, or the right id with another size: ignored. */
	CHECK_EQ(sio_pmtu_ack(&p, 1, 999, 1452), 0);
	CHECK_EQ(sio_pmtu_ack(&p, 1, pr[2].id, 1451), 0);
	CHECK_EQ(p.st.bad_acks, 2);
	CHECK(!sio_pmtu_done(&p));
	/* The largest answered ends the search at once. */
	CHECK_EQ(sio_pmtu_ack(&p, 1, pr[2].id, 1452), 1);
	CHECK(sio_pmtu_done(&p));
	CHECK_EQ(sio_pmtu_size(&p), 1452);
	/* A duplicate ack changes nothing. */
	CHECK_EQ(sio_pmtu_ack(&p, 2, pr[2].id, 1452), 0);
	CHECK_EQ(sio_pmtu_size(&p), 1452);
}

static void test_trivial(void)
{
	sio_pmtu p;
	/* Max at or below base: settled at once on max. */
	mk(&p, 1000);
	sio_pmtu_start(&p, 0);
	CHECK(sio_pmtu_done(&p));
	CHECK_EQ(sio_pmtu_size(&p), 1000);
	CHECK_EQ(sio_pmtu_deadline(&p), UINT64_MAX);
	/* Disabled (stream transports): fixed size, no probe ever. */
	mk(&p, 65535);
	sio_pmtu_fixed(&p, 65535);
	CHECK(sio_pmtu_done(&p));
	CHECK_EQ(sio_pmtu_size(&p), 65535);
	CHECK_EQ(sio_pmtu_deadline(&p), UINT64_MAX);
	sio_pmtu_probe pr[4];
	CHECK_EQ(sio_pmtu_poll(&p, 1ull << 62, pr, 4), 0);
}

int main(void)
{
	test_loopback();
	test_lower_mtu(1452, 1400, 1 * MS);
	test_lower_mtu(1452, 1300, 40 * MS);
	test_lower_mtu(1452, 1201, 100 * US);
	test_lower_mtu(65535, 9000, 200 * US);
	test_lower_mtu(65535, 1500, 10 * MS);
	test_lower_mtu(9000, 8999, 1 * MS);
	test_no_answers();
	test_random_loss();
	test_late_peer();
	test_path_change();
	test_acks_checked();
	test_trivial();
	return check_done("test_pmtu");
}
