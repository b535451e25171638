/* Protocol core, sending side: output queues, message framing, merging of
 * small messages within the send delay, sealing, pending/sent. */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "core_int.h"
#include "options.h"
#include "wire.h"

/* Under AddressSanitizer every packet buffer is its own allocation, so an
 * overrun of one buffer hits a redzone instead of the next slot. */
#if defined(__SANITIZE_ADDRESS__)
#define SIO_PQ_SEPARATE 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SIO_PQ_SEPARATE 1
#endif
#endif
#ifndef SIO_PQ_SEPARATE
#define SIO_PQ_SEPARATE 0
#endif

#define SIO_PQ_FIRST 8 /* slots a ring starts with */

/* Sizes a ring of up to N packets of up to CAP bytes; nothing is allocated
 * until the first push (a listener holds thousands of mostly idle sessions,
 * and an idle session needs no packet buffer at all). */
static void pq_init(sio_pq *q, uint32_t n, uint32_t cap)
{
	memset(q, 0, sizeof *q);
	q->max = n;
	q->bufcap = cap;
	/* strides stay 16-byte aligned */
	q->stride = (uint32_t)((SIO_SLACK + (size_t)cap + 15) & ~(size_t)15);
}

static int pq_held(const sio_pq *q)
{
	return q->p != NULL;
}

static size_t pq_bytes(const sio_pq *q)
{
	if (!q->p)
		return 0;
	return (size_t)q->cap * sizeof *q->p + (size_t)q->chunk_cap * sizeof *q->chunk +
	       q->buf_bytes;
}

/* Wipes the buffers that were used (a slot has one only once it was pushed:
 * they may hold plaintext; the spare ones were never written) and frees
 * everything. Only when nothing is queued or handed out. */
static void pq_release(sio_pq *q)
{
	if (!q->p)
		return;
	for (uint32_t i = 0; i < q->cap; i++)
		if (q->p[i].buf)
			sodium_memzero(q->p[i].buf, SIO_SLACK + (size_t)q->bufcap);
	for (uint32_t i = 0; i < q->nchunks; i++)
		free(q->chunk[i]);
	free(q->chunk);
	free(q->p);
	uint32_t max = q->max, bufcap = q->bufcap, stride = q->stride;
	memset(q, 0, sizeof *q);
	q->max = max;
	q->bufcap = bufcap;
	q->stride = stride;
}

/* A full ring (or none yet) gets twice the slots, up to MAX; the packets
 * keep their positions from the head (handed-out ones included). */
static int pq_grow(sio_pq *q)
{
	uint32_t nc = q->cap ? 2 * q->cap : SIO_PQ_FIRST;
	if (nc > q->max)
		nc = q->max;
	sio_pkt *n = calloc(nc, sizeof *n);
	if (!n)
		return SIO_ENOMEM;
	for (uint32_t i = 0; i < q->cap; i++) {
		uint32_t k = q->head + i;
		n[i] = q->p[k >= q->cap ? k - q->cap : k];
	}
	for (uint32_t i = q->cap; i < nc; i++)
		n[i].cap = q->bufcap;
	free(q->p);
	q->p = n;
	q->cap = nc;
	q->head = 0;
	return 0;
}

/* A buffer for slot P, carved from the current chunk or a new one. Chunks
 * double from one buffer to about SIO_PQ_CHUNK_BYTES: a quiet session
 * allocates little, a busy one a few times, none per packet. Under ASan
 * every buffer is its own chunk. */
static int pq_buf(sio_pq *q, sio_pkt *p)
{
	if (!q->carve_left) {
		uint32_t most = SIO_PQ_SEPARATE ? 1 : SIO_PQ_CHUNK_BYTES / q->stride;
		uint32_t nb = q->next_bufs ? q->next_bufs : 1;
		if (nb > most)
			nb = most ? most : 1;
		if (q->nchunks == q->chunk_cap) {
			uint32_t cc = q->chunk_cap ? 2 * q->chunk_cap : 4;
			uint8_t **c = realloc(q->chunk, cc * sizeof *c);
			if (!c)
				return SIO_ENOMEM;
			q->chunk = c;
			q->chunk_cap = cc;
		}
		uint8_t *m = malloc((size_t)nb * q->stride);
		if (!m)
			return SIO_ENOMEM;
		q->chunk[q->nchunks++] = m;
		q->buf_bytes += (size_t)nb * q->stride;
		q->carve = m;
		q->carve_left = nb;
		q->next_bufs = 2 * nb;
	}
	p->buf = q->carve;
	q->carve += q->stride;
	q->carve_left--;
	return 0;
}

/* head < cap and i <= count <= cap: one conditional subtraction wraps (a
 * division here cost more than the rest of queueing a 1-byte message). */
static sio_pkt *pq_at(const sio_pq *q, uint32_t i)
{
	uint32_t k = q->head + i;
	return &q->p[k >= q->cap ? k - q->cap : k];
}

static sio_pkt *pq_last(const sio_pq *q)
{
	return q->count ? pq_at(q, q->count - 1) : NULL;
}

/* The next slot, or NULL when the ring is full (or memory is short:
 * callers treat both as "retry once packets left"). */
static sio_pkt *pq_push(sio_pq *q)
{
	if (q->count == q->cap && (q->cap == q->max || pq_grow(q) != 0))
		return NULL;
	uint32_t k = q->head + q->count;
	if (k >= q->cap)
		k -= q->cap;
	if (!q->p[k].buf && pq_buf(q, &q->p[k]) != 0)
		return NULL;
	sio_pkt *p = &q->p[k];
	q->count++;
	uint8_t *buf = p->buf;
	uint32_t cap = p->cap;
	memset(p, 0, sizeof *p);
	p->buf = buf;
	p->cap = cap;
	return p;
}

static void pq_pop(sio_pq *q)
{
	q->p[q->head].state = PKT_FREE;
	q->head = q->head + 1 == q->cap ? 0 : q->head + 1;
	/* Empty: start again at slot 0, so that a session with one packet in
	 * flight at a time reuses one buffer instead of giving every slot one. */
	if (--q->count == 0)
		q->head = 0;
}

int sio_core_queues_new(sio_core *c)
{
	uint32_t mp = c->o.max_packet_size;
	uint32_t n = SIO_RING_BYTES / mp;
	if (n < 8)
		n = 8;
	if (n > 256)
		n = 256;
	pq_init(&c->kxq, SIO_KX_QUEUE, SIO_KX_WIRE_MAX);
	pq_init(&c->ctrlq, SIO_CTRL_QUEUE, c->datagram ? mp : SIO_CTRL_BYTES);
	pq_init(&c->data, n, mp);
	c->handed_cap = SIO_KX_QUEUE + SIO_CTRL_QUEUE + n;
	c->handed = calloc(c->handed_cap, sizeof *c->handed);
	if (!c->handed)
		return SIO_ENOMEM;
	return 0;
}

void sio_core_queues_free(sio_core *c)
{
	pq_release(&c->kxq);
	pq_release(&c->ctrlq);
	pq_release(&c->data);
	free(c->handed);
	free(c->tokens);
	c->handed = NULL;
	c->tokens = NULL;
	c->tok_cap = c->tok_count = c->tok_head = 0;
}

int sio_core_tok_room(sio_core *c)
{
	if (c->tok_count < c->tok_cap)
		return 1;
	if (c->tok_cap >= SIO_TOKENS)
		return 0;
	/* Grows by doubling while writers keep more tokens pending: a few
	 * allocations when a session gets busy, none once it is. */
	uint32_t nc = c->tok_cap ? 2 * c->tok_cap : SIO_TOKENS_FIRST;
	sio_token *t = malloc((size_t)nc * sizeof *t);
	if (!t)
		return 0;
	for (uint32_t i = 0; i < c->tok_count; i++)
		t[i] = c->tokens[(c->tok_head + i) & (c->tok_cap - 1)];
	free(c->tokens);
	c->tokens = t;
	c->tok_cap = nc;
	c->tok_head = 0;
	return 1;
}

/* Idle: nothing queued, handed out or pending, and nothing queued, sent or
 * received for SIO_TRIM_NS. */
static uint64_t quiet_since(const sio_core *c)
{
	uint64_t t = c->tx_last;
	if (c->last_send > t)
		t = c->last_send;
	if (c->last_recv > t)
		t = c->last_recv;
	return t;
}

static int queues_empty(const sio_core *c)
{
	return !c->kxq.count && !c->ctrlq.count && !c->data.count && !c->tok_count &&
	       !c->nhanded && !c->msg.tx_active &&
	       (!c->msg.rx || !sio_frag_rx_partials(c->msg.rx)); /* those time out by themselves */
}

static int anything_held(const sio_core *c)
{
	if (pq_held(&c->kxq) || pq_held(&c->ctrlq) || pq_held(&c->data) || c->tokens)
		return 1;
	for (int i = 0; i < SIO_KEY_SLOTS; i++)
		if (sio_aead_held(&c->keys[i].tx) || sio_aead_held(&c->keys[i].rx))
			return 1;
	return sio_core_msg_held(c);
}

uint64_t sio_core_tx_trim_deadline(const sio_core *c)
{
	if (!anything_held(c) || !queues_empty(c))
		return UINT64_MAX; /* busy: the trim is looked at again once idle */
	return quiet_since(c) + SIO_TRIM_NS;
}

void sio_core_tx_trim(sio_core *c, uint64_t now)
{
	if (!anything_held(c) || !queues_empty(c) || now < quiet_since(c) + SIO_TRIM_NS)
		return;
	pq_release(&c->kxq);
	pq_release(&c->ctrlq);
	pq_release(&c->data);
	free(c->tokens);
	c->tokens = NULL;
	c->tok_cap = c->tok_head = 0;
	for (int i = 0; i < SIO_KEY_SLOTS; i++) {
		sio_aead_release(&c->keys[i].tx);
		sio_aead_release(&c->keys[i].rx);
	}
	sio_core_msg_trim(c);
	if (c->cb.trimmed)
		c->cb.trimmed(c->cb.ctx);
}

size_t sio_core_held_bytes(const sio_core *c)
{
	size_t b = pq_bytes(&c->kxq) + pq_bytes(&c->ctrlq) + pq_bytes(&c->data) +
		   (size_t)c->tok_cap * sizeof *c->tokens + sio_core_msg_held(c);
	for (int i = 0; i < SIO_KEY_SLOTS; i++)
		b += sio_aead_held(&c->keys[i].tx) + sio_aead_held(&c->keys[i].rx);
	return b;
}

void sio_core_queue_kx(sio_core *c, uint64_t now, const uint8_t *msg, size_t len)
{
	/* Kx messages not yet handed out are superseded by a new copy. */
	for (uint32_t i = 0; i < c->kxq.count; i++) {
		sio_pkt *p = pq_at(&c->kxq, i);
		if (i >= c->nhanded && p->end == len && memcmp(p->buf, msg, len) == 0)
			return;
	}
	sio_pkt *p = pq_push(&c->kxq);
	if (!p)
		return; /* full: the retry timer sends it again */
	c->tx_last = now;
	memcpy(p->buf, msg, len);
	p->off = 0;
	p->end = (uint32_t)len;
	p->state = PKT_SEALED;
}

/* ---- sealing ------------------------------------------------------------ */

/* Seals the plaintext of P (frames at SIO_SLACK + SIO_HDR_LEN .. end) under
 * key slot KS. */
static int seal(sio_core *c, uint64_t now, sio_pkt *p, sio_keyslot *ks)
{
	if (!ks->live)
		return SIO_ESTATE;
	if (ks->tx_pn >= SIO_PN_LIMIT)
		return SIO_ELIMIT;
	uint32_t start = SIO_SLACK + SIO_HDR_LEN, end = p->end;
	/* The last data message needs no length: it runs to the packet end. */
	if (p->lf_lensz) {
		if (p->nframes == 1) {
			memmove(p->buf + p->lf_kind + p->lf_lensz, p->buf + p->lf_kind,
				p->lf_lenpos - p->lf_kind);
			start += p->lf_lensz;
			p->buf[start] |= SIO_FR_LAST;
		} else if (p->lf_plen <= 256) {
			memmove(p->buf + p->lf_lenpos, p->buf + p->lf_payload, p->lf_plen);
			end -= p->lf_lensz;
			p->buf[p->lf_kind] |= SIO_FR_LAST;
		}
	}
	uint8_t *h = p->buf + start - SIO_HDR_LEN;
	uint64_t pn = ks->tx_pn++;
	h[0] = (uint8_t)(SIO_PKT_DATA | (ks - c->keys));
	sio_put_le32(h + 1, (uint32_t)pn);
	if (sio_aead_seal(&ks->tx, pn, h, SIO_HDR_LEN, p->buf + start, end - start, p->buf + end) !=
	    0)
		return SIO_ECRYPTO;
	end += SIO_TAG_LEN;
	if (c->psk.have) {
		uint8_t mask[5];
		sio_hp_mask(mask, c->psk.hp_key, h + SIO_HDR_LEN);
		h[0] ^= mask[0] & 0x3f;
		for (int i = 0; i < 4; i++)
			h[1 + i] ^= mask[1 + i];
	}
	p->off = start - SIO_HDR_LEN;
	p->end = end;
	p->state = PKT_SEALED;
	p->seq = ++c->seal_seq;
	c->last_send = now;
	return 0;
}

int sio_core_ctrl_packet(sio_core *c, uint64_t now, int slot, const uint8_t *frames, size_t len)
{
	return sio_core_ctrl_packet_sized(c, now, slot, frames, len, 0);
}

int sio_core_ctrl_packet_sized(sio_core *c, uint64_t now, int slot, const uint8_t *frames,
			       size_t len, size_t size)
{
	if (slot < 0 || !c->keys[slot].live)
		return SIO_ESTATE;
	if (size && size < len + SIO_OVERHEAD)
		return SIO_EINVAL;
	if (len + SIO_OVERHEAD > c->ctrlq.bufcap || size > c->ctrlq.bufcap)
		return SIO_ETOOBIG;
	sio_pkt *p = pq_push(&c->ctrlq);
	if (!p)
		return SIO_EAGAIN;
	c->tx_last = now;
	memcpy(p->buf + SIO_SLACK + SIO_HDR_LEN, frames, len);
	p->end = (uint32_t)(SIO_SLACK + SIO_HDR_LEN + len);
	if (size > len + SIO_OVERHEAD) {
		/* PAD: the rest of the packet is ignored */
		memset(p->buf + p->end, SIO_FR_PAD, size - len - SIO_OVERHEAD);
		p->end = (uint32_t)(SIO_SLACK + size - SIO_TAG_LEN);
	}
	int r = seal(c, now, p, &c->keys[slot]);
	if (r) {
		c->ctrlq.count--; /* it was the last one pushed */
		return r;
	}
	return 0;
}

void sio_core_tx_close_open(sio_core *c)
{
	sio_pkt *p = pq_last(&c->data);
	if (p && p->state == PKT_FILL)
		p->state = PKT_READY;
}

void sio_core_tx_seal(sio_core *c, uint64_t now)
{
	if (c->hold_seal || !sio_core_can_send(c))
		return;
	sio_keyslot *ks = &c->keys[c->tx_slot];
	for (uint32_t i = c->data_sealed; i < c->data.count; i++) {
		sio_pkt *p = pq_at(&c->data, i);
		if (p->state == PKT_FILL && p->deadline > now)
			break;
		if (seal(c, now, p, ks) != 0)
			break;
		c->data_sealed++;
	}
}

uint64_t sio_core_opened(const sio_core *c)
{
	return c->pkt_ids;
}

uint64_t sio_core_tx_deadline(const sio_core *c)
{
	sio_pkt *p = pq_last(&c->data);
	if (p && p->state == PKT_FILL)
		return p->deadline;
	if (p && p->state == PKT_READY)
		return 0;
	return UINT64_MAX;
}

void sio_core_tx_cancel(sio_core *c, int err)
{
	sio_core_msg_cancel(c, err);
	/* Unsealed data packets are at the end of the ring. */
	while (c->data.count) {
		sio_pkt *p = pq_last(&c->data);
		if (p->state == PKT_SEALED)
			break;
		uint64_t id = p->id;
		c->data.count--;
		p->state = PKT_FREE;
		if (p->wm && c->cb.sent)
			c->cb.sent(c->cb.ctx, p->wm, err);
		while (c->tok_count) {
			sio_token *t = &c->tokens[(c->tok_head + c->tok_count - 1) & (c->tok_cap - 1)];
			if (t->pkt_id != id)
				break;
			c->tok_count--;
			if (c->cb.sent)
				c->cb.sent(c->cb.ctx, t->token, err);
		}
	}
}

/* ---- framing -------------------------------------------------------------- */

/* Room left for plaintext in P. */
static uint32_t room(const sio_pkt *p)
{
	uint32_t limit = SIO_SLACK + p->lim - SIO_TAG_LEN;
	return limit > p->end ? limit - p->end : 0;
}

/* The packet to append NEED bytes of frames to, or NULL (ring full). */
static sio_pkt *open_packet(sio_core *c, uint64_t now, uint32_t need, int reserve)
{
	sio_pkt *p = pq_last(&c->data);
	if (p && p->state == PKT_FILL) {
		if (room(p) >= need)
			return p;
		p->state = PKT_READY;
	}
	if (c->data.count + (uint32_t)reserve >= c->data.max)
		return NULL;
	if (!(p = pq_push(&c->data)))
		return NULL;
	c->tx_last = now;
	p->state = PKT_FILL;
	p->end = SIO_SLACK + SIO_HDR_LEN;
	p->lim = sio_core_pkt_size(c) < p->cap ? sio_core_pkt_size(c) : p->cap;
	p->id = ++c->pkt_ids;
	p->deadline = c->o.send_delay_ns > 0 ? now + (uint64_t)c->o.send_delay_ns : now;
	return p;
}

int sio_core_tx_frame(sio_core *c, uint64_t now, const uint8_t *hdr, size_t hlen,
		      const uint8_t *body, size_t blen, int close_packet)
{
	uint32_t need = (uint32_t)(hlen + blen);
	if (need > sio_core_pkt_size(c) - SIO_OVERHEAD)
		return SIO_ETOOBIG;
	sio_pkt *p = open_packet(c, now, need, 0);
	if (!p)
		return SIO_EAGAIN;
	memcpy(p->buf + p->end, hdr, hlen);
	if (blen)
		memcpy(p->buf + p->end + hlen, body, blen);
	p->end += need;
	p->nframes++;
	p->lf_lensz = 0;
	if (close_packet)
		p->state = PKT_READY;
	sio_core_tx_seal(c, now);
	return 0;
}

int sio_core_write_check(const sio_core *c, uint32_t type, size_t len)
{
	if (c->state >= SIO_STATE_CLOSING)
		return SIO_ECLOSED;
	if (type > SIO_TYPE_READWRITE)
		return SIO_EINVAL;
	size_t hl = type == SIO_TYPE_READWRITE ? 1 : 1 + sio_varint_len(type);
	/* sio_core_msg_write's verdict on a message larger than a packet */
	if (hl + len > sio_core_pkt_size(c) - SIO_OVERHEAD &&
	    (c->o.fragmentation < 0 || len > c->o.max_message_size || len > UINT32_MAX))
		return SIO_ETOOBIG;
	return 0;
}

int sio_core_write(sio_core *c, uint64_t now, uint32_t type, const uint8_t *data, size_t len,
		   uint64_t token)
{
	uint8_t hdr[1 + 5 + 5];
	size_t hl = 0;
	if (c->state >= SIO_STATE_CLOSING)
		return SIO_ECLOSED;
	if (type > SIO_TYPE_READWRITE || (len && !data))
		return SIO_EINVAL;
	if (type == SIO_TYPE_READWRITE) {
		hdr[hl++] = SIO_FR_DATA_RW;
	} else {
		hdr[hl++] = SIO_FR_DATA;
		hl += sio_varint_put(hdr + hl, type);
	}
	size_t lenpos = hl, ptcap = sio_core_pkt_size(c) - SIO_OVERHEAD;
	/* A message alone in its packet needs no length field (SIO_FR_LAST).
	 * Larger ones are fragmented (core_msg.c), as is everything written
	 * while a fragmented message is half queued (order is kept). */
	if (hl + len > ptcap || c->msg.tx_active)
		return sio_core_msg_write(c, now, type, data, len, token);
	int alone = hl + sio_varint_len(len) + len > ptcap;
	if (alone)
		hdr[0] |= SIO_FR_LAST;
	else
		hl += sio_varint_put(hdr + hl, len);
	if (c->tx_slot >= 0 && c->keys[c->tx_slot].tx_pn >= SIO_PN_LIMIT)
		return SIO_ELIMIT;
	if (token && !(token & SIO_CORE_TOKEN_WM) && !sio_core_tok_room(c))
		return SIO_EAGAIN;
	/* Keep one ring slot for the close and keepalive frames. */
	sio_pkt *p = open_packet(c, now, alone ? (uint32_t)ptcap : (uint32_t)(hl + len), 1);
	if (!p)
		return SIO_EAGAIN;
	if (alone && p->nframes) {
		p->state = PKT_READY;
		if (!(p = open_packet(c, now, (uint32_t)ptcap, 1)))
			return SIO_EAGAIN;
	}
	uint32_t at = p->end;
	memcpy(p->buf + at, hdr, hl);
	if (len)
		memcpy(p->buf + at + hl, data, len);
	p->end += (uint32_t)(hl + len);
	p->nframes++;
	p->lf_kind = at;
	p->lf_lenpos = at + (uint32_t)lenpos;
	p->lf_lensz = alone ? 0 : (uint8_t)(hl - lenpos);
	p->lf_payload = at + (uint32_t)hl;
	p->lf_plen = (uint32_t)len;
	if (token & SIO_CORE_TOKEN_WM) {
		if (token > p->wm)
			p->wm = token; /* one report per packet (watermarks only grow) */
	} else if (token) {
		sio_token *t = &c->tokens[(c->tok_head + c->tok_count) & (c->tok_cap - 1)];
		t->token = token;
		t->pkt_id = p->id;
		c->tok_count++;
	}
	c->st.messages_sent++;
	c->st.bytes_sent += len;
	if (alone || c->o.send_delay_ns < 0 || room(p) < 2)
		p->state = PKT_READY;
	sio_core_tx_seal(c, now);
	return 0;
}

void sio_core_hold_seal(sio_core *c, uint64_t now, int on)
{
	c->hold_seal = on;
	if (!on)
		sio_core_tx_seal(c, now);
}

void sio_core_flush(sio_core *c, uint64_t now)
{
	sio_core_tx_close_open(c);
	sio_core_tx_seal(c, now);
}

/* ---- handing packets to the transport ----------------------------------- */

size_t sio_core_pending(sio_core *c, uint64_t now, struct iovec *iov, size_t max)
{
	size_t n = 0;
	uint32_t ci = 0, di = 0;
	sio_core_msg_pump(c, now);
	sio_core_tx_seal(c, now);
	c->nhanded = 0;
	for (uint32_t i = 0; i < c->kxq.count && n < max; i++) {
		sio_pkt *p = pq_at(&c->kxq, i);
		iov[n].iov_base = p->buf + p->off;
		iov[n].iov_len = p->end - p->off;
		c->handed[n++].q = 0;
	}
	/* Control and data packets merged in sealing order (packet numbers
	 * leave in increasing order: strict replay windows rely on it). */
	while (n < max) {
		sio_pkt *cp = ci < c->ctrlq.count ? pq_at(&c->ctrlq, ci) : NULL;
		sio_pkt *dp = di < c->data.count ? pq_at(&c->data, di) : NULL;
		if (dp && dp->state != PKT_SEALED)
			dp = NULL;
		if (!cp && !dp)
			break;
		sio_pkt *p;
		if (cp && (!dp || cp->seq < dp->seq)) {
			p = cp;
			ci++;
			c->handed[n].q = 1;
		} else {
			p = dp;
			di++;
			c->handed[n].q = 2;
		}
		iov[n].iov_base = p->buf + p->off;
		iov[n].iov_len = p->end - p->off;
		n++;
	}
	c->nhanded = n;
	return n;
}

void sio_core_tx_abandon(sio_core *c, int err)
{
	while (c->tokens && c->tok_count) {
		uint64_t t = c->tokens[c->tok_head].token;
		c->tok_head = (c->tok_head + 1) & (c->tok_cap - 1);
		c->tok_count--;
		if (c->cb.sent)
			c->cb.sent(c->cb.ctx, t, err);
	}
	for (uint32_t i = 0; c->data.p && i < c->data.count; i++) {
		sio_pkt *p = pq_at(&c->data, i);
		uint64_t wm = p->wm;
		p->wm = 0;
		if (wm && c->cb.sent)
			c->cb.sent(c->cb.ctx, wm, err);
	}
}

void sio_core_sent(sio_core *c, size_t n, int err)
{
	if (n > c->nhanded)
		n = c->nhanded;
	for (size_t i = 0; i < n; i++) {
		sio_pq *q = c->handed[i].q == 0 ? &c->kxq : c->handed[i].q == 1 ? &c->ctrlq : &c->data;
		sio_pkt *p = pq_at(q, 0);
		if (!err) {
			c->st.packets_sent++;
			c->st.wire_bytes_sent += p->end - p->off;
		}
		if (q == &c->data) {
			while (c->tok_count && c->tokens[c->tok_head].pkt_id <= p->id) {
				sio_token *t = &c->tokens[c->tok_head];
				c->tok_head = (c->tok_head + 1) & (c->tok_cap - 1);
				c->tok_count--;
				if (c->cb.sent)
					c->cb.sent(c->cb.ctx, t->token, err);
			}
			if (p->wm && c->cb.sent)
				c->cb.sent(c->cb.ctx, p->wm, err);
		}
		if (q == &c->data)
			c->data_sealed--;
		pq_pop(q);
	}
	/* What was handed but not reported stays first in its queue. */
	c->nhanded = 0;
}

/* ---- fragments and probes (issue #4, called from core_msg.c) -------------- */

int sio_core_tx_fragments(sio_core *c, uint64_t now, sio_frag_tx *t, const uint8_t *data,
			  uint32_t base, uint64_t token)
{
	while (!sio_frag_tx_done(t)) {
		sio_frag_hdr h;
		int last;
		uint32_t pl = 0;
		if (c->tx_slot >= 0 && c->keys[c->tx_slot].tx_pn >= SIO_PN_LIMIT)
			return SIO_ELIMIT;
		sio_pkt *p = pq_last(&c->data);
		if (p && p->state == PKT_FILL)
			pl = sio_frag_tx_plan(t, room(p), &h, &last);
		if (!pl) {
			/* Too little room left: this fragment starts a new packet. */
			if (p && p->state == PKT_FILL)
				p->state = PKT_READY;
			if (!(p = open_packet(c, now, 1, 1)))
				return SIO_EAGAIN;
			if (!(pl = sio_frag_tx_plan(t, room(p), &h, &last)))
				return SIO_ETOOBIG; /* packets below the minimum size */
		}
		int final = pl == t->total - t->off;
		if (final && token && !sio_core_tok_room(c))
			return SIO_EAGAIN;
		uint32_t at = p->end;
		size_t hl = sio_frag_hdr_put(p->buf + at, &h, last);
		memcpy(p->buf + at + hl, data + (t->off - base), pl);
		p->end += (uint32_t)hl + pl;
		p->nframes++;
		p->lf_lensz = 0;
		sio_frag_tx_advance(t, pl);
		if (final) {
			if (token) {
				sio_token *tk = &c->tokens[(c->tok_head + c->tok_count) & (c->tok_cap - 1)];
				tk->token = token;
				tk->pkt_id = p->id;
				c->tok_count++;
			}
			c->st.messages_sent++;
			c->st.bytes_sent += t->total;
		}
		if (last || c->o.send_delay_ns < 0 || room(p) < 2)
			p->state = PKT_READY;
	}
	sio_core_tx_seal(c, now);
	return 0;
}

int sio_core_tx_probe(sio_core *c, uint64_t now, uint32_t id, uint32_t size)
{
	if (!sio_core_can_send(c))
		return SIO_ESTATE;
	if (size > c->o.max_packet_size || size < SIO_OVERHEAD + 11)
		return SIO_EINVAL;
	sio_core_tx_close_open(c);
	sio_pkt *p = open_packet(c, now, 1, 1);
	if (!p)
		return SIO_EAGAIN;
	uint32_t at = p->end, end = SIO_SLACK + size - SIO_TAG_LEN;
	p->buf[at++] = SIO_FR_PROBE | SIO_FR_LAST;
	at += (uint32_t)sio_varint_put(p->buf + at, id);
	at += (uint32_t)sio_varint_put(p->buf + at, size);
	memset(p->buf + at, 0, end - at); /* padding, part of the PROBE frame */
	p->end = end;
	p->lim = size;
	p->nframes = 1;
	p->lf_lensz = 0;
	p->state = PKT_READY;
	sio_core_tx_seal(c, now);
	return 0;
}
