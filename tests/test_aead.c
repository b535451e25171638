/* The fast path (HChaCha20 once per key, then IETF ChaCha20-Poly1305 per
 * packet, through OpenSSL when built with it) gives exactly the bytes of
 * libsodium's crypto_aead_xchacha20poly1305_ietf, for many sizes; tampering
 * with any part is refused. */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "aead.h"
#include "check.h"
#include "wire.h"

int main(void)
{
	CHECK_OK(sodium_init() < 0);
	printf("aead via %s\n", sio_aead_uses_openssl() ? "OpenSSL EVP" : "libsodium");
	sio_aead tx, rx;
	CHECK_OK(sio_aead_init(&tx, 1));
	CHECK_OK(sio_aead_init(&rx, 0));
	uint8_t key[32], prefix[16], ad[5];
	size_t sizes[] = {0, 1, 15, 16, 17, 63, 64, 65, 255, 1431, 4096, 65514, 100000};
	uint8_t *m = malloc(100000 + 16), *ref = malloc(100000 + 16), *buf = malloc(100000 + 16);
	for (int round = 0; round < 3; round++) {
		randombytes_buf(key, sizeof key);
		randombytes_buf(prefix, sizeof prefix);
		CHECK_OK(sio_aead_setkey(&tx, key, prefix));
		CHECK_OK(sio_aead_setkey(&rx, key, prefix));
		for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
			size_t n = sizes[i];
			uint64_t pn = round == 0 ? i : round == 1 ? 0xffffffffull - i : ((uint64_t)1 << 63) + i;
			uint8_t nonce[24];
			unsigned long long rl;
			randombytes_buf(m, n);
			randombytes_buf(ad, sizeof ad);
			memcpy(nonce, prefix, 16);
			sio_put_le64(nonce + 16, pn);
			crypto_aead_xchacha20poly1305_ietf_encrypt(ref, &rl, m, n, ad, sizeof ad, NULL,
								   nonce, key);
			memcpy(buf, m, n);
			CHECK_OK(sio_aead_seal(&tx, pn, ad, sizeof ad, buf, n, buf + n));
			CHECK_EQ(rl, n + 16);
			CHECK(memcmp(buf, ref, n + 16) == 0);
			CHECK_OK(sio_aead_open(&rx, pn, ad, sizeof ad, buf, n, buf + n));
			CHECK(memcmp(buf, m, n) == 0);
			/* refusals: other pn, other ad, flipped ciphertext or tag */
			memcpy(buf, ref, n + 16);
			CHECK_EQ(sio_aead_open(&rx, pn + 1, ad, sizeof ad, buf, n, buf + n), -1);
			memcpy(buf, ref, n + 16);
			ad[0] ^= 1;
			CHECK_EQ(sio_aead_open(&rx, pn, ad, sizeof ad, buf, n, buf + n), -1);
			ad[0] ^= 1;
			memcpy(buf, ref, n + 16);
			buf[n / 2] ^= 0x80;
			CHECK_EQ(sio_aead_open(&rx, pn, ad, sizeof ad, buf, n, buf + n), -1);
			/* and the context still works after a failure */
			memcpy(buf, ref, n + 16);
			CHECK_OK(sio_aead_open(&rx, pn, ad, sizeof ad, buf, n, buf + n));
		}
	}
	sio_aead_free(&tx);
	sio_aead_free(&rx);
	free(m);
	free(ref);
	free(buf);
	return check_done("test_aead");
}
