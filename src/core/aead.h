/* Packet protection: XChaCha20-Poly1305 (IETF) with a nonce made of a fixed
 * 16-byte prefix (the sender's session id) and a 64-bit packet number.
 *
 * Because the prefix is fixed per key, the XChaCha20 subkey
 * HChaCha20(key, prefix) is computed once per key; each packet is then IETF
 * ChaCha20-Poly1305 under that subkey with nonce 0x00000000 || LE64(pn),
 * through OpenSSL's EVP when SIO_HAVE_OPENSSL (faster), else libsodium. The
 * bytes are exactly those of crypto_aead_xchacha20poly1305_ietf with nonce
 * prefix || LE64(pn) (tests/test_aead.c checks it). No allocation per packet. */
#ifndef SIO_AEAD_H
#define SIO_AEAD_H

#include <stddef.h>
#include <stdint.h>

#define SIO_AEAD_KEYBYTES 32
#define SIO_AEAD_PREFIXBYTES 16
#define SIO_AEAD_TAGBYTES 16

typedef struct sio_aead {
	void *evp;          /* EVP_CIPHER_CTX when OpenSSL is used */
	uint8_t subkey[32]; /* HChaCha20(key, prefix) */
	int encrypt;
	int keyed;
} sio_aead;

/* Prepares an unkeyed context (allocates nothing: with OpenSSL the EVP
 * context is made by the first seal/open after a key was set). */
int sio_aead_init(sio_aead *a, int encrypt);
/* Installs KEY with nonce PREFIX. Returns 0 or SIO_ECRYPTO. */
int sio_aead_setkey(sio_aead *a, const uint8_t key[SIO_AEAD_KEYBYTES],
		    const uint8_t prefix[SIO_AEAD_PREFIXBYTES]);
/* Wipes the key and frees the EVP context (usable for a later setkey). */
void sio_aead_wipe(sio_aead *a);
/* Wipes and frees. */
void sio_aead_free(sio_aead *a);
/* Frees the EVP context but keeps the key: the next seal/open makes a new
 * one (an idle session, core_tx.c). */
void sio_aead_release(sio_aead *a);
/* Bytes held by the EVP context now (an estimate: what OpenSSL 3 allocates
 * for one; 0 without OpenSSL or while released). */
#define SIO_AEAD_CTX_BYTES 1032u
size_t sio_aead_held(const sio_aead *a);

/* Encrypts M in place and writes the tag. Returns 0 or SIO_ECRYPTO. */
int sio_aead_seal(sio_aead *a, uint64_t pn, const uint8_t *ad, size_t adlen, uint8_t *m,
		  size_t mlen, uint8_t tag[SIO_AEAD_TAGBYTES]);
/* Verifies and decrypts C in place. Returns 0, or -1 on authentication
 * failure (C is then garbage). */
int sio_aead_open(sio_aead *a, uint64_t pn, const uint8_t *ad, size_t adlen, uint8_t *c,
		  size_t clen, const uint8_t tag[SIO_AEAD_TAGBYTES]);

/* 1 when the OpenSSL path is compiled in. */
int sio_aead_uses_openssl(void);

#endif
