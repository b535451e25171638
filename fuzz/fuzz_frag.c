/* libFuzzer target for the fragment parser and the reassembly (src/core/frag.c).
 * The input is a sequence of records: one control byte (bits 0-5: time
 * step in ms, bit 6: run the timeout tick first, bit 7: the frame has the
 * LAST bit, i.e. runs to the end of the record) and a 1-byte length, then
 * that many bytes of a FRAGMENT frame body (after the kind byte). Small
 * bounds make eviction, refusal, timeouts and the id window reachable.
 * Invariants checked on every step (abort on violation): the memory and
 * partial-message bounds, each delivered message has the announced length,
 * and a message assembled from fragments that all carry bytes derived from
 * their offset (seed corpus) is delivered with exactly those bytes. */
#include <stdlib.h>
#include <string.h>

#include "frag.h"
#include "secureio.h"

#define BUDGET   (64u << 10)
#define PARTIALS 8u

#define IDS 1024

typedef struct ctx {
	uint64_t sum;
	uint32_t cur_id, cur_total;
	/* ids seen with a fragment whose bytes are not the offset pattern */
	uint32_t tainted[IDS], ntainted, seen[IDS], nseen;
} ctx;

static uint8_t pattern(uint32_t off)
{
	return (uint8_t)(off * 7 + 3);
}

static int has(const uint32_t *v, uint32_t n, uint32_t id)
{
	for (uint32_t i = 0; i < n; i++)
		if (v[i] == id)
			return 1;
	return 0;
}

static void deliver(void *c, uint32_t type, const uint8_t *d, size_t len)
{
	ctx *x = c;
	if (type > SIO_TYPE_READWRITE || len == 0 || len != x->cur_total)
		abort();
	for (size_t i = 0; i < len; i++)
		x->sum += d[i];
	/* Built only from patterned fragments: must be exactly the pattern. */
	if (x->ntainted < IDS && x->nseen < IDS && !has(x->tainted, x->ntainted, x->cur_id))
		for (size_t i = 0; i < len; i++)
			if (d[i] != pattern((uint32_t)i))
				abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sio_frag_cfg cfg = {32u << 10, BUDGET, PARTIALS, 64, 50000000ull};
	sio_frag_rx *r;
	static ctx x;
	memset(&x, 0, sizeof x);
	uint64_t now = 1;
	if (sio_frag_rx_new(&r, &cfg) != 0)
		return 0;
	size_t i = 0;
	while (i + 2 <= size) {
		uint8_t ctl = data[i], len = data[i + 1];
		i += 2;
		if (len > size - i)
			len = (uint8_t)(size - i);
		const uint8_t *f = data + i, *end = data + i + len;
		i += len;
		now += (uint64_t)(ctl & 0x3f) * 1000000ull;
		if (ctl & 0x40)
			sio_frag_rx_tick(r, now);
		sio_frag_hdr h;
		size_t n = sio_frag_hdr_get(f, end, (ctl & 0x80) != 0, &h);
		if (!n)
			continue;
		if (f + n + h.len > end || h.len == 0 || h.off + (uint64_t)h.len > h.total)
			abort(); /* the parser promised a payload inside the record */
		/* The encoder must reproduce the header the parser read. */
		uint8_t enc[SIO_FRAG_HDR_MAX];
		size_t el = sio_frag_hdr_put(enc, &h, (ctl & 0x80) != 0);
		if (el != sio_frag_hdr_len(&h, (ctl & 0x80) != 0) || el < 2)
			abort();
		int clean = 1;
		for (uint32_t k = 0; k < h.len; k++)
			if (f[n + k] != pattern(h.off + k))
				clean = 0;
		if (!has(x.seen, x.nseen, h.id) && x.nseen < IDS)
			x.seen[x.nseen++] = h.id;
		if (!clean && !has(x.tainted, x.ntainted, h.id) && x.ntainted < IDS)
			x.tainted[x.ntainted++] = h.id;
		x.cur_id = h.id;
		x.cur_total = h.total;
		sio_frag_rx_add(r, now, &h, f + n, deliver, &x);
		sio_frag_stats st;
		sio_frag_rx_stats(r, &st);
		if (st.bytes > BUDGET || sio_frag_rx_partials(r) > PARTIALS ||
		    st.peak_bytes > BUDGET)
			abort();
		if (sio_frag_rx_deadline(r) != UINT64_MAX && sio_frag_rx_partials(r) == 0)
			abort();
	}
	sio_frag_rx_free(r);
	return 0;
}
