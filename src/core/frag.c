/* Fragmentation and bounded reassembly (see frag.h, docs/PROTOCOL.md §14). */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "frag.h"
#include "secureio.h"
#include "wire.h"

/* ---- wire ------------------------------------------------------------------ */

/* Type code on the wire: 0 = SIO_TYPE_READWRITE, c + 1 = user channel c. */
static uint32_t tcode(uint32_t type)
{
	return type == SIO_TYPE_READWRITE ? 0 : type + 1;
}

static size_t hdr_fixed(const sio_frag_hdr *h)
{
	return 1 + sio_varint_len(tcode(h->type)) + sio_varint_len(h->id) +
	       sio_varint_len(h->total) + sio_varint_len(h->off);
}

size_t sio_frag_hdr_len(const sio_frag_hdr *h, int last)
{
	return hdr_fixed(h) + (last ? 0 : sio_varint_len(h->len));
}

size_t sio_frag_hdr_put(uint8_t *p, const sio_frag_hdr *h, int last)
{
	size_t n = 0;
	p[n++] = (uint8_t)(SIO_FRAG_KIND | (last ? SIO_FRAG_LAST : 0));
	n += sio_varint_put(p + n, tcode(h->type));
	n += sio_varint_put(p + n, h->id);
	n += sio_varint_put(p + n, h->total);
	n += sio_varint_put(p + n, h->off);
	if (!last)
		n += sio_varint_put(p + n, h->len);
	return n;
}

size_t sio_frag_hdr_get(const uint8_t *p, const uint8_t *end, int last, sio_frag_hdr *h)
{
	const uint8_t *q = p;
	uint32_t code;
	size_t n;
	if (!(n = sio_varint_get32(q, end, &code)) || code > 0x80000000u)
		return 0;
	q += n;
	h->type = code == 0 ? SIO_TYPE_READWRITE : code - 1;
	if (!(n = sio_varint_get32(q, end, &h->id)))
		return 0;
	q += n;
	if (!(n = sio_varint_get32(q, end, &h->total)))
		return 0;
	q += n;
	if (!(n = sio_varint_get32(q, end, &h->off)))
		return 0;
	q += n;
	if (last) {
		if ((size_t)(end - q) > UINT32_MAX)
			return 0;
		h->len = (uint32_t)(end - q);
	} else {
		if (!(n = sio_varint_get32(q, end, &h->len)))
			return 0;
		q += n;
		if (h->len > (size_t)(end - q))
			return 0;
	}
	if (h->len == 0 || h->total == 0 || h->off > h->total || h->len > h->total - h->off)
		return 0;
	return (size_t)(q - p);
}

/* ---- sender ---------------------------------------------------------------- */

void sio_frag_tx_begin(sio_frag_tx *t, uint32_t type, uint32_t id, uint32_t total)
{
	t->type = type;
	t->id = id;
	t->total = total;
	t->off = 0;
}

uint32_t sio_frag_tx_plan(const sio_frag_tx *t, size_t room, sio_frag_hdr *h, int *last)
{
	if (t->off >= t->total)
		return 0;
	uint32_t rem = t->total - t->off;
	h->type = t->type;
	h->id = t->id;
	h->total = t->total;
	h->off = t->off;
	size_t fixed = hdr_fixed(h);
	if (fixed + sio_varint_len(rem) + rem <= room) {
		/* The final piece fits with its length: later frames may follow. */
		h->len = rem;
		*last = 0;
		return rem;
	}
	if (fixed + rem <= room) {
		h->len = rem;
		*last = 1;
		return rem;
	}
	if (room < fixed + SIO_FRAG_MIN_PAYLOAD)
		return 0;
	h->len = (uint32_t)(room - fixed);
	*last = 1;
	return h->len;
}

void sio_frag_tx_advance(sio_frag_tx *t, uint32_t len)
{
	t->off += len;
	if (t->off > t->total)
		t->off = t->total;
}

/* ---- receiver -------------------------------------------------------------- */

#define CACHE_SLOTS 4
#define ALLOC_UNIT  4096u

typedef struct partial {
	int used;
	uint32_t type, id, total, have, nfrags;
	uint8_t *buf;
	uint32_t cap;
	uint64_t last;
	uint32_t nr;
	uint32_t ra[SIO_FRAG_RANGES], rb[SIO_FRAG_RANGES]; /* sorted disjoint [ra, rb) */
} partial;

struct sio_frag_rx {
	sio_frag_cfg cfg;
	partial *p;     /* np entries: max_partials while any message is in
			 * progress, NULL (np 0) once sio_frag_rx_trim() found none */
	uint32_t np;
	uint32_t nused;
	uint8_t *cache[CACHE_SLOTS];
	uint32_t cache_cap[CACHE_SLOTS];
	uint32_t ncache;
	int have_newest;
	uint32_t newest;
	uint64_t *done; /* id_window bits: finished or abandoned ids */
	sio_frag_stats st;
};

int sio_frag_rx_new(sio_frag_rx **out, const sio_frag_cfg *cfg)
{
	sio_frag_rx *r;
	*out = NULL;
	r = calloc(1, sizeof *r);
	if (!r)
		return SIO_ENOMEM;
	if (cfg)
		r->cfg = *cfg;
	if (!r->cfg.max_message)
		r->cfg.max_message = 16u << 20;
	if (!r->cfg.budget)
		r->cfg.budget = 4u << 20;
	if (r->cfg.budget < r->cfg.max_message)
		r->cfg.budget = r->cfg.max_message;
	if (!r->cfg.max_partials)
		r->cfg.max_partials = 64;
	if (r->cfg.max_partials > 4096)
		r->cfg.max_partials = 4096;
	if (!r->cfg.id_window)
		r->cfg.id_window = SIO_FRAG_DEFAULT_ID_WINDOW;
	r->cfg.id_window = (r->cfg.id_window + 63) & ~63u;
	if (r->cfg.id_window > (1u << 20))
		r->cfg.id_window = 1u << 20;
	if (!r->cfg.timeout_ns)
		r->cfg.timeout_ns = SIO_FRAG_DEFAULT_TIMEOUT_NS;
	/* the table of partial messages comes with the first fragment */
	r->done = calloc(r->cfg.id_window / 64, sizeof *r->done);
	if (!r->done) {
		sio_frag_rx_free(r);
		return SIO_ENOMEM;
	}
	*out = r;
	return 0;
}

/* Frees a buffer that holds no plaintext any more (release() wiped it). */
static void buf_free(sio_frag_rx *r, uint8_t *b, uint32_t cap)
{
	free(b);
	r->st.bytes -= cap;
}

void sio_frag_rx_free(sio_frag_rx *r)
{
	if (!r)
		return;
	if (r->p)
		for (uint32_t i = 0; i < r->np; i++)
			if (r->p[i].buf) {
				sodium_memzero(r->p[i].buf, r->p[i].total);
				buf_free(r, r->p[i].buf, r->p[i].cap);
			}
	for (uint32_t i = 0; i < r->ncache; i++)
		buf_free(r, r->cache[i], r->cache_cap[i]);
	free(r->p);
	free(r->done);
	free(r);
}

/* ---- id window ---- */

static int id_ahead(const sio_frag_rx *r, uint32_t id)
{
	return !r->have_newest || (int32_t)(id - r->newest) > 0;
}

static int id_too_old(const sio_frag_rx *r, uint32_t id)
{
	return r->have_newest && !id_ahead(r, id) && r->newest - id >= r->cfg.id_window;
}

static int id_done(const sio_frag_rx *r, uint32_t id)
{
	uint32_t b = id % r->cfg.id_window;
	return (int)(r->done[b / 64] >> (b % 64) & 1);
}

static void id_mark(sio_frag_rx *r, uint32_t id)
{
	if (id_ahead(r, id) || id_too_old(r, id))
		return;
	uint32_t b = id % r->cfg.id_window;
	r->done[b / 64] |= 1ull << (b % 64);
}

static void release(sio_frag_rx *r, partial *q)
{
	if (q->buf) {
		/* decrypted message bytes live in [0, total) only: wiped once
		 * here, so cached buffers and freed ones hold no plaintext */
		sodium_memzero(q->buf, q->total);
		if (r->ncache < CACHE_SLOTS) {
			r->cache[r->ncache] = q->buf;
			r->cache_cap[r->ncache++] = q->cap;
		} else {
			buf_free(r, q->buf, q->cap);
		}
	}
	memset(q, 0, sizeof *q);
	r->nused--;
}

/* Discards a partial message: its id is remembered so late fragments of it
 * are dropped at once. */
static void discard(sio_frag_rx *r, partial *q)
{
	r->st.dropped += q->nfrags;
	id_mark(r, q->id);
	release(r, q);
}

static void id_advance(sio_frag_rx *r, uint32_t id)
{
	uint32_t w = r->cfg.id_window;
	if (!r->have_newest) {
		r->have_newest = 1;
		r->newest = id;
		return;
	}
	uint32_t d = id - r->newest;
	if (d >= w) {
		memset(r->done, 0, (w / 64) * sizeof *r->done);
	} else {
		for (uint32_t k = 1; k <= d; k++) {
			uint32_t b = (r->newest + k) % w;
			r->done[b / 64] &= ~(1ull << (b % 64));
		}
	}
	r->newest = id;
	/* Partials now behind the window are abandoned (MaxChainIDDiff). */
	for (uint32_t i = 0; i < r->np; i++) {
		partial *q = &r->p[i];
		if (q->used && r->newest - q->id >= w) {
			r->st.evicted++;
			r->st.dropped += q->nfrags;
			release(r, q);
		}
	}
}

/* The oldest partial whose id is older than ID, or NULL. */
static partial *oldest_before(sio_frag_rx *r, uint32_t id)
{
	partial *best = NULL;
	for (uint32_t i = 0; i < r->np; i++) {
		partial *q = &r->p[i];
		if (!q->used || (int32_t)(q->id - id) >= 0)
			continue;
		if (!best || (int32_t)(q->id - best->id) < 0)
			best = q;
	}
	return best;
}

static uint32_t alloc_size(uint32_t total)
{
	uint64_t s = ((uint64_t)total + ALLOC_UNIT - 1) / ALLOC_UNIT * ALLOC_UNIT;
	return s > UINT32_MAX ? total : (uint32_t)s;
}

/* Takes a cached buffer of at least NEED bytes (the smallest), if any. */
static uint8_t *cache_take(sio_frag_rx *r, uint32_t need, uint32_t *cap)
{
	int best = -1;
	for (uint32_t i = 0; i < r->ncache; i++)
		if (r->cache_cap[i] >= need && (best < 0 || r->cache_cap[i] < r->cache_cap[best]))
			best = (int)i;
	if (best < 0)
		return NULL;
	uint8_t *b = r->cache[best];
	*cap = r->cache_cap[best];
	r->ncache--;
	r->cache[best] = r->cache[r->ncache];
	r->cache_cap[best] = r->cache_cap[r->ncache];
	return b;
}

/* Opens a partial for H within the bounds, evicting older partials if
 * needed. NULL when refused (counted by the caller). */
static partial *open_partial(sio_frag_rx *r, uint64_t now, const sio_frag_hdr *h, int *err)
{
	uint32_t need = alloc_size(h->total);
	partial *slot = NULL, *victim;
	*err = SIO_EAGAIN;
	/* A slot. */
	if (!r->p) {
		r->p = calloc(r->cfg.max_partials, sizeof *r->p);
		if (!r->p) {
			*err = SIO_ENOMEM;
			r->st.nomem++;
			return NULL;
		}
		r->np = r->cfg.max_partials;
	}
	if (r->nused == r->cfg.max_partials) {
		if (!(victim = oldest_before(r, h->id)))
			return NULL;
		r->st.evicted++;
		discard(r, victim);
	}
	/* Memory: reuse a cached buffer, else drop cached ones, then evict. */
	uint32_t cap = 0;
	uint8_t *buf = cache_take(r, h->total, &cap);
	if (!buf) {
		while (r->st.bytes + need > r->cfg.budget) {
			if (r->ncache) {
				r->ncache--;
				buf_free(r, r->cache[r->ncache], r->cache_cap[r->ncache]);
				continue;
			}
			if (!(victim = oldest_before(r, h->id)))
				return NULL;
			r->st.evicted++;
			discard(r, victim);
		}
		buf = malloc(need);
		if (!buf) {
			*err = SIO_ENOMEM;
			r->st.nomem++;
			return NULL;
		}
		cap = need;
		r->st.bytes += cap;
		if (r->st.bytes > r->st.peak_bytes)
			r->st.peak_bytes = r->st.bytes;
	}
	for (uint32_t i = 0; i < r->np; i++)
		if (!r->p[i].used) {
			slot = &r->p[i];
			break;
		}
	/* A slot is free: one was evicted above when the table was full. */
	slot->used = 1;
	slot->type = h->type;
	slot->id = h->id;
	slot->total = h->total;
	slot->buf = buf;
	slot->cap = cap;
	slot->last = now;
	r->nused++;
	return slot;
}

static partial *find(sio_frag_rx *r, uint32_t id)
{
	for (uint32_t i = 0; i < r->np; i++)
		if (r->p[i].used && r->p[i].id == id)
			return &r->p[i];
	return NULL;
}

static int drop(sio_frag_rx *r, uint64_t *counter, int err)
{
	if (counter)
		(*counter)++;
	r->st.dropped++;
	return err;
}

int sio_frag_rx_add(sio_frag_rx *r, uint64_t now, const sio_frag_hdr *h, const uint8_t *payload,
                    sio_frag_deliver_fn fn, void *ctx)
{
	if (!h->len || !h->total || h->off > h->total || h->len > h->total - h->off)
		return drop(r, NULL, SIO_EPROTO);
	if (h->total > r->cfg.max_message)
		return drop(r, &r->st.too_big, SIO_ETOOBIG);
	if (id_too_old(r, h->id) || (!id_ahead(r, h->id) && id_done(r, h->id)))
		return drop(r, &r->st.stale, SIO_ELOST);
	partial *q = find(r, h->id);
	if (q && (q->type != h->type || q->total != h->total)) {
		r->st.conflicts++;
		discard(r, q);
		return drop(r, NULL, SIO_EPROTO);
	}
	uint32_t x = h->off, y = h->off + h->len, covered = 0;
	if (q) {
		for (uint32_t i = 0; i < q->nr; i++) {
			uint32_t a = q->ra[i] > x ? q->ra[i] : x;
			uint32_t b = q->rb[i] < y ? q->rb[i] : y;
			if (a >= b)
				continue;
			if (memcmp(q->buf + a, payload + (a - x), b - a) != 0) {
				r->st.conflicts++;
				discard(r, q);
				return drop(r, NULL, SIO_EPROTO);
			}
			covered += b - a;
		}
		if (covered == h->len) {
			r->st.dup_fragments++;
			return 0;
		}
	} else {
		if (id_ahead(r, h->id))
			id_advance(r, h->id);
		int err;
		if (!(q = open_partial(r, now, h, &err))) {
			id_mark(r, h->id);
			return drop(r, err == SIO_ENOMEM ? NULL : &r->st.refused, err);
		}
	}
	/* Merge [x, y) with every range it overlaps or touches. */
	uint32_t i = 0, j;
	while (i < q->nr && q->rb[i] < x)
		i++;
	uint32_t na = x, nb = y;
	for (j = i; j < q->nr && q->ra[j] <= y; j++) {
		if (q->ra[j] < na)
			na = q->ra[j];
		if (q->rb[j] > nb)
			nb = q->rb[j];
	}
	uint32_t nr = q->nr - (j - i) + 1;
	if (nr > SIO_FRAG_RANGES) /* never for a new partial: one range fits */
		return drop(r, &r->st.scattered, SIO_EAGAIN);
	if (j - i != 1) {
		memmove(&q->ra[i + 1], &q->ra[j], (q->nr - j) * sizeof q->ra[0]);
		memmove(&q->rb[i + 1], &q->rb[j], (q->nr - j) * sizeof q->rb[0]);
	}
	q->ra[i] = na;
	q->rb[i] = nb;
	q->nr = nr;
	memcpy(q->buf + x, payload, h->len);
	q->have += h->len - covered;
	q->nfrags++;
	q->last = now;
	r->st.fragments++;
	if (q->have < q->total)
		return 0;
	r->st.delivered++;
	if (fn)
		fn(ctx, q->type, q->buf, q->total);
	id_mark(r, q->id);
	release(r, q);
	return 1;
}

int sio_frag_rx_tick(sio_frag_rx *r, uint64_t now)
{
	int n = 0;
	for (uint32_t i = 0; i < r->np; i++) {
		partial *q = &r->p[i];
		if (q->used && now >= q->last + r->cfg.timeout_ns) {
			r->st.timeouts++;
			discard(r, q);
			n++;
		}
	}
	return n;
}

uint64_t sio_frag_rx_deadline(const sio_frag_rx *r)
{
	uint64_t d = UINT64_MAX;
	if (!r->nused)
		return d;
	for (uint32_t i = 0; i < r->np; i++) {
		const partial *q = &r->p[i];
		if (q->used && q->last + r->cfg.timeout_ns < d)
			d = q->last + r->cfg.timeout_ns;
	}
	return d;
}

void sio_frag_rx_trim(sio_frag_rx *r)
{
	if (!r || r->nused)
		return;
	/* cached buffers hold no plaintext (release() wiped them) */
	while (r->ncache) {
		r->ncache--;
		buf_free(r, r->cache[r->ncache], r->cache_cap[r->ncache]);
	}
	free(r->p);
	r->p = NULL;
	r->np = 0;
}

size_t sio_frag_rx_held(const sio_frag_rx *r)
{
	return r ? (size_t)r->np * sizeof *r->p + r->st.bytes : 0;
}

uint32_t sio_frag_rx_partials(const sio_frag_rx *r)
{
	return r->nused;
}

void sio_frag_rx_stats(const sio_frag_rx *r, sio_frag_stats *st)
{
	*st = r->st;
}
