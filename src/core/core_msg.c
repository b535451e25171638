/* Fragmentation and packet-size negotiation hooked into the protocol core
 * (see core_msg.h; docs/PROTOCOL.md §14). */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "core_int.h"
#include "options.h"
#include "wire.h"

/* Without an answer from the peer for this long while we keep sending, the
 * current packet size is confirmed with a probe (at most this often). */
#define LOSS_SIGNAL_NS 1000000000ull

static void sync_stats(sio_core *c)
{
	sio_core_msg *m = &c->msg;
	if (m->rx) {
		sio_frag_stats fs;
		sio_frag_rx_stats(m->rx, &fs);
		c->st.drop_fragments = fs.dropped;
	}
	c->st.packet_size = m->pkt_size;
	if (c->dg.packet_size && c->dg.packet_size != m->pkt_size && SIO_DIAG_ON(c, SIO_DIAG_INFO)) {
		c->dg.packet_size = m->pkt_size;
		sio_core_diag(c, SIO_DIAG_INFO, "packet size now %u bytes", (unsigned)m->pkt_size);
	}
}

static void frag_deliver(void *ctx, uint32_t type, const uint8_t *data, size_t len)
{
	sio_core_deliver(ctx, type, data, len);
}

int sio_core_msg_init(sio_core *c)
{
	sio_core_msg *m = &c->msg;
	sio_pmtu_cfg pc;
	memset(&pc, 0, sizeof pc);
	pc.max = c->o.max_packet_size;
	pc.timeout_ns = (uint64_t)c->o.negotiation_timeout_ns;
	pc.confirm_ns = c->o.keepalive_ns > 0 ? (uint64_t)c->o.keepalive_ns : UINT64_MAX;
	sio_pmtu_init(&m->pmtu, &pc);
	m->pmtu_on = c->datagram && c->o.negotiation > 0;
	if (m->pmtu_on)
		m->pkt_size = sio_pmtu_size(&m->pmtu); /* base until negotiated */
	else
		sio_pmtu_fixed(&m->pmtu, c->o.max_packet_size);
	m->pkt_size = sio_pmtu_size(&m->pmtu);
	m->next_id = 1;
	if (c->o.fragmentation > 0) {
		sio_frag_cfg fc;
		memset(&fc, 0, sizeof fc);
		fc.max_message = c->o.max_message_size;
		fc.budget = c->o.max_reassembly_bytes;
		fc.max_partials = c->o.max_partial_messages;
		fc.id_window = c->o.max_chain_id_diff;
		int r = sio_frag_rx_new(&m->rx, &fc);
		if (r)
			return r;
	}
	sync_stats(c);
	return 0;
}

void sio_core_msg_trim(sio_core *c)
{
	sio_frag_rx_trim(c->msg.rx);
	if (c->msg.ovf && !c->msg.tx_active) {
		sodium_memzero(c->msg.ovf, c->msg.ovf_cap);
		free(c->msg.ovf);
		c->msg.ovf = NULL;
		c->msg.ovf_cap = 0;
	}
}

size_t sio_core_msg_held(const sio_core *c)
{
	return sio_frag_rx_held(c->msg.rx) + (c->msg.ovf ? c->msg.ovf_cap : 0);
}

void sio_core_msg_free(sio_core *c)
{
	sio_frag_rx_free(c->msg.rx);
	c->msg.rx = NULL;
	if (c->msg.ovf) {
		sodium_memzero(c->msg.ovf, c->msg.ovf_cap);
		free(c->msg.ovf);
		c->msg.ovf = NULL;
	}
}

uint32_t sio_core_pkt_size(const sio_core *c)
{
	return c->msg.pkt_size;
}

/* Sends the probes due now, adopts the current size, ends NEGOTIATION. */
static void pmtu_run(sio_core *c, uint64_t now)
{
	sio_core_msg *m = &c->msg;
	if (!m->pmtu_on || c->tx_slot < 0 ||
	    (c->state != SIO_STATE_NEGOTIATION && c->state != SIO_STATE_ESTABLISHED))
		return;
	sio_pmtu_probe pr[SIO_PMTU_MAX_PER_ROUND + 1];
	size_t n = sio_pmtu_poll(&m->pmtu, now, pr, SIO_PMTU_MAX_PER_ROUND + 1);
	for (size_t i = 0; i < n; i++)
		sio_core_tx_probe(c, now, pr[i].id, pr[i].size); /* failure = a lost probe */
	m->pkt_size = sio_pmtu_size(&m->pmtu);
	sync_stats(c);
	if (c->state == SIO_STATE_NEGOTIATION && sio_pmtu_done(&m->pmtu))
		sio_core_set_state(c, SIO_STATE_ESTABLISHED);
}

int sio_core_msg_negotiate(sio_core *c, uint64_t now)
{
	sio_core_msg *m = &c->msg;
	if (!m->pmtu_on)
		return 1;
	sio_pmtu_start(&m->pmtu, now);
	m->last_loss_signal = now;
	pmtu_run(c, now);
	return c->state == SIO_STATE_ESTABLISHED || sio_pmtu_done(&m->pmtu);
}

int sio_core_msg_write(sio_core *c, uint64_t now, uint32_t type, const uint8_t *data, size_t len,
                       uint64_t token)
{
	sio_core_msg *m = &c->msg;
	if (m->tx_active)
		return SIO_EAGAIN; /* messages keep their order: wait for it */
	if (c->o.fragmentation < 0 || len > c->o.max_message_size || len > UINT32_MAX)
		return SIO_ETOOBIG;
	if (token && !sio_core_tok_room(c))
		return SIO_EAGAIN;
	sio_frag_tx_begin(&m->tx, type, m->next_id, (uint32_t)len);
	int r = sio_core_tx_fragments(c, now, &m->tx, data, 0, token);
	if (r == SIO_EAGAIN && m->tx.off == 0)
		return SIO_EAGAIN; /* nothing queued: not accepted */
	m->next_id++;
	if (r != SIO_EAGAIN)
		return r;
	/* Part queued, the ring is full: keep the rest (one copy, reused). */
	size_t rem = len - m->tx.off;
	if (rem > m->ovf_cap) {
		uint8_t *b = malloc(rem);
		if (!b)
			return SIO_ENOMEM; /* the peer times the partial message out */
		if (m->ovf) {
			sodium_memzero(m->ovf, m->ovf_cap);
			free(m->ovf);
		}
		m->ovf = b;
		m->ovf_cap = rem;
	}
	memcpy(m->ovf, data + m->tx.off, rem);
	m->ovf_base = m->tx.off;
	m->tx_token = token;
	m->tx_active = 1;
	return 0;
}

void sio_core_msg_pump(sio_core *c, uint64_t now)
{
	sio_core_msg *m = &c->msg;
	if (!m->tx_active)
		return;
	int r = sio_core_tx_fragments(c, now, &m->tx, m->ovf, m->ovf_base, m->tx_token);
	if (r == SIO_EAGAIN)
		return;
	m->tx_active = 0;
	if (r < 0 && m->tx_token && c->cb.sent)
		c->cb.sent(c->cb.ctx, m->tx_token, r);
	if (m->close_after) {
		m->close_after = 0;
		sio_core_close_send(c, now);
	}
}

void sio_core_msg_cancel(sio_core *c, int err)
{
	sio_core_msg *m = &c->msg;
	if (!m->tx_active)
		return;
	m->tx_active = 0;
	m->close_after = 0;
	if (m->tx_token && c->cb.sent)
		c->cb.sent(c->cb.ctx, m->tx_token, err);
}

static size_t get2(const uint8_t *p, const uint8_t *end, uint32_t *a, uint32_t *b)
{
	size_t n1, n2;
	if (!(n1 = sio_varint_get32(p, end, a)) || !(n2 = sio_varint_get32(p + n1, end, b)))
		return 0;
	return n1 + n2;
}

size_t sio_core_msg_frame(sio_core *c, uint64_t now, uint8_t kind, int last, const uint8_t *p,
                          const uint8_t *end, int live)
{
	sio_core_msg *m = &c->msg;
	uint32_t id, size;
	size_t n;
	switch (kind) {
	case SIO_FR_FRAGMENT: {
		sio_frag_hdr h;
		if (!(n = sio_frag_hdr_get(p, end, last, &h)))
			return 0;
		if (live) {
			if (m->rx)
				sio_frag_rx_add(m->rx, now, &h, p + n, frag_deliver, c);
			else
				c->st.drop_fragments++; /* fragmentation disabled here */
			sync_stats(c);
		}
		return n + h.len;
	}
	case SIO_FR_PROBE: {
		uint8_t fr[1 + 5 + 5];
		if (!(n = get2(p, end, &id, &size)) || size != m->rx_pkt_len)
			return 0;
		if (c->tx_slot >= 0 && c->state >= SIO_STATE_NEGOTIATION &&
		    c->state <= SIO_STATE_ESTABLISHED) {
			size_t k = 0;
			fr[k++] = SIO_FR_PROBE_ACK;
			k += sio_varint_put(fr + k, id);
			k += sio_varint_put(fr + k, (uint32_t)m->rx_pkt_len);
			sio_core_ctrl_packet(c, now, c->tx_slot, fr, k);
		}
		return last ? (size_t)(end - p) : n; /* with L, padding follows */
	}
	case SIO_FR_PROBE_ACK:
		if (!(n = get2(p, end, &id, &size)))
			return 0;
		/* id 0: the answer to a liveness probe (sio_core_unreachable),
		 * which the packet's arrival already counted */
		if (m->pmtu_on && id != 0) {
			sio_pmtu_ack(&m->pmtu, now, id, size);
			pmtu_run(c, now);
		}
		return last ? (size_t)(end - p) : n;
	}
	return 0;
}

/* When the current silence began: the first send after the last receive.
 * Sends happen after a tick (when the output is taken), so a send not yet
 * seen by a tick counts from itself. */
static uint64_t quiet_start(const sio_core *c)
{
	return c->msg.quiet_since > c->last_recv ? c->msg.quiet_since : c->last_send;
}

void sio_core_msg_tick(sio_core *c, uint64_t now)
{
	sio_core_msg *m = &c->msg;
	if (c->last_send > c->last_recv && m->quiet_since <= c->last_recv)
		m->quiet_since = c->last_send;
	if (m->rx && sio_frag_rx_tick(m->rx, now))
		sync_stats(c);
	sio_core_msg_pump(c, now);
	/* Sending without hearing anything back for a while (counted from the
	 * first send after the last receive): are big packets vanishing? */
	if (m->pmtu_on && c->state == SIO_STATE_ESTABLISHED && c->last_send > c->last_recv &&
	    now >= quiet_start(c) + LOSS_SIGNAL_NS && now >= m->last_loss_signal + LOSS_SIGNAL_NS) {
		m->last_loss_signal = now;
		sio_pmtu_loss(&m->pmtu, now);
	}
	pmtu_run(c, now);
}

uint64_t sio_core_msg_deadline(const sio_core *c)
{
	const sio_core_msg *m = &c->msg;
	uint64_t d = m->rx ? sio_frag_rx_deadline(m->rx) : UINT64_MAX;
	if (m->pmtu_on && c->tx_slot >= 0 &&
	    (c->state == SIO_STATE_NEGOTIATION || c->state == SIO_STATE_ESTABLISHED)) {
		uint64_t p = sio_pmtu_deadline(&m->pmtu);
		if (p < d)
			d = p;
		if (c->state == SIO_STATE_ESTABLISHED && c->last_send > c->last_recv) {
			uint64_t l = quiet_start(c) + LOSS_SIGNAL_NS;
			if (l < m->last_loss_signal + LOSS_SIGNAL_NS)
				l = m->last_loss_signal + LOSS_SIGNAL_NS;
			if (l < d)
				d = l;
		}
	}
	return d;
}
