/* Protocol core, receiving side: header protection, key lookup, replay
 * window, opening in place, frame parsing and delivery. */
#include <sodium.h>
#include <string.h>

#include "core_int.h"
#include "options.h"
#include "wire.h"

void sio_core_deliver(sio_core *c, uint32_t type, const uint8_t *data, size_t len)
{
	if (c->state == SIO_STATE_CLOSED)
		return; /* detached by an earlier message of the same packet */
	c->st.messages_received++;
	c->st.bytes_received += len;
	if (c->cb.deliver)
		c->cb.deliver(c->cb.ctx, type, data, len);
	if (c->o.detach_on_messages && c->st.messages_received >= c->o.detach_on_messages &&
	    c->state != SIO_STATE_CLOSED) {
		/* Detach: no CLOSE, nothing more sent or delivered. */
		sio_core_fail(c, SIO_EDETACHED, "detached after detach_on_messages messages");
	}
}

static int deliver(sio_core *c, uint32_t type, const uint8_t *data, size_t len)
{
	if (type > SIO_TYPE_READWRITE) {
		c->st.drop_unknown_type++;
		return 0;
	}
	sio_core_deliver(c, type, data, len);
	return 0;
}

/* Parses the frames of an authenticated packet. A malformed frame ends the
 * packet (what came before it was already delivered) and is counted. */
void sio_core_rx_frames(sio_core *c, uint64_t now, const uint8_t *p, const uint8_t *end)
{
	int live = c->state == SIO_STATE_ESTABLISHED || c->state == SIO_STATE_CLOSING ||
		   c->state == SIO_STATE_NEGOTIATION;
	while (p < end) {
		uint8_t f = *p++, kind = f & 0x7f, last = f & SIO_FR_LAST;
		uint32_t type = SIO_TYPE_READWRITE, len;
		size_t n;
		switch (kind) {
		case SIO_FR_PAD:
			return;
		case SIO_FR_DATA:
			if (!(n = sio_varint_get32(p, end, &type)))
				goto bad;
			p += n;
			/* fall through */
		case SIO_FR_DATA_RW:
			if (last) {
				len = (uint32_t)(end - p);
			} else {
				if (!(n = sio_varint_get32(p, end, &len)))
					goto bad;
				p += n;
				if (len > (size_t)(end - p))
					goto bad;
			}
			if (live)
				deliver(c, type, p, len);
			p += len;
			break;
		case SIO_FR_ANSWER:
		case SIO_FR_KEEPALIVE:
			break;
		case SIO_FR_CLOSE:
			sio_core_close_received(c, now, 0);
			live = 0;
			break;
		case SIO_FR_CLOSE_ACK:
			sio_core_close_received(c, now, 1);
			break;
		case SIO_FR_FRAGMENT:
		case SIO_FR_PROBE:
		case SIO_FR_PROBE_ACK: /* core_msg.c */
			if (!(n = sio_core_msg_frame(c, now, kind, last != 0, p, end, live)))
				goto bad;
			p += n;
			break;
		default:
			if (kind < SIO_FR_EXT_MIN)
				goto bad;
			if (last) {
				p = end;
			} else {
				if (!(n = sio_varint_get32(p, end, &len)) || len > (size_t)(end - p - n))
					goto bad;
				p += n + len;
			}
			break;
		}
	}
	return;
bad:
	c->st.drop_malformed++;
}

static void decrypt_failed(sio_core *c)
{
	c->st.drop_decrypt++;
	c->fail_run++;
	if (c->o.error_on_decrypt_fails > 0 && c->fail_run == (uint32_t)c->o.error_on_decrypt_fails) {
		c->st.decrypt_fail_runs++;
		sio_core_error(c, SIO_EDECRYPT, "many packets in a row failed to decrypt");
	}
	if (c->o.detach_on_decrypt_fails > 0 &&
	    c->fail_run >= (uint32_t)c->o.detach_on_decrypt_fails)
		sio_core_fail(c, SIO_EDECRYPT, "too many packets in a row failed to decrypt: detached");
}

int sio_core_data_recv(sio_core *c, uint64_t now, uint8_t *pkt, size_t len)
{
	if (len < SIO_OVERHEAD) {
		c->st.drop_malformed++;
		return 0;
	}
	if (c->psk.have) {
		uint8_t mask[5];
		sio_hp_mask(mask, c->psk.hp_key, pkt + SIO_HDR_LEN);
		pkt[0] ^= mask[0] & 0x3f;
		for (int i = 0; i < 4; i++)
			pkt[1 + i] ^= mask[1 + i];
	}
	if ((pkt[0] & SIO_PKT_DATA_MASK) != SIO_PKT_DATA) {
		c->st.drop_malformed++;
		return 0;
	}
	sio_keyslot *ks = &c->keys[pkt[0] & 3];
	uint64_t pn = sio_get_le32(pkt + 1);
	if (!ks->live) {
		c->st.drop_unknown_key++;
		return 0;
	}
	switch (sio_replay_check(&ks->rp, pn)) {
	case SIO_REPLAY_DUP:
		c->st.drop_replay++;
		return 0;
	case SIO_REPLAY_OLD:
		c->st.drop_too_old++;
		return 0;
	}
	size_t clen = len - SIO_OVERHEAD;
	if (sio_aead_open(&ks->rx, pn, pkt, SIO_HDR_LEN, pkt + SIO_HDR_LEN, clen,
			  pkt + SIO_HDR_LEN + clen) != 0) {
		decrypt_failed(c);
		return 0;
	}
	c->fail_run = 0;
	/* Only a packet numbered above all before it, under the newest key that
	 * received anything, may move the peer's address (QUIC's rule): a
	 * replayed copy of a packet lost on the way is fresh for the replay
	 * window, but an observer could send it from anywhere. */
	int fresh = sio_replay_newest(&ks->rp, pn);
	for (int i = 0; fresh && i < SIO_KEY_SLOTS; i++) {
		const sio_keyslot *o = &c->keys[i];
		if (o->live && o->gen > ks->gen && o->rp.any)
			fresh = 0;
	}
	sio_replay_update(&ks->rp, pn);
	c->last_recv = now;
	c->unreach_count = 0; /* the peer is there: earlier refusals count no more */
	if (!ks->confirmed)
		sio_core_key_confirmed(c, now, ks);
	c->msg.rx_pkt_len = len;
	sio_core_rx_frames(c, now, pkt + SIO_HDR_LEN, pkt + SIO_HDR_LEN + clen);
	return fresh ? SIO_CORE_RX_DATA : SIO_CORE_RX_DATA_OLD;
}

static int recv_packet(sio_core *c, uint64_t now, uint8_t *pkt, size_t len)
{
	c->st.packets_received++;
	c->st.wire_bytes_received += len;
	if (len == 0 || len > SIO_MAX_PACKET) {
		c->st.drop_malformed++;
		return 0;
	}
	if (c->state < SIO_STATE_KEY_EXCHANGING) {
		c->st.drop_malformed++;
		return 0;
	}
	if (pkt[0] & 0x80)
		return sio_core_kx_recv(c, now, pkt, len);
	return sio_core_data_recv(c, now, pkt, len);
}

int sio_core_recv(sio_core *c, uint64_t now, uint8_t *pkt, size_t len)
{
	if (c->cb.diag)
		c->dg.now = now;
	int r = recv_packet(c, now, pkt, len);
	if (c->cb.diag)
		sio_core_diag_drops(c, now);
	return r;
}
