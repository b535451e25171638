/* Key-holding forger (see forge.h). */
#include <sodium.h>
#include <string.h>

#include "aead.h"
#include "forge.h"
#include "kx.h"
#include "wire.h"

void forge_init(forge *g, const uint8_t sk[64], const uint8_t *psk, size_t psk_len)
{
	memset(g, 0, sizeof *g);
	memcpy(g->sk, sk, 64);
	memcpy(g->pk, sk + 32, 32);
	if (psk && psk_len <= sizeof g->psk) {
		memcpy(g->psk, psk, psk_len);
		g->psk_len = psk_len;
	}
}

void forge_wipe(forge *g)
{
	sodium_memzero(g, sizeof *g);
}

static void rnd(forge *g, uint8_t *buf, size_t len)
{
	if (g->random)
		g->random(g->rctx, buf, len);
	else
		randombytes_buf(buf, len);
}

static int open_kx(const forge *g, const uint8_t *d, size_t len, uint8_t m[SIO_KX_MSG_LEN])
{
	if (g->psk_len) {
		sio_psk_keys k;
		sio_psk_derive(&k, g->psk, g->psk_len);
		int r = len && d[0] == SIO_PKT_KX_PSK ? sio_kx_unwrap(m, d, len, k.kx_key) : -1;
		sodium_memzero(&k, sizeof k);
		return r;
	}
	if (len != SIO_KX_MSG_LEN || d[0] != SIO_PKT_KX)
		return -1;
	memcpy(m, d, SIO_KX_MSG_LEN);
	return 0;
}

/* Seals a data packet as the sender of slot S would, under the keys S and
 * the victim's reply M agree. */
static size_t seal_data(forge *g, const forge_slot *s, const uint8_t m[SIO_KX_MSG_LEN],
			const uint8_t *victim_epub, uint8_t *pkt)
{
	uint8_t th[32], klo[32], khi[32];
	int s_lo = memcmp(s->sid, g->victim_sid, 16) < 0;
	size_t body = 1 + 12, n = 0;
	sio_psk_keys k;
	sio_aead ae;
	memset(&k, 0, sizeof k);
	if (g->psk_len)
		sio_psk_derive(&k, g->psk, g->psk_len);
	sio_kx_transcript(th, s_lo ? s->msg : m, s_lo ? m : s->msg);
	if (sio_kx_keys(klo, khi, s->e_sk, victim_epub, th, g->psk_len ? k.kdf_key : NULL) != 0 ||
	    sio_aead_init(&ae, 1) != 0)
		goto out;
	if (sio_aead_setkey(&ae, s_lo ? klo : khi, s->sid) == 0) {
		uint32_t pn = ++g->pn;
		pkt[0] = (uint8_t)(0x40 | (s->gen & 3));
		sio_put_le32(pkt + 1, pn);
		pkt[5] = 0x81; /* DATA_RW, last frame */
		memcpy(pkt + 6, FORGE_MARK "forgedmsg", 12);
		if (sio_aead_seal(&ae, pn, pkt, 5, pkt + 5, body, pkt + 5 + body) == 0) {
			if (g->psk_len) {
				uint8_t mask[5];
				sio_hp_mask(mask, k.hp_key, pkt + 5);
				pkt[0] ^= mask[0] & 0x3f;
				for (int i = 0; i < 4; i++)
					pkt[1 + i] ^= mask[1 + i];
			}
			n = 5 + body + 16;
			g->data_made++;
		}
	}
	sio_aead_free(&ae);
out:
	sodium_memzero(klo, sizeof klo);
	sodium_memzero(khi, sizeof khi);
	sodium_memzero(&k, sizeof k);
	return n;
}

size_t forge_observe(forge *g, int from_victim, const uint8_t *pkt, size_t len,
		     uint8_t out[FORGE_DATA_LEN])
{
	uint8_t m[SIO_KX_MSG_LEN];
	sio_kx_fields f;
	if (open_kx(g, pkt, len, m) != 0 || sio_kx_parse(m, &f) != 0)
		return 0;
	if (!from_victim) {
		memcpy(g->honest_sid, f.sid_sender, 16);
		g->have_honest = 1;
		return 0;
	}
	memcpy(g->victim_sid, f.sid_sender, 16);
	g->have_victim = 1;
	g->victim_gen = f.gen;
	g->victim_flags = f.flags & 3;
	for (unsigned i = 0; i < g->nslots; i++) {
		forge_slot *s = &g->slot[i];
		if (!s->used && s->gen == f.gen && memcmp(f.sid_receiver, s->sid, 16) == 0) {
			s->used = 1;
			return seal_data(g, s, m, f.epub, out);
		}
	}
	return 0;
}

size_t forge_kx(forge *g, int variant, uint64_t wall_ns, uint8_t out[FORGE_KX_MAX])
{
	if (!g->have_honest || !g->have_victim)
		return 0;
	forge_slot *s = &g->slot[g->forged % FORGE_SLOTS];
	sio_kx_fields f;
	memset(&f, 0, sizeof f);
	memset(s, 0, sizeof *s);
	memcpy(s->sid, g->honest_sid, 16);
	switch (variant) {
	case FORGE_NEXT_GEN:
		s->gen = g->victim_gen + 1;
		break;
	case FORGE_SAME_GEN:
		s->gen = g->victim_gen;
		break;
	default: /* a newer session of the honest peer */
		s->gen = 1;
		sio_put_le64(s->sid, sio_get_le64(g->honest_sid) + 1000);
		rnd(g, s->sid + 8, 8);
		break;
	}
	memcpy(f.sid_sender, s->sid, 16);
	memcpy(f.sid_receiver, g->victim_sid, 16);
	f.gen = s->gen;
	f.flags = g->victim_flags;
	f.created_ns = wall_ns;
	rnd(g, s->e_sk, 32);
	crypto_scalarmult_base(f.epub, s->e_sk);
	memcpy(f.idpk, g->pk, 32);
	sio_kx_build(s->msg, &f, g->sk);
	size_t n = SIO_KX_MSG_LEN;
	if (g->psk_len) {
		sio_psk_keys k;
		uint8_t nonce[24];
		sio_psk_derive(&k, g->psk, g->psk_len);
		rnd(g, nonce, sizeof nonce);
		n = sio_kx_wrap(out, s->msg, k.kx_key, nonce);
		sodium_memzero(&k, sizeof k);
	} else {
		memcpy(out, s->msg, n);
	}
	if (g->nslots < FORGE_SLOTS)
		g->nslots++;
	g->forged++;
	return n;
}
