/* Key-exchange messages and key schedule (docs/PROTOCOL.md §3-§4). */
#include <sodium.h>
#include <string.h>

#include "kx.h"
#include "wire.h"

static const char sig_domain[] = "secureio/1 kx signature"; /* 23 bytes, no NUL */
static const char th_domain[] = "secureio/1 transcript";
static const char key_domain[] = "secureio/1 traffic keys";
static const char psk_domain[] = "secureio/1 psk";

static int sign_with_sk(void *ctx, uint8_t sig[64], const uint8_t *m, size_t len)
{
	crypto_sign_detached(sig, NULL, m, len, ctx);
	return 0;
}

void sio_kx_build(uint8_t msg[SIO_KX_MSG_LEN], const sio_kx_fields *f, const uint8_t sk[64])
{
	(void)sio_kx_build_sign(msg, f, sign_with_sk, (void *)sk);
}

int sio_kx_build_sign(uint8_t msg[SIO_KX_MSG_LEN], const sio_kx_fields *f, sio_kx_sign_fn sign,
                      void *ctx)
{
	uint8_t signed_buf[sizeof sig_domain - 1 + SIO_KX_SIGNED_LEN];
	msg[0] = SIO_PKT_KX;
	msg[1] = SIO_KX_VERSION;
	memcpy(msg + 2, f->sid_sender, 16);
	memcpy(msg + 18, f->sid_receiver, 16);
	sio_put_le32(msg + 34, f->gen);
	msg[38] = f->flags;
	sio_put_le64(msg + 39, f->created_ns);
	memcpy(msg + 47, f->epub, 32);
	memcpy(msg + 79, f->idpk, 32);
	memcpy(signed_buf, sig_domain, sizeof sig_domain - 1);
	memcpy(signed_buf + sizeof sig_domain - 1, msg, SIO_KX_SIGNED_LEN);
	return sign(ctx, msg + SIO_KX_SIGNED_LEN, signed_buf, sizeof signed_buf);
}

int sio_kx_parse(const uint8_t msg[SIO_KX_MSG_LEN], sio_kx_fields *f)
{
	if (msg[0] != SIO_PKT_KX || msg[1] != SIO_KX_VERSION)
		return -1;
	memcpy(f->sid_sender, msg + 2, 16);
	memcpy(f->sid_receiver, msg + 18, 16);
	f->gen = sio_get_le32(msg + 34);
	f->flags = msg[38];
	f->created_ns = sio_get_le64(msg + 39);
	memcpy(f->epub, msg + 47, 32);
	memcpy(f->idpk, msg + 79, 32);
	if (f->gen == 0 || (f->flags & ~3u) || (f->flags & 3u) == 0)
		return -1;
	return 0;
}

int sio_kx_verify(const uint8_t msg[SIO_KX_MSG_LEN])
{
	uint8_t signed_buf[sizeof sig_domain - 1 + SIO_KX_SIGNED_LEN];
	memcpy(signed_buf, sig_domain, sizeof sig_domain - 1);
	memcpy(signed_buf + sizeof sig_domain - 1, msg, SIO_KX_SIGNED_LEN);
	return crypto_sign_verify_detached(msg + SIO_KX_SIGNED_LEN, signed_buf, sizeof signed_buf,
					   msg + 79) == 0
		       ? 0
		       : -1;
}

size_t sio_kx_wrap(uint8_t *out, const uint8_t msg[SIO_KX_MSG_LEN], const uint8_t kx_key[32],
		   const uint8_t nonce[24])
{
	out[0] = SIO_PKT_KX_PSK;
	memcpy(out + 1, nonce, 24);
	crypto_aead_xchacha20poly1305_ietf_encrypt_detached(out + 25, out + 25 + SIO_KX_MSG_LEN,
							    NULL, msg, SIO_KX_MSG_LEN, out, 1,
							    NULL, nonce, kx_key);
	return SIO_KX_PSK_LEN;
}

int sio_kx_unwrap(uint8_t msg[SIO_KX_MSG_LEN], const uint8_t *in, size_t len,
		  const uint8_t kx_key[32])
{
	if (len != SIO_KX_PSK_LEN || in[0] != SIO_PKT_KX_PSK)
		return -1;
	return crypto_aead_xchacha20poly1305_ietf_decrypt_detached(
		       msg, NULL, in + 25, SIO_KX_MSG_LEN, in + 25 + SIO_KX_MSG_LEN, in, 1,
		       in + 1, kx_key) == 0
		       ? 0
		       : -1;
}

void sio_psk_derive(sio_psk_keys *k, const uint8_t *psk, size_t len)
{
	uint8_t root[32];
	crypto_generichash_state st;
	crypto_generichash_init(&st, NULL, 0, 32);
	crypto_generichash_update(&st, (const uint8_t *)psk_domain, sizeof psk_domain - 1);
	crypto_generichash_update(&st, psk, len);
	crypto_generichash_final(&st, root, 32);
	crypto_kdf_derive_from_key(k->kdf_key, 32, 1, "sio1psk_", root);
	crypto_kdf_derive_from_key(k->kx_key, 32, 2, "sio1psk_", root);
	crypto_kdf_derive_from_key(k->hp_key, 32, 3, "sio1psk_", root);
	k->have = 1;
	sodium_memzero(root, sizeof root);
	sodium_memzero(&st, sizeof st);
}

void sio_kx_transcript(uint8_t th[32], const uint8_t lo[SIO_KX_MSG_LEN],
		       const uint8_t hi[SIO_KX_MSG_LEN])
{
	crypto_generichash_state st;
	crypto_generichash_init(&st, NULL, 0, 32);
	crypto_generichash_update(&st, (const uint8_t *)th_domain, sizeof th_domain - 1);
	crypto_generichash_update(&st, lo, SIO_KX_MSG_LEN);
	crypto_generichash_update(&st, hi, SIO_KX_MSG_LEN);
	crypto_generichash_final(&st, th, 32);
}

int sio_kx_keys(uint8_t k_lo2hi[32], uint8_t k_hi2lo[32], const uint8_t e_sk[32],
		const uint8_t peer_epub[32], const uint8_t th[32], const uint8_t *kdf_key)
{
	uint8_t dh[32], prk[32];
	crypto_generichash_state st;
	/* libsodium returns -1 when the result is all zero (low-order input). */
	if (crypto_scalarmult(dh, e_sk, peer_epub) != 0 || sodium_is_zero(dh, 32)) {
		sodium_memzero(dh, sizeof dh);
		return -1;
	}
	crypto_generichash_init(&st, kdf_key, kdf_key ? 32 : 0, 32);
	crypto_generichash_update(&st, (const uint8_t *)key_domain, sizeof key_domain - 1);
	crypto_generichash_update(&st, dh, 32);
	crypto_generichash_update(&st, th, 32);
	crypto_generichash_final(&st, prk, 32);
	crypto_kdf_derive_from_key(k_lo2hi, 32, 1, "sio1data", prk);
	crypto_kdf_derive_from_key(k_hi2lo, 32, 2, "sio1data", prk);
	sodium_memzero(dh, sizeof dh);
	sodium_memzero(prk, sizeof prk);
	sodium_memzero(&st, sizeof st);
	return 0;
}

int sio_kx_low_order(const uint8_t epub[32])
{
	/* X25519 clamps scalars to multiples of 8, so any scalar maps a point of
	 * order dividing 8 to the all-zero output. */
	static const uint8_t one[32] = {1};
	uint8_t out[32];
	int r = crypto_scalarmult(out, one, epub) != 0 || sodium_is_zero(out, 32);
	sodium_memzero(out, sizeof out);
	return r;
}

void sio_hp_mask(uint8_t mask[5], const uint8_t hp_key[32], const uint8_t sample[16])
{
	uint8_t out[32];
	crypto_core_hchacha20(out, sample, hp_key, NULL);
	memcpy(mask, out, 5);
	sodium_memzero(out, sizeof out);
}
