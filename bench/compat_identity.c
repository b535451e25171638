/* Stop-gap until the identity module (src/identity.c) is on main: minimal
 * weak in-memory identities and remote sets, enough for sio-bench's
 * sessions. Weak, so the library's real definitions win once linked.
 * Delete this file after the identity merge. */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "secureio.h"

struct bench_ident {
	uint8_t sk[64], pk[32];
};
struct bench_remote {
	uint8_t pk[32];
};

const uint8_t *sio_identity_secret_key(const sio_identity *id);

__attribute__((weak)) int sio_identity_from_seed(sio_identity **out, const uint8_t seed[32])
{
	struct bench_ident *b = malloc(sizeof(*b));
	if (!b)
		return SIO_ENOMEM;
	crypto_sign_seed_keypair(b->pk, b->sk, seed);
	*out = (sio_identity *)b;
	return 0;
}

__attribute__((weak)) const uint8_t *sio_identity_secret_key(const sio_identity *id)
{
	return ((const struct bench_ident *)id)->sk;
}

__attribute__((weak)) void sio_identity_public_key(const sio_identity *id, uint8_t pk[32])
{
	memcpy(pk, ((const struct bench_ident *)id)->pk, 32);
}

__attribute__((weak)) void sio_identity_free(sio_identity *id)
{
	if (id)
		sodium_memzero(id, sizeof(struct bench_ident));
	free(id);
}

__attribute__((weak)) int sio_remote_from_public_key(sio_remote **out, const uint8_t pk[32])
{
	struct bench_remote *r = malloc(sizeof(*r));
	if (!r)
		return SIO_ENOMEM;
	memcpy(r->pk, pk, 32);
	*out = (sio_remote *)r;
	return 0;
}

__attribute__((weak)) int sio_remote_contains(const sio_remote *r, const uint8_t pk[32])
{
	return sodium_memcmp(((const struct bench_remote *)r)->pk, pk, 32) == 0;
}

__attribute__((weak)) void sio_remote_free(sio_remote *r)
{
	free(r);
}
