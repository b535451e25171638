/* XChaCha20-Poly1305 as one HChaCha20 per key + IETF ChaCha20-Poly1305 per
 * packet (see aead.h). */
#include <limits.h>
#include <sodium.h>
#include <string.h>

#include "aead.h"
#include "secureio.h"
#include "wire.h"

#ifdef SIO_HAVE_OPENSSL
#include <openssl/evp.h>
#endif

int sio_aead_uses_openssl(void)
{
#ifdef SIO_HAVE_OPENSSL
	return 1;
#else
	return 0;
#endif
}

int sio_aead_init(sio_aead *a, int encrypt)
{
	memset(a, 0, sizeof *a);
	a->encrypt = encrypt;
	return 0;
}

#ifdef SIO_HAVE_OPENSSL
/* The EVP context exists only while the key is in use: made from the
 * subkey by the first packet after setkey or after sio_aead_release() (an
 * idle session holds none: about 1 KiB each). */
static int ctx_get(sio_aead *a)
{
	if (a->evp)
		return 0;
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	if (!ctx)
		return SIO_ENOMEM;
	if (EVP_CipherInit_ex(ctx, EVP_chacha20_poly1305(), NULL, a->subkey, NULL, a->encrypt) != 1) {
		EVP_CIPHER_CTX_free(ctx);
		return SIO_ECRYPTO;
	}
	a->evp = ctx;
	return 0;
}
#endif

int sio_aead_setkey(sio_aead *a, const uint8_t key[32], const uint8_t prefix[16])
{
	if (crypto_core_hchacha20(a->subkey, prefix, key, NULL) != 0)
		return SIO_ECRYPTO;
#ifdef SIO_HAVE_OPENSSL
	if (a->evp && EVP_CipherInit_ex(a->evp, NULL, NULL, a->subkey, NULL, a->encrypt) != 1)
		return SIO_ECRYPTO;
#endif
	a->keyed = 1;
	return 0;
}

void sio_aead_release(sio_aead *a)
{
#ifdef SIO_HAVE_OPENSSL
	if (a->evp)
		EVP_CIPHER_CTX_free(a->evp); /* cleans the context (key schedule) before freeing */
#endif
	a->evp = NULL;
}

size_t sio_aead_held(const sio_aead *a)
{
	return a->evp ? SIO_AEAD_CTX_BYTES : 0;
}

void sio_aead_wipe(sio_aead *a)
{
	sodium_memzero(a->subkey, sizeof a->subkey);
	sio_aead_release(a);
	a->keyed = 0;
}

void sio_aead_free(sio_aead *a)
{
	sio_aead_wipe(a);
}

static void ietf_nonce(uint8_t n[12], uint64_t pn)
{
	memset(n, 0, 4);
	sio_put_le64(n + 4, pn);
}

int sio_aead_seal(sio_aead *a, uint64_t pn, const uint8_t *ad, size_t adlen, uint8_t *m,
		  size_t mlen, uint8_t tag[16])
{
	uint8_t n[12];
	ietf_nonce(n, pn);
#ifdef SIO_HAVE_OPENSSL
	int outl;
	if (mlen > INT_MAX || adlen > INT_MAX)
		return SIO_EINVAL;
	int r = ctx_get(a);
	if (r)
		return r;
	if (EVP_CipherInit_ex(a->evp, NULL, NULL, NULL, n, 1) != 1 ||
	    EVP_CipherUpdate(a->evp, NULL, &outl, ad, (int)adlen) != 1 ||
	    (mlen && EVP_CipherUpdate(a->evp, m, &outl, m, (int)mlen) != 1) ||
	    EVP_CipherFinal_ex(a->evp, m + mlen, &outl) != 1 ||
	    EVP_CIPHER_CTX_ctrl(a->evp, EVP_CTRL_AEAD_GET_TAG, 16, tag) != 1)
		return SIO_ECRYPTO;
	return 0;
#else
	unsigned long long tl;
	return crypto_aead_chacha20poly1305_ietf_encrypt_detached(m, tag, &tl, m, mlen, ad, adlen,
								  NULL, n, a->subkey) == 0
		       ? 0
		       : SIO_ECRYPTO;
#endif
}

int sio_aead_open(sio_aead *a, uint64_t pn, const uint8_t *ad, size_t adlen, uint8_t *c,
		  size_t clen, const uint8_t tag[16])
{
	uint8_t n[12];
	ietf_nonce(n, pn);
#ifdef SIO_HAVE_OPENSSL
	int outl;
	if (clen > INT_MAX || adlen > INT_MAX || ctx_get(a) != 0)
		return -1;
	if (EVP_CipherInit_ex(a->evp, NULL, NULL, NULL, n, 0) != 1 ||
	    EVP_CipherUpdate(a->evp, NULL, &outl, ad, (int)adlen) != 1 ||
	    (clen && EVP_CipherUpdate(a->evp, c, &outl, c, (int)clen) != 1) ||
	    EVP_CIPHER_CTX_ctrl(a->evp, EVP_CTRL_AEAD_SET_TAG, 16, (void *)tag) != 1 ||
	    EVP_CipherFinal_ex(a->evp, c + clen, &outl) <= 0)
		return -1;
	return 0;
#else
	return crypto_aead_chacha20poly1305_ietf_decrypt_detached(c, NULL, c, clen, tag, ad, adlen,
								  n, a->subkey) == 0
		       ? 0
		       : -1;
#endif
}
