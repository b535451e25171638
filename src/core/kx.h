/* Key-exchange messages, transcript, key derivation and PSK protection
 * (docs/PROTOCOL.md §3-§4). Pure functions: no state, no clock, no I/O. */
#ifndef SIO_KX_H
#define SIO_KX_H

#include <stddef.h>
#include <stdint.h>

#define SIO_SID_BYTES 16
#define SIO_KX_MSG_LEN 175  /* plain signed message */
#define SIO_KX_SIGNED_LEN 111 /* bytes covered by the signature (after the domain) */
#define SIO_KX_PSK_LEN (1 + 24 + SIO_KX_MSG_LEN + 16) /* PSK-wrapped message */
#define SIO_KX_WIRE_MAX SIO_KX_PSK_LEN
#define SIO_KX_VERSION 1

#define SIO_PKT_KX 0x80      /* first byte of a plain kx message */
#define SIO_PKT_KX_PSK 0x81  /* first byte of a PSK-wrapped kx message */

typedef struct sio_kx_fields {
	uint8_t sid_sender[SIO_SID_BYTES];
	uint8_t sid_receiver[SIO_SID_BYTES]; /* zeros: not known yet */
	uint32_t gen;                         /* key generation, >= 1 */
	uint8_t flags;                        /* bits 0-1: answers mode (1..3) */
	uint64_t created_ns;                  /* sender's wall clock at creation */
	uint8_t epub[32];                     /* ephemeral X25519 public key */
	uint8_t idpk[32];                     /* sender's Ed25519 public key */
} sio_kx_fields;

/* PSK-derived keys (all zero and unused without a PSK). */
typedef struct sio_psk_keys {
	int have;
	uint8_t kdf_key[32]; /* key of the traffic-key KDF */
	uint8_t kx_key[32];  /* AEAD key protecting kx messages */
	uint8_t hp_key[32];  /* header-protection key of data packets */
} sio_psk_keys;

/* Serialises F into MSG and signs it with SK (64 bytes, libsodium layout). */
void sio_kx_build(uint8_t msg[SIO_KX_MSG_LEN], const sio_kx_fields *f, const uint8_t sk[64]);

/* A signing function: a 64-byte Ed25519 signature of MSG (LEN bytes) into
 * SIG; 0 or a negative SIO_E code. */
typedef int (*sio_kx_sign_fn)(void *ctx, uint8_t sig[64], const uint8_t *msg, size_t len);

/* sio_kx_build signing through SIGN (an identity that may keep its key
 * elsewhere). Returns SIGN's result; MSG is unusable unless 0. */
int sio_kx_build_sign(uint8_t msg[SIO_KX_MSG_LEN], const sio_kx_fields *f, sio_kx_sign_fn sign,
                      void *ctx);

/* Parses the structure (no signature check). Returns 0 or -1 (bad version,
 * bad flags, generation 0). */
int sio_kx_parse(const uint8_t msg[SIO_KX_MSG_LEN], sio_kx_fields *f);

/* Verifies the signature against the embedded identity key. 0 or -1. */
int sio_kx_verify(const uint8_t msg[SIO_KX_MSG_LEN]);

/* PSK wrapping: OUT = 0x81 || nonce(24) || XChaCha20-Poly1305(kx_key, nonce,
 * MSG, ad = 0x81). Returns the length (SIO_KX_PSK_LEN). */
size_t sio_kx_wrap(uint8_t *out, const uint8_t msg[SIO_KX_MSG_LEN], const uint8_t kx_key[32],
		   const uint8_t nonce[24]);
/* Unwraps IN (LEN bytes) into MSG. 0 or -1. */
int sio_kx_unwrap(uint8_t msg[SIO_KX_MSG_LEN], const uint8_t *in, size_t len,
		  const uint8_t kx_key[32]);

/* Derives the PSK keys. */
void sio_psk_derive(sio_psk_keys *k, const uint8_t *psk, size_t len);

/* Transcript hash of the two messages of one generation; LO is the message
 * whose sender session id sorts first (memcmp). */
void sio_kx_transcript(uint8_t th[32], const uint8_t lo[SIO_KX_MSG_LEN],
		       const uint8_t hi[SIO_KX_MSG_LEN]);

/* Traffic keys from our ephemeral secret, the peer's public key and the
 * transcript: K_LO2HI protects packets sent by the lower session id.
 * KDF_KEY is NULL without a PSK. Returns 0, or -1 when the X25519 result is
 * all zero (low-order point): the message must be refused. */
int sio_kx_keys(uint8_t k_lo2hi[32], uint8_t k_hi2lo[32], const uint8_t e_sk[32],
		const uint8_t peer_epub[32], const uint8_t th[32], const uint8_t *kdf_key);

/* 1 if EPUB is a low-order X25519 point (every shared secret with it is
 * zero, whatever our secret), else 0. Needs no secret. */
int sio_kx_low_order(const uint8_t epub[32]);

/* Header-protection mask for a data packet: HChaCha20(hp_key, sample)[0..5]. */
void sio_hp_mask(uint8_t mask[5], const uint8_t hp_key[32], const uint8_t sample[16]);

#endif
