/* Varints (src/core/wire.h) and fragmentation and reassembly (src/core/frag.c): the
 * varint decoder's refusals, wire format, sender cutting,
 * in-order / out-of-order / duplicated / overlapping fragments, conflicting
 * bytes, timeouts, and the memory bound under hostile announcements. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "frag.h"
#include "options.h"
#include "secureio.h"
#include "wire.h"

/* ---- helpers ---- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd32(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 16);
}

typedef struct got {
	int n;
	uint32_t type;
	uint8_t *data;
	size_t len;
} got;

static void on_msg(void *ctx, uint32_t type, const uint8_t *data, size_t len)
{
	got *g = ctx;
	g->n++;
	g->type = type;
	free(g->data);
	g->data = malloc(len ? len : 1);
	memcpy(g->data, data, len);
	g->len = len;
}

static void got_reset(got *g)
{
	free(g->data);
	memset(g, 0, sizeof *g);
}

typedef struct frame {
	sio_frag_hdr h;
	uint8_t wire[SIO_FRAG_HDR_MAX + 4096];
	size_t wlen;
} frame;

/* Cuts MSG into frames for packets of ROOM bytes each (the first packet has
 * FIRST bytes left), through the sender helper. Returns the frame count. */
static size_t cut(const uint8_t *msg, uint32_t len, uint32_t type, uint32_t id, size_t first,
                  size_t room, frame *out, size_t max)
{
	sio_frag_tx t;
	size_t n = 0, avail = first;
	sio_frag_tx_begin(&t, type, id, len);
	while (!sio_frag_tx_done(&t) && n < max) {
		int last;
		sio_frag_hdr h;
		uint32_t pl = sio_frag_tx_plan(&t, avail, &h, &last);
		if (!pl) {
			avail = room; /* new packet */
			continue;
		}
		frame *f = &out[n++];
		f->h = h;
		f->wlen = sio_frag_hdr_put(f->wire, &h, last);
		CHECK_EQ(f->wlen, sio_frag_hdr_len(&h, last));
		memcpy(f->wire + f->wlen, msg + h.off, pl);
		f->wlen += pl;
		CHECK(f->wlen <= avail);
		sio_frag_tx_advance(&t, pl);
		avail = last ? room : avail - f->wlen;
		if (last)
			avail = room;
	}
	return n;
}

/* Parses a frame as the receiver would and offers it. */
static int offer(sio_frag_rx *r, uint64_t now, const frame *f, got *g)
{
	sio_frag_hdr h;
	int last = (f->wire[0] & SIO_FRAG_LAST) != 0;
	CHECK_EQ(f->wire[0] & 0x7f, SIO_FRAG_KIND);
	size_t n = sio_frag_hdr_get(f->wire + 1, f->wire + f->wlen, last, &h);
	CHECK(n > 0);
	if (!n)
		return -100;
	const uint8_t *payload = f->wire + 1 + n;
	if (!last)
		CHECK_EQ(1 + n + h.len, f->wlen);
	return sio_frag_rx_add(r, now, &h, payload, on_msg, g);
}

static void fill(uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)rnd32();
}

static sio_frag_rx *mk(uint32_t max_message, uint32_t budget, uint32_t partials)
{
	sio_frag_cfg cfg = {max_message, budget, partials, 0, 1000};
	sio_frag_rx *r = NULL;
	CHECK_OK(sio_frag_rx_new(&r, &cfg));
	return r;
}

#define MAXF 20000
static frame *fr;

/* ---- tests ---- */

/* The varint decoder takes exactly one encoding per value: the shortest.
 * Overlong forms (82 00 for 2, 80 00 and 80 80 00 for 0), more than 5
 * bytes, and values above 2^32-1 are refused (0), as are truncations. */
static void test_varints(void)
{
	static const struct {
		uint8_t len, b[7];
		size_t want; /* bytes read, 0 = refused */
		uint32_t val;
	} cases[] = {
	    {1, {0x00}, 1, 0},
	    {1, {0x7f}, 1, 127},
	    {2, {0x80, 0x01}, 2, 128},
	    {2, {0x82, 0x01}, 2, 130},
	    {5, {0xff, 0xff, 0xff, 0xff, 0x0f}, 5, UINT32_MAX},
	    {5, {0x80, 0x80, 0x80, 0x80, 0x01}, 5, 1u << 28},
	    {2, {0x82, 0x00}, 0, 0},                         /* 2, overlong */
	    {2, {0x80, 0x00}, 0, 0},                         /* 0, overlong */
	    {3, {0x80, 0x80, 0x00}, 0, 0},                   /* 0, overlong */
	    {3, {0xff, 0x80, 0x00}, 0, 0},                   /* 127, overlong */
	    {5, {0xff, 0xff, 0xff, 0xff, 0x00}, 0, 0},       /* 2^28-1, overlong */
	    {5, {0xff, 0xff, 0xff, 0xff, 0x1f}, 0, 0},       /* 2^33-1 */
	    {5, {0x80, 0x80, 0x80, 0x80, 0x10}, 0, 0},       /* 2^32 */
	    {6, {0x81, 0x80, 0x80, 0x80, 0x80, 0x00}, 0, 0}, /* six bytes */
	    {6, {0xff, 0xff, 0xff, 0xff, 0x8f, 0x00}, 0, 0}, /* six bytes */
	    {1, {0x80}, 0, 0},                               /* truncated */
	    {4, {0xff, 0xff, 0xff, 0xff}, 0, 0},             /* truncated */
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		uint32_t v = 0xdeadbeef;
		size_t n = sio_varint_get32(cases[i].b, cases[i].b + cases[i].len, &v);
		CHECK_EQ(n, cases[i].want);
		if (n)
			CHECK_EQ(v, cases[i].val);
	}
	/* Whatever the encoder writes, the decoder reads back whole. */
	for (int i = 0; i < 100000; i++) {
		uint32_t x =
		    i < 64 ? (i < 32 ? (1u << i) - 1 : 1u << (i - 32)) : rnd32() >> (rnd32() % 32);
		uint8_t b[8];
		uint32_t y = 0;
		size_t n = sio_varint_put(b, x);
		CHECK(n == sio_varint_len(x) && n >= 1 && n <= 5);
		CHECK(sio_varint_get32(b, b + n, &y) == n && y == x);
		if (n < 5) { /* the same value one byte longer is refused */
			b[n - 1] |= 0x80;
			b[n] = 0;
			CHECK_EQ(sio_varint_get32(b, b + n + 1, &y), 0);
		}
	}
}

static void test_wire(void)
{
	uint8_t b[64];
	sio_frag_hdr h = {SIO_TYPE_READWRITE, 300, 70000, 1400, 1300}, g;
	size_t n = sio_frag_hdr_put(b, &h, 0);
	/* kind, type 0 (1), id 300 (2), total 70000 (3), off 1400 (2), len 1300 (2) */
	CHECK_EQ(n, 11);
	CHECK_EQ(b[0], 0x07);
	CHECK_EQ(b[1], 0x00);
	CHECK_EQ(b[2], 0xac);
	CHECK_EQ(b[3], 0x02);
	memset(b + n, 0xaa, 1300 > 64 - n ? 0 : 1300);
	/* The length points past the end: malformed. */
	CHECK_EQ(sio_frag_hdr_get(b + 1, b + n, 0, &g), 0);

	sio_frag_hdr s = {5, 1, 20, 4, 6};
	n = sio_frag_hdr_put(b, &s, 0);
	CHECK_EQ(n, 6);
	CHECK_EQ(b[1], 6); /* channel 5 -> code 6 */
	memset(b + n, 0x55, 6);
	CHECK_EQ(sio_frag_hdr_get(b + 1, b + n + 6, 0, &g), 5);
	CHECK(g.type == 5 && g.id == 1 && g.total == 20 && g.off == 4 && g.len == 6);
	/* LAST form: no length, the payload runs to the end. */
	n = sio_frag_hdr_put(b, &s, 1);
	CHECK_EQ(n, 5);
	CHECK_EQ(b[0], 0x87);
	CHECK_EQ(sio_frag_hdr_get(b + 1, b + n + 6, 1, &g), 4);
	CHECK_EQ(g.len, 6);
	/* Every truncation of the header is refused. */
	for (size_t k = 1; k < 5; k++)
		CHECK_EQ(sio_frag_hdr_get(b + 1, b + k, 1, &g), 0);
	/* LAST with nothing after the header: zero-length payload. */
	CHECK_EQ(sio_frag_hdr_get(b + 1, b + 5, 1, &g), 0);
	/* off + len > total */
	sio_frag_hdr bad = {5, 1, 20, 15, 6};
	n = sio_frag_hdr_put(b, &bad, 0);
	CHECK_EQ(sio_frag_hdr_get(b + 1, b + n + 6, 0, &g), 0);
	/* off > total with LAST */
	bad.off = 30;
	n = sio_frag_hdr_put(b, &bad, 1);
	CHECK_EQ(sio_frag_hdr_get(b + 1, b + n + 6, 1, &g), 0);
	/* total 0 */
	uint8_t z[] = {0x00, 0x01, 0x00, 0x00, 0x01, 0xaa};
	CHECK_EQ(sio_frag_hdr_get(z, z + sizeof z, 0, &g), 0);
	/* type code above 2^31 */
	uint8_t t[] = {0x81, 0x80, 0x80, 0x80, 0x08, 0x01, 0x02, 0x00, 0x01, 0xaa};
	CHECK_EQ(sio_frag_hdr_get(t, t + sizeof t, 0, &g), 0);
	t[4] = 0x08;
	t[0] = 0x80; /* exactly 2^31 = channel 0x7fffffff */
	CHECK_EQ(sio_frag_hdr_get(t, t + sizeof t, 0, &g), 9);
	CHECK_EQ(g.type, SIO_CHANNEL_MAX);
	/* Varint longer than 5 bytes / above 32 bits. */
	uint8_t v[] = {0x00, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x01, 0x00, 0x01, 0xaa};
	CHECK_EQ(sio_frag_hdr_get(v, v + sizeof v, 0, &g), 0);
	/* An overlong varint in any field (type, id, total, off, len) is
	 * malformed, though it would decode to a valid header. */
	uint8_t ok[] = {0x06, 0x01, 0x14, 0x04, 0x02, 0xaa, 0xbb};
	CHECK_EQ(sio_frag_hdr_get(ok, ok + sizeof ok, 0, &g), 5);
	for (size_t field = 0; field < 5; field++) {
		uint8_t o[8];
		size_t k = 0;
		for (size_t j = 0; j < 5; j++) {
			if (j == field) {
				o[k++] = (uint8_t)(ok[j] | 0x80);
				o[k++] = 0x00;
			} else {
				o[k++] = ok[j];
			}
		}
		o[k++] = 0xaa;
		o[k++] = 0xbb;
		CHECK_EQ(sio_frag_hdr_get(o, o + k, 0, &g), 0);
	}
}

static void test_sender(void)
{
	static uint8_t msg[10000];
	fill(msg, sizeof msg);
	/* Every frame fits its room; all but the final one fill their packet. */
	size_t n = cut(msg, sizeof msg, 7, 1, 100, 1400, fr, MAXF);
	CHECK(n >= 8 && n <= 9);
	uint32_t off = 0;
	for (size_t i = 0; i < n; i++) {
		CHECK_EQ(fr[i].h.off, off);
		off += fr[i].h.len;
		if (i == 0)
			CHECK_EQ(fr[i].wlen, 100);
		else if (i + 1 < n)
			CHECK_EQ(fr[i].wlen, 1400);
	}
	CHECK_EQ(off, sizeof msg);
	/* Room too small for a useful fragment: the sender asks for a new packet. */
	sio_frag_tx t;
	sio_frag_hdr h;
	int last;
	sio_frag_tx_begin(&t, 7, 1, 10000);
	CHECK_EQ(sio_frag_tx_plan(&t, 20, &h, &last), 0);
	/* The final piece with a length when it fits, so frames can follow. */
	sio_frag_tx_begin(&t, 7, 1, 100);
	CHECK_EQ(sio_frag_tx_plan(&t, 200, &h, &last), 100);
	CHECK_EQ(last, 0);
	/* Zero-length message: nothing to cut (zero-length messages always fit a packet). */
	sio_frag_tx_begin(&t, 7, 1, 0);
	CHECK(sio_frag_tx_done(&t));
	CHECK_EQ(sio_frag_tx_plan(&t, 200, &h, &last), 0);
}

static void test_in_order_and_shuffled(void)
{
	got g = {0};
	sio_frag_rx *r = mk(1 << 20, 1 << 20, 8);
	static uint8_t msg[50000];
	fill(msg, sizeof msg);
	size_t n = cut(msg, sizeof msg, SIO_TYPE_READWRITE, 1, 1400, 1400, fr, MAXF);
	for (size_t i = 0; i < n; i++)
		CHECK_EQ(offer(r, 1, &fr[i], &g), i + 1 == n ? 1 : 0);
	CHECK_EQ(g.n, 1);
	CHECK_EQ(g.type, SIO_TYPE_READWRITE);
	CHECK(g.len == sizeof msg && memcmp(g.data, msg, sizeof msg) == 0);
	CHECK_EQ(sio_frag_rx_partials(r), 0);

	/* Shuffled, several messages interleaved. */
	for (int round = 0; round < 20; round++) {
		got_reset(&g);
		uint32_t len = 1 + rnd32() % 40000;
		fill(msg, len);
		size_t m = cut(msg, len, (uint32_t)round, (uint32_t)(2 + round), 1 + rnd32() % 1400,
		               600 + rnd32() % 1000, fr, MAXF);
		for (size_t i = m; i > 1; i--) {
			size_t j = rnd32() % i;
			frame tmp = fr[i - 1];
			fr[i - 1] = fr[j];
			fr[j] = tmp;
		}
		int done = 0;
		for (size_t i = 0; i < m; i++)
			done += offer(r, 2, &fr[i], &g) == 1;
		CHECK_EQ(done, 1);
		CHECK_EQ(g.n, 1);
		CHECK_EQ(g.type, (uint32_t)round);
		CHECK(g.len == len && memcmp(g.data, msg, len) == 0);
	}
	sio_frag_stats st;
	sio_frag_rx_stats(r, &st);
	CHECK_EQ(st.delivered, 21);
	CHECK_EQ(st.dropped, 0);
	CHECK(st.bytes <= (1 << 20));
	sio_frag_rx_free(r);
	got_reset(&g);
}

static void test_duplicates_and_overlaps(void)
{
	got g = {0};
	sio_frag_rx *r = mk(1 << 20, 1 << 20, 8);
	static uint8_t msg[20000];
	fill(msg, sizeof msg);
	/* Every fragment twice (before completion): one delivery, dups counted. */
	size_t n = cut(msg, sizeof msg, 3, 10, 1400, 1400, fr, MAXF);
	for (size_t i = 0; i + 1 < n; i++) {
		CHECK_EQ(offer(r, 1, &fr[i], &g), 0);
		CHECK_EQ(offer(r, 1, &fr[i], &g), 0);
	}
	CHECK_EQ(offer(r, 1, &fr[n - 1], &g), 1);
	/* After completion: replays of any fragment are stale, never a second delivery. */
	for (size_t i = 0; i < n; i++)
		CHECK_EQ(offer(r, 1, &fr[i], &g), SIO_ELOST);
	CHECK_EQ(g.n, 1);
	CHECK(g.len == sizeof msg && memcmp(g.data, msg, sizeof msg) == 0);
	sio_frag_stats st;
	sio_frag_rx_stats(r, &st);
	CHECK_EQ(st.dup_fragments, n - 1);
	CHECK_EQ(st.stale, n);

	/* Two different cuttings of the same bytes overlap everywhere, consistently. */
	got_reset(&g);
	static frame fb[64];
	size_t na = cut(msg, sizeof msg, 3, 11, 1400, 1400, fr, MAXF);
	size_t nb = cut(msg, sizeof msg, 3, 11, 333, 999, fb, 64);
	size_t ia = 0, ib = 0;
	int done = 0;
	while (ia < na || ib < nb) {
		if (ia < na && (ib >= nb || rnd32() % 2))
			done += offer(r, 2, &fr[ia++], &g) == 1;
		else
			done += offer(r, 2, &fb[ib++], &g) == 1;
		if (done)
			break;
	}
	CHECK_EQ(done, 1);
	CHECK(g.len == sizeof msg && memcmp(g.data, msg, sizeof msg) == 0);

	/* Overlap with conflicting bytes: the partial is discarded, nothing wrong
	 * is ever delivered, later fragments of that id are dropped. */
	got_reset(&g);
	n = cut(msg, sizeof msg, 3, 12, 1400, 1400, fr, MAXF);
	CHECK_EQ(offer(r, 3, &fr[0], &g), 0);
	CHECK_EQ(offer(r, 3, &fr[1], &g), 0);
	frame evil = fr[1];
	evil.wire[evil.wlen - 1] ^= 1; /* last payload byte differs */
	CHECK_EQ(offer(r, 3, &evil, &g), SIO_EPROTO);
	CHECK_EQ(sio_frag_rx_partials(r), 0);
	for (size_t i = 2; i < n; i++)
		CHECK(offer(r, 3, &fr[i], &g) < 0);
	CHECK_EQ(g.n, 0);
	/* A partial overlap (other cutting) with one differing byte is caught too. */
	n = cut(msg, sizeof msg, 3, 13, 1400, 1400, fr, MAXF);
	nb = cut(msg, sizeof msg, 3, 13, 700, 1400, fb, 64);
	CHECK_EQ(offer(r, 4, &fr[0], &g), 0);
	fb[0].wire[fb[0].wlen - 1] ^= 0x80;
	/* fb[0] covers [0, ~690) inside fr[0] [0, ~1390): one byte differs. */
	CHECK_EQ(offer(r, 4, &fb[0], &g), SIO_EPROTO);
	sio_frag_rx_stats(r, &st);
	CHECK_EQ(st.conflicts, 2);
	CHECK_EQ(g.n, 0);

	/* Same id, different total or type: conflict. */
	n = cut(msg, sizeof msg, 3, 14, 1400, 1400, fr, MAXF);
	nb = cut(msg, sizeof msg - 1, 3, 14, 1400, 1400, fb, 64);
	CHECK_EQ(offer(r, 5, &fr[0], &g), 0);
	CHECK_EQ(offer(r, 5, &fb[1], &g), SIO_EPROTO);
	n = cut(msg, sizeof msg, 3, 15, 1400, 1400, fr, MAXF);
	nb = cut(msg, sizeof msg, 4, 15, 1400, 1400, fb, 64);
	CHECK_EQ(offer(r, 5, &fr[0], &g), 0);
	CHECK_EQ(offer(r, 5, &fb[1], &g), SIO_EPROTO);
	CHECK_EQ(g.n, 0);
	CHECK_EQ(sio_frag_rx_partials(r), 0);
	sio_frag_rx_free(r);
	got_reset(&g);
}

static void test_timeouts(void)
{
	got g = {0};
	sio_frag_cfg cfg = {1 << 20, 1 << 20, 8, 0, 1000000000ull};
	sio_frag_rx *r = NULL;
	CHECK_OK(sio_frag_rx_new(&r, &cfg));
	static uint8_t msg[5000];
	fill(msg, sizeof msg);
	size_t n = cut(msg, sizeof msg, 1, 1, 1400, 1400, fr, MAXF);
	CHECK(n >= 4);
	CHECK_EQ(sio_frag_rx_deadline(r), UINT64_MAX);
	CHECK_EQ(offer(r, 100, &fr[0], &g), 0);
	CHECK_EQ(offer(r, 200, &fr[2], &g), 0); /* fr[1] lost */
	CHECK_EQ(sio_frag_rx_deadline(r), 200 + 1000000000ull);
	CHECK_EQ(sio_frag_rx_tick(r, 1000000000ull), 0);
	CHECK_EQ(sio_frag_rx_partials(r), 1);
	CHECK_EQ(sio_frag_rx_tick(r, 200 + 1000000000ull), 1);
	CHECK_EQ(sio_frag_rx_partials(r), 0);
	CHECK_EQ(sio_frag_rx_deadline(r), UINT64_MAX);
	sio_frag_stats st;
	sio_frag_rx_stats(r, &st);
	CHECK_EQ(st.timeouts, 1);
	CHECK_EQ(st.dropped, 2);
	/* The late fragment of the timed-out message never completes it. */
	CHECK_EQ(offer(r, 2000000000ull, &fr[1], &g), SIO_ELOST);
	for (size_t i = 3; i < n; i++)
		CHECK(offer(r, 2000000000ull, &fr[i], &g) < 0);
	CHECK_EQ(g.n, 0);
	CHECK_EQ(sio_frag_rx_partials(r), 0);
	sio_frag_rx_free(r);
	got_reset(&g);
}

/* MaxChainIDDiff: a partial message whose id falls a window behind the
 * newest id is abandoned and counted; its late fragments never complete it,
 * while a partial within the window still completes. */
static void test_id_window(void)
{
	got g = {0};
	sio_frag_cfg cfg = {1 << 20, 1 << 20, 8, 64, 1000000000ull};
	sio_frag_rx *r = NULL;
	CHECK_OK(sio_frag_rx_new(&r, &cfg));
	static uint8_t msg[3000];
	static frame a[8], b[8], c[8];
	fill(msg, sizeof msg);
	size_t na = cut(msg, sizeof msg, 1, 10, 1400, 1400, a, 8);
	size_t nb = cut(msg, sizeof msg, 1, 50, 1400, 1400, b, 8);
	size_t nc = cut(msg, sizeof msg, 1, 10 + 64, 1400, 1400, c, 8);
	CHECK(na >= 2 && nb >= 2 && nc >= 2);
	CHECK_EQ(offer(r, 1, &a[0], &g), 0);
	CHECK_EQ(offer(r, 1, &b[0], &g), 0);
	CHECK_EQ(sio_frag_rx_partials(r), 2);
	/* id 74 is 64 ahead of id 10: 10 falls out of the window, 50 does not */
	CHECK_EQ(offer(r, 1, &c[0], &g), 0);
	CHECK_EQ(sio_frag_rx_partials(r), 2);
	sio_frag_stats st;
	sio_frag_rx_stats(r, &st);
	CHECK_EQ(st.evicted, 1);
	for (size_t i = 1; i < na; i++)
		CHECK(offer(r, 1, &a[i], &g) < 0);
	for (size_t i = 1; i < nb; i++)
		offer(r, 1, &b[i], &g);
	CHECK_EQ(g.n, 1);
	sio_frag_rx_free(r);
	got_reset(&g);
}

/* The session option reaches the reassembler resolved. */
static void test_id_window_option(void)
{
	sio_options in, out;
	sio_options_default(&out);
	CHECK_EQ(out.max_chain_id_diff, 1024);
	memset(&in, 0, sizeof in);
	in.max_chain_id_diff = 100;
	CHECK_OK(sio_options_resolve(&in, 1, &out));
	CHECK_EQ(out.max_chain_id_diff, 128);
	in.max_chain_id_diff = UINT32_MAX;
	CHECK_OK(sio_options_resolve(&in, 1, &out));
	CHECK_EQ(out.max_chain_id_diff, 1u << 20);
}

static void test_memory_bound(void)
{
	got g = {0};
	const uint32_t budget = 1 << 20;
	sio_frag_rx *r = mk(budget, budget, 16);
	sio_frag_stats st;
	uint8_t pay[64];
	fill(pay, sizeof pay);

	/* Announcing a message above max_message allocates nothing. */
	sio_frag_hdr h = {1, 1, budget + 1, 0, 64};
	CHECK_EQ(sio_frag_rx_add(r, 1, &h, pay, on_msg, &g), SIO_ETOOBIG);
	h.total = UINT32_MAX;
	CHECK_EQ(sio_frag_rx_add(r, 1, &h, pay, on_msg, &g), SIO_ETOOBIG);
	sio_frag_rx_stats(r, &st);
	CHECK_EQ(st.too_big, 2);
	CHECK_EQ(st.bytes, 0);
	CHECK_EQ(sio_frag_rx_partials(r), 0);

	/* Endless partial messages announcing the largest size: never more than
	 * the budget nor the partial count; older ones are evicted. */
	uint64_t peak = 0;
	for (uint32_t id = 2; id < 2000; id++) {
		h.id = id;
		h.total = (id % 3) ? budget : 100000 + id;
		h.off = 0;
		CHECK(sio_frag_rx_add(r, id, &h, pay, on_msg, &g) == 0);
		sio_frag_rx_stats(r, &st);
		CHECK(st.bytes <= budget);
		CHECK(sio_frag_rx_partials(r) <= 16);
		if (st.bytes > peak)
			peak = st.bytes;
	}
	sio_frag_rx_stats(r, &st);
	CHECK(st.peak_bytes <= budget);
	CHECK(st.evicted >= 1990);
	CHECK_EQ(g.n, 0);

	/* An older id than every partial held, when full: refused, not evicting. */
	sio_frag_rx_free(r);
	r = mk(1 << 16, 1 << 16, 4);
	for (uint32_t id = 100; id < 104; id++) {
		sio_frag_hdr s = {1, id, 100, 0, 10};
		CHECK_EQ(sio_frag_rx_add(r, 1, &s, pay, on_msg, &g), 0);
	}
	sio_frag_hdr old = {1, 50, 100, 0, 10};
	CHECK_EQ(sio_frag_rx_add(r, 1, &old, pay, on_msg, &g), SIO_EAGAIN);
	sio_frag_rx_stats(r, &st);
	CHECK_EQ(st.refused, 1);
	CHECK_EQ(sio_frag_rx_partials(r), 4);
	/* A newer one evicts the oldest (id 100). */
	sio_frag_hdr nw = {1, 104, 100, 0, 10};
	CHECK_EQ(sio_frag_rx_add(r, 1, &nw, pay, on_msg, &g), 0);
	sio_frag_hdr o100 = {1, 100, 100, 10, 10};
	CHECK_EQ(sio_frag_rx_add(r, 1, &o100, pay, on_msg, &g), SIO_ELOST);
	/* A budget-sized message evicts the rest and still completes intact. */
	static uint8_t big[1 << 16];
	fill(big, sizeof big);
	size_t n = cut(big, sizeof big, 9, 200, 1400, 1400, fr, MAXF);
	int done = 0;
	for (size_t i = 0; i < n; i++)
		done += offer(r, 2, &fr[i], &g) == 1;
	CHECK_EQ(done, 1);
	CHECK(g.len == sizeof big && memcmp(g.data, big, sizeof big) == 0);
	sio_frag_rx_stats(r, &st);
	CHECK(st.peak_bytes <= (1 << 16));

	/* Ids far behind the newest (outside the id window) are stale. */
	sio_frag_hdr far = {1, 200 - 5000, 100, 0, 10};
	CHECK_EQ(sio_frag_rx_add(r, 3, &far, pay, on_msg, &g), SIO_ELOST);
	/* A jump ahead beyond the window abandons partials left behind. */
	sio_frag_hdr p1 = {1, 201, 100, 0, 10}, p2 = {1, 201 + 5000, 100, 0, 10};
	CHECK_EQ(sio_frag_rx_add(r, 3, &p1, pay, on_msg, &g), 0);
	CHECK_EQ(sio_frag_rx_add(r, 3, &p2, pay, on_msg, &g), 0);
	CHECK_EQ(sio_frag_rx_partials(r), 1);
	sio_frag_rx_free(r);
	got_reset(&g);
}

static void test_scattered(void)
{
	got g = {0};
	sio_frag_rx *r = mk(1 << 20, 1 << 20, 4);
	uint8_t pay[4] = {1, 2, 3, 4};
	int dropped = 0;
	/* 1-byte fragments at every other offset: ranges are bounded. */
	for (uint32_t i = 0; i < 100; i++) {
		sio_frag_hdr h = {1, 7, 1000, 2 * i, 1};
		if (sio_frag_rx_add(r, 1, &h, pay, on_msg, &g) < 0)
			dropped++;
	}
	CHECK_EQ(dropped, 100 - SIO_FRAG_RANGES);
	sio_frag_stats st;
	sio_frag_rx_stats(r, &st);
	CHECK_EQ(st.scattered, (uint64_t)(100 - SIO_FRAG_RANGES));
	/* Filling the gaps merges ranges; the message then completes. */
	for (uint32_t off = 0; off < 1000; off++) {
		sio_frag_hdr h = {1, 7, 1000, off, 1};
		int rc = sio_frag_rx_add(r, 2, &h, pay, on_msg, &g);
		CHECK(rc >= 0);
	}
	CHECK_EQ(g.n, 1);
	CHECK_EQ(g.len, 1000);
	CHECK_EQ(g.data[0], 1);
	sio_frag_rx_free(r);
	got_reset(&g);
}

static void test_max_size(void)
{
	got g = {0};
	/* The default bound: a 16 MiB message (the default max) reassembles. */
	sio_frag_rx *r = NULL;
	CHECK_OK(sio_frag_rx_new(&r, NULL));
	uint32_t len = 16u << 20;
	uint8_t *msg = malloc(len);
	fill(msg, 4096);
	for (uint32_t i = 4096; i < len; i++)
		msg[i] = (uint8_t)(i * 7 + (i >> 12));
	sio_frag_tx t;
	sio_frag_tx_begin(&t, SIO_CHANNEL_MAX, 0xfffffffeu, len);
	uint8_t wire[65536];
	int done = 0;
	size_t frags = 0;
	while (!sio_frag_tx_done(&t)) {
		sio_frag_hdr h, p;
		int last;
		uint32_t pl = sio_frag_tx_plan(&t, 65000, &h, &last);
		size_t hl = sio_frag_hdr_put(wire, &h, last);
		memcpy(wire + hl, msg + h.off, pl);
		size_t n = sio_frag_hdr_get(wire + 1, wire + hl + pl, last, &p);
		CHECK(n == hl - 1);
		int rc = sio_frag_rx_add(r, 1, &p, wire + 1 + n, on_msg, &g);
		CHECK(rc >= 0);
		done += rc == 1;
		sio_frag_tx_advance(&t, pl);
		frags++;
	}
	CHECK_EQ(done, 1);
	CHECK_EQ(g.type, SIO_CHANNEL_MAX);
	CHECK(g.len == len && memcmp(g.data, msg, len) == 0);
	/* One byte more than the maximum is refused before any allocation. */
	sio_frag_hdr h = {1, 0xffffffffu, len + 1, 0, 10};
	CHECK_EQ(sio_frag_rx_add(r, 1, &h, msg, on_msg, &g), SIO_ETOOBIG);
	/* Message ids wrap around 2^32. */
	sio_frag_hdr w = {1, 1, 20, 0, 20};
	CHECK_EQ(sio_frag_rx_add(r, 1, &w, msg, on_msg, &g), 1);
	free(msg);
	sio_frag_rx_free(r);
	got_reset(&g);
}

int main(void)
{
	fr = calloc(MAXF, sizeof *fr);
	test_varints();
	test_wire();
	test_sender();
	test_in_order_and_shuffled();
	test_duplicates_and_overlaps();
	test_timeouts();
	test_id_window();
	test_id_window_option();
	test_memory_bound();
	test_scattered();
	test_max_size();
	free(fr);
	return check_done("test_frag");
}
