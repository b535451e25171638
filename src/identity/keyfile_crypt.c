/* Passphrase protection of OpenSSH private key files (PROTOCOL.key):
 * bcrypt_pbkdf turns the passphrase into a key and IV, one of the ciphers
 * ssh-keygen -Z offers encrypts the private section.
 *
 * The primitives come from libraries: AES (CTR, CBC, GCM) from OpenSSL's
 * EVP, the Blowfish block function from OpenSSL's libcrypto (BF_encrypt,
 * deprecated in OpenSSL 3 but exported, and needing no provider), ChaCha20
 * and Poly1305 from libsodium, SHA-512 from libsodium. What is written here
 * is the bcrypt_pbkdf construction around them (OpenBSD's "eksblowfish"
 * key expansion with a salt, the 64-fold bcrypt hash and the interleaved
 * output of the PBKDF), and OpenSSH's ChaCha20-Poly1305 arrangement. Why
 * not libssh: docs/IDENTITIES.md. */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "keyfile_crypt.h"
#include "secureio.h"

#ifdef SIO_HAVE_OPENSSL
#define OPENSSL_SUPPRESS_DEPRECATED 1 /* BF_encrypt */
#include <openssl/blowfish.h>
#include <openssl/evp.h>

#include "blowfish_pi.h"
#endif

static const struct sio_kf_cipher ciphers[] = {
    {"aes128-ctr", 16, 16, 16, 0},
    {"aes192-ctr", 24, 16, 16, 0},
    {"aes256-ctr", 32, 16, 16, 0},
    {"aes128-cbc", 16, 16, 16, 0},
    {"aes192-cbc", 24, 16, 16, 0},
    {"aes256-cbc", 32, 16, 16, 0},
    {"aes128-gcm@openssh.com", 16, 12, 16, 16},
    {"aes256-gcm@openssh.com", 32, 12, 16, 16},
    {"chacha20-poly1305@openssh.com", 64, 0, 8, 16},
};

const struct sio_kf_cipher *sio_kf_cipher_find(const uint8_t *name, size_t len)
{
	for (size_t i = 0; i < sizeof ciphers / sizeof *ciphers; i++)
		if (strlen(ciphers[i].name) == len && memcmp(ciphers[i].name, name, len) == 0)
			return &ciphers[i];
	return NULL;
}

#ifndef SIO_HAVE_OPENSSL

int sio_kf_crypt_available(void)
{
	return 0;
}

int sio_bcrypt_pbkdf(const uint8_t *pass, size_t passlen, const uint8_t *salt, size_t saltlen,
                     uint8_t *key, size_t keylen, unsigned rounds)
{
	return SIO_ECRYPTO;
}

int sio_kf_crypt(const struct sio_kf_cipher *c, int enc, const uint8_t *keyiv, const uint8_t *in,
                 uint8_t *out, size_t len, uint8_t *tag)
{
	return SIO_ECRYPTO;
}

#else

int sio_kf_crypt_available(void)
{
	return 1;
}

/* ---- bcrypt_pbkdf ------------------------------------------------------ */

/* The next 32-bit big-endian word of DATA read cyclically from *J. */
static uint32_t stream_word(const uint8_t *data, size_t len, size_t *j)
{
	uint32_t w = 0;
	for (int i = 0; i < 4; i++) {
		w = w << 8 | data[*j];
		*j = (*j + 1) % len;
	}
	return w;
}

/* Blowfish key expansion: XOR KEY into the P array, then replace P and
 * the S-boxes by the chain of block encryptions, each block first XORed
 * with the next 8 bytes of DATA (eksblowfish's salted form; with DATA NULL
 * it is Blowfish's own key schedule). */
static void bf_expand(BF_KEY *s, const uint8_t *data, size_t datalen, const uint8_t *key,
                      size_t keylen)
{
	size_t j = 0;
	for (int i = 0; i < BF_ROUNDS + 2; i++)
		s->P[i] ^= stream_word(key, keylen, &j);
	BF_LONG lr[2] = {0, 0};
	j = 0;
	for (int i = 0; i < BF_ROUNDS + 2; i += 2) {
		if (data) {
			lr[0] ^= stream_word(data, datalen, &j);
			lr[1] ^= stream_word(data, datalen, &j);
		}
		BF_encrypt(lr, s);
		s->P[i] = lr[0];
		s->P[i + 1] = lr[1];
	}
	for (int i = 0; i < 4 * 256; i += 2) {
		if (data) {
			lr[0] ^= stream_word(data, datalen, &j);
			lr[1] ^= stream_word(data, datalen, &j);
		}
		BF_encrypt(lr, s);
		s->S[i] = lr[0];
		s->S[i + 1] = lr[1];
	}
}

/* Exposed for the test that checks our pi table and expansion against
 * OpenSSL's BF_set_key: Blowfish's key schedule of KEY into S. */
void sio_kf_blowfish_schedule(void *s, const uint8_t *key, size_t keylen);
void sio_kf_blowfish_schedule(void *s, const uint8_t *key, size_t keylen)
{
	BF_KEY *k = s;
	memcpy(k->P, blowfish_pi, sizeof k->P);
	memcpy(k->S, blowfish_pi + BF_ROUNDS + 2, sizeof k->S);
	bf_expand(k, NULL, 0, key, keylen);
}

/* The bcrypt hash of bcrypt_pbkdf: 32 bytes from the SHA-512 of the
 * passphrase and of the salt. */
static void bcrypt_hash(BF_KEY *s, const uint8_t hpass[64], const uint8_t hsalt[64],
                        uint8_t out[32])
{
	static const char magic[] = "OxychromaticBlowfishSwatDynamite";
	memcpy(s->P, blowfish_pi, sizeof s->P);
	memcpy(s->S, blowfish_pi + BF_ROUNDS + 2, sizeof s->S);
	bf_expand(s, hsalt, 64, hpass, 64);
	for (int i = 0; i < 64; i++) {
		bf_expand(s, NULL, 0, hsalt, 64);
		bf_expand(s, NULL, 0, hpass, 64);
	}
	BF_LONG cdata[8];
	size_t j = 0;
	for (int i = 0; i < 8; i++)
		cdata[i] = stream_word((const uint8_t *)magic, 32, &j);
	for (int i = 0; i < 64; i++)
		for (int b = 0; b < 8; b += 2)
			BF_encrypt(cdata + b, s);
	for (int i = 0; i < 8; i++) { /* little-endian words, as OpenBSD does */
		out[4 * i + 0] = (uint8_t)cdata[i];
		out[4 * i + 1] = (uint8_t)(cdata[i] >> 8);
		out[4 * i + 2] = (uint8_t)(cdata[i] >> 16);
		out[4 * i + 3] = (uint8_t)(cdata[i] >> 24);
	}
	sodium_memzero(cdata, sizeof cdata);
}

int sio_bcrypt_pbkdf(const uint8_t *pass, size_t passlen, const uint8_t *salt, size_t saltlen,
                     uint8_t *key, size_t keylen, unsigned rounds)
{
	if (!pass || !salt || !key || passlen == 0 || saltlen == 0 || saltlen > 1024 ||
	    keylen == 0 || keylen > 32 * 32 || rounds < 1)
		return SIO_EINVAL;
	if (sodium_init() < 0)
		return SIO_ECRYPTO;
	struct work {
		BF_KEY bf;
		uint8_t hpass[64], hsalt[64], tmp[32], out[32];
		uint8_t countsalt[1024 + 4];
	} *w = sodium_malloc(sizeof *w);
	if (!w)
		return SIO_ENOMEM;
	/* Output byte i of block `count` goes to key[i * stride + count - 1]:
	 * every block contributes to the whole key, not to one slice of it. */
	size_t stride = (keylen + 31) / 32, amt = (keylen + stride - 1) / stride;
	size_t left = keylen;
	crypto_hash_sha512(w->hpass, pass, passlen);
	memcpy(w->countsalt, salt, saltlen);
	for (uint32_t count = 1; left > 0; count++) {
		w->countsalt[saltlen + 0] = (uint8_t)(count >> 24);
		w->countsalt[saltlen + 1] = (uint8_t)(count >> 16);
		w->countsalt[saltlen + 2] = (uint8_t)(count >> 8);
		w->countsalt[saltlen + 3] = (uint8_t)count;
		crypto_hash_sha512(w->hsalt, w->countsalt, saltlen + 4);
		bcrypt_hash(&w->bf, w->hpass, w->hsalt, w->tmp);
		memcpy(w->out, w->tmp, 32);
		for (unsigned r = 1; r < rounds; r++) {
			crypto_hash_sha512(w->hsalt, w->tmp, 32);
			bcrypt_hash(&w->bf, w->hpass, w->hsalt, w->tmp);
			for (int i = 0; i < 32; i++)
				w->out[i] ^= w->tmp[i];
		}
		size_t n = amt < left ? amt : left, i;
		for (i = 0; i < n; i++) {
			size_t dest = i * stride + (count - 1);
			if (dest >= keylen)
				break;
			key[dest] = w->out[i];
		}
		left -= i;
	}
	sodium_memzero(w, sizeof *w);
	sodium_free(w);
	return 0;
}

/* ---- ciphers ----------------------------------------------------------- */

static const EVP_CIPHER *evp_of(const struct sio_kf_cipher *c)
{
	const char *n = c->name;
	if (!strcmp(n, "aes128-ctr"))
		return EVP_aes_128_ctr();
	if (!strcmp(n, "aes192-ctr"))
		return EVP_aes_192_ctr();
	if (!strcmp(n, "aes256-ctr"))
		return EVP_aes_256_ctr();
	if (!strcmp(n, "aes128-cbc"))
		return EVP_aes_128_cbc();
	if (!strcmp(n, "aes192-cbc"))
		return EVP_aes_192_cbc();
	if (!strcmp(n, "aes256-cbc"))
		return EVP_aes_256_cbc();
	if (!strcmp(n, "aes128-gcm@openssh.com"))
		return EVP_aes_128_gcm();
	if (!strcmp(n, "aes256-gcm@openssh.com"))
		return EVP_aes_256_gcm();
	return NULL;
}

/* OpenSSH's chacha20-poly1305@openssh.com with sequence number 0 and no
 * length header (what a key file uses): the first 32 bytes of the key are
 * the ChaCha20 key (the other 32 would encrypt a packet length, unused
 * here); the Poly1305 key is the keystream block at counter 0 and the data
 * is encrypted from counter 1; the tag covers the ciphertext. */
static int chachapoly(int enc, const uint8_t *key, const uint8_t *in, uint8_t *out, size_t len,
                      uint8_t *tag)
{
	static const uint8_t nonce[crypto_stream_chacha20_NONCEBYTES] = {0};
	uint8_t pk[crypto_onetimeauth_poly1305_KEYBYTES];
	crypto_stream_chacha20(pk, sizeof pk, nonce, key);
	int rc = 0;
	if (!enc && crypto_onetimeauth_poly1305_verify(tag, in, len, pk) != 0)
		rc = SIO_EPASSPHRASE;
	if (rc == 0)
		crypto_stream_chacha20_xor_ic(out, in, len, nonce, 1, key);
	if (rc == 0 && enc)
		crypto_onetimeauth_poly1305(tag, out, len, pk);
	sodium_memzero(pk, sizeof pk);
	return rc;
}

int sio_kf_crypt(const struct sio_kf_cipher *c, int enc, const uint8_t *keyiv, const uint8_t *in,
                 uint8_t *out, size_t len, uint8_t *tag)
{
	if (!c || !keyiv || (len && (!in || !out)) || len % c->blocksize || len > INT32_MAX ||
	    (c->authlen && !tag))
		return SIO_EINVAL;
	if (c->keylen == 64)
		return chachapoly(enc, keyiv, in, out, len, tag);
	const EVP_CIPHER *ev = evp_of(c);
	EVP_CIPHER_CTX *x = ev ? EVP_CIPHER_CTX_new() : NULL;
	if (!x)
		return SIO_ECRYPTO;
	int rc = SIO_ECRYPTO, n = 0, f = 0;
	if (EVP_CipherInit_ex(x, ev, NULL, NULL, NULL, enc) != 1 ||
	    (c->authlen && EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_SET_IVLEN, (int)c->ivlen, NULL) != 1) ||
	    EVP_CipherInit_ex(x, NULL, NULL, keyiv, keyiv + c->keylen, enc) != 1 ||
	    EVP_CIPHER_CTX_set_padding(x, 0) != 1)
		goto out;
	if (c->authlen && !enc &&
	    EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_SET_TAG, (int)c->authlen, tag) != 1)
		goto out;
	if (EVP_CipherUpdate(x, out, &n, in, (int)len) != 1 || (size_t)n > len)
		goto out;
	if (EVP_CipherFinal_ex(x, out + n, &f) != 1) {
		/* with no padding only a tag mismatch fails here */
		rc = c->authlen && !enc ? SIO_EPASSPHRASE : SIO_ECRYPTO;
		sodium_memzero(out, len);
		goto out;
	}
	if ((size_t)n + (size_t)f != len)
		goto out;
	if (c->authlen && enc &&
	    EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_GET_TAG, (int)c->authlen, tag) != 1)
		goto out;
	rc = 0;
out:
	EVP_CIPHER_CTX_free(x);
	return rc;
}

#endif
