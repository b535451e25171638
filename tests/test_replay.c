/* Replay window: edges around the window size, block wrap, huge jumps,
 * strictly-increasing mode (window 1), disabled (negative), and an exact
 * comparison with a naive model over random reordered sequences. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "lib/sim.h"
#include "replay.h"

static int take(sio_replay *r, uint64_t pn)
{
	int v = sio_replay_check(r, pn);
	if (v == SIO_REPLAY_OK)
		sio_replay_update(r, pn);
	return v;
}

static void test_window(int32_t w)
{
	sio_replay r;
	uint64_t *bits = calloc(sio_replay_words(w) + 1, 8);
	sio_replay_init(&r, w, bits);
	CHECK_EQ(take(&r, 0), SIO_REPLAY_OK);
	CHECK_EQ(take(&r, 0), SIO_REPLAY_DUP);
	CHECK_EQ(take(&r, 1000000), SIO_REPLAY_OK);
	/* exactly at the edge: top - (w-1) is inside, top - w is outside */
	CHECK_EQ(sio_replay_check(&r, 1000000 - (uint64_t)w + 1), SIO_REPLAY_OK);
	CHECK_EQ(sio_replay_check(&r, 1000000 - (uint64_t)w), SIO_REPLAY_OLD);
	CHECK_EQ(take(&r, 1000000 - (uint64_t)w + 1), SIO_REPLAY_OK);
	CHECK_EQ(take(&r, 1000000 - (uint64_t)w + 1), SIO_REPLAY_DUP);
	if (w > 2)
		CHECK_EQ(take(&r, 999999), SIO_REPLAY_OK);
	CHECK_EQ(take(&r, 999999), SIO_REPLAY_DUP);
	CHECK_EQ(take(&r, 1000000), SIO_REPLAY_DUP);
	/* a jump of exactly the window size: the old top falls out */
	CHECK_EQ(take(&r, 1000000 + (uint64_t)w), SIO_REPLAY_OK);
	CHECK_EQ(sio_replay_check(&r, 1000000), SIO_REPLAY_OLD);
	CHECK_EQ(sio_replay_check(&r, 1000001), SIO_REPLAY_OK);
	/* huge jump: nothing of the old window survives, no stale bits */
	CHECK_EQ(take(&r, (uint64_t)1 << 40), SIO_REPLAY_OK);
	for (uint64_t i = 1; i < (uint64_t)w && i < 5000; i++)
		CHECK_EQ(sio_replay_check(&r, ((uint64_t)1 << 40) - i), SIO_REPLAY_OK);
	CHECK_EQ(sio_replay_check(&r, ((uint64_t)1 << 40) - (uint64_t)w), SIO_REPLAY_OLD);
	/* near the top of the 64-bit space */
	CHECK_EQ(take(&r, UINT64_MAX - 1), SIO_REPLAY_OK);
	CHECK_EQ(take(&r, UINT64_MAX), SIO_REPLAY_OK);
	CHECK_EQ(take(&r, UINT64_MAX), SIO_REPLAY_DUP);
	CHECK_EQ(take(&r, UINT64_MAX - 1), SIO_REPLAY_DUP);
	CHECK_EQ(take(&r, UINT64_MAX - 2), w > 2 ? SIO_REPLAY_OK : SIO_REPLAY_OLD);
	/* reset forgets */
	sio_replay_reset(&r);
	CHECK_EQ(take(&r, 5), SIO_REPLAY_OK);
	CHECK_EQ(take(&r, 5), SIO_REPLAY_DUP);
	CHECK_EQ(take(&r, 4), SIO_REPLAY_OK);
	free(bits);
}

/* Random walks compared with a model that remembers everything. */
static void test_model(int32_t w, uint64_t seed)
{
	sio_replay r;
	uint64_t *bits = calloc(sio_replay_words(w) + 1, 8);
	sio_replay_init(&r, w, bits);
	enum { N = 20000 };
	uint8_t *seen = calloc(N * 4, 1);
	uint64_t top = 0, rng = seed;
	int any = 0;
	for (int i = 0; i < N; i++) {
		uint64_t x = sim_rand(&rng);
		uint64_t pn;
		if (!any || x % 4 == 0)
			pn = top + x % 300; /* forward, sometimes by more than a block */
		else
			pn = top - (x >> 8) % ((uint64_t)w + 200 < top + 1 ? (uint64_t)w + 200 : top + 1);
		if (pn >= N * 4)
			continue;
		int want = SIO_REPLAY_OK;
		if (any && pn <= top) {
			if (w == 1)
				want = pn == top ? SIO_REPLAY_DUP : SIO_REPLAY_OLD;
			else if (top - pn >= (uint64_t)w)
				want = SIO_REPLAY_OLD;
			else if (seen[pn])
				want = SIO_REPLAY_DUP;
		}
		int got = take(&r, pn);
		if (got != want) {
			CHECK_EQ(got, want);
			break;
		}
		check_passed++;
		if (got == SIO_REPLAY_OK) {
			seen[pn] = 1;
			if (!any || pn > top)
				top = pn;
			any = 1;
		}
	}
	free(seen);
	free(bits);
}

int main(void)
{
	int32_t sizes[] = {2, 63, 64, 65, 127, 128, 1024, 4096, 5000};
	for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
		test_window(sizes[i]);
		test_model(sizes[i], i + 1);
	}
	test_model(1, 99);

	/* window 1: strictly increasing only */
	sio_replay r;
	sio_replay_init(&r, 1, NULL);
	CHECK_EQ(sio_replay_words(1), 0);
	CHECK_EQ(take(&r, 3), SIO_REPLAY_OK);
	CHECK_EQ(take(&r, 3), SIO_REPLAY_DUP);
	CHECK_EQ(take(&r, 2), SIO_REPLAY_OLD);
	CHECK_EQ(take(&r, 10), SIO_REPLAY_OK);
	CHECK_EQ(take(&r, 9), SIO_REPLAY_OLD);

	/* negative: off, everything passes (the Go option's special value) */
	sio_replay_init(&r, -1, NULL);
	CHECK_EQ(sio_replay_newest(&r, 3), 1);
	CHECK_EQ(take(&r, 3), SIO_REPLAY_OK);
	CHECK_EQ(sio_replay_newest(&r, 3), 0); /* ... but not surely fresh */
	CHECK_EQ(take(&r, 3), SIO_REPLAY_OK);
	CHECK_EQ(sio_replay_newest(&r, 0), 0);
	CHECK_EQ(take(&r, 0), SIO_REPLAY_OK);
	CHECK_EQ(sio_replay_newest(&r, 4), 1);

	/* bitmap sizes: power of two words, at least one word beyond the window */
	CHECK_EQ(sio_replay_words(4096), 128);
	CHECK_EQ(sio_replay_words(64), 2);
	CHECK_EQ(sio_replay_words(65), 4);
	return check_done("test_replay");
}
