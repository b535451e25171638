/* RFC 6479 anti-replay window. */
#include <string.h>

#include "replay.h"

size_t sio_replay_words(int32_t window)
{
	if (window <= 1)
		return 0;
	/* One block more than the window so that the block holding TOP never
	 * overlaps the oldest block still inside the window. */
	uint32_t need = ((uint32_t)window + 63) / 64 + 1, n = 1;
	while (n < need)
		n <<= 1;
	return n;
}

void sio_replay_init(sio_replay *r, int32_t window, uint64_t *bits)
{
	r->window = window;
	r->nblocks = (uint32_t)sio_replay_words(window);
	r->bits = bits;
	sio_replay_reset(r);
}

void sio_replay_reset(sio_replay *r)
{
	r->top = 0;
	r->any = 0;
	if (r->nblocks && r->bits)
		memset(r->bits, 0, r->nblocks * sizeof(uint64_t));
}

int sio_replay_check(const sio_replay *r, uint64_t pn)
{
	if (r->window < 0 || !r->any)
		return SIO_REPLAY_OK;
	if (pn > r->top)
		return SIO_REPLAY_OK;
	if (r->window == 1)
		return pn == r->top ? SIO_REPLAY_DUP : SIO_REPLAY_OLD;
	if (r->top - pn >= (uint64_t)r->window)
		return SIO_REPLAY_OLD;
	uint64_t block = (pn >> 6) & (r->nblocks - 1);
	return (r->bits[block] >> (pn & 63)) & 1 ? SIO_REPLAY_DUP : SIO_REPLAY_OK;
}

int sio_replay_newest(const sio_replay *r, uint64_t pn)
{
	return !r->any || pn > r->top;
}

void sio_replay_update(sio_replay *r, uint64_t pn)
{
	if (r->window < 0) {
		if (sio_replay_newest(r, pn))
			r->top = pn; /* kept for sio_replay_newest() only */
		r->any = 1;
		return;
	}
	if (r->window == 1) {
		r->top = pn;
		r->any = 1;
		return;
	}
	if (!r->any) {
		/* First packet: everything below it is outside history. */
		r->any = 1;
		r->top = pn;
		memset(r->bits, 0, r->nblocks * sizeof(uint64_t));
	} else if (pn > r->top) {
		uint64_t cur = r->top >> 6, idx = pn >> 6, diff = idx - cur;
		if (diff > r->nblocks)
			diff = r->nblocks;
		for (uint64_t i = 1; i <= diff; i++)
			r->bits[(cur + i) & (r->nblocks - 1)] = 0;
		r->top = pn;
	}
	r->bits[(pn >> 6) & (r->nblocks - 1)] |= (uint64_t)1 << (pn & 63);
}
