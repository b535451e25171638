/* TEMPORARY until the identity module (src/identity.c) is merged: weak
 * in-memory identities so the session tests link. The library's strong
 * definitions win as soon as they exist. Remove after the merge. */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "secureio.h"

struct sio_identity_stub {
	uint8_t pk[32], sk[64];
};

const uint8_t *sio_identity_secret_key(const sio_identity *id);

__attribute__((weak)) int sio_identity_from_seed(sio_identity **out, const uint8_t seed[32])
{
	struct sio_identity_stub *i = calloc(1, sizeof *i);
	if (!i)
		return SIO_ENOMEM;
	crypto_sign_seed_keypair(i->pk, i->sk, seed);
	*out = (sio_identity *)i;
	return 0;
}

__attribute__((weak)) void sio_identity_free(sio_identity *id)
{
	if (id)
		sodium_memzero(id, sizeof(struct sio_identity_stub));
	free(id);
}

__attribute__((weak)) void sio_identity_public_key(const sio_identity *id, uint8_t pk[32])
{
	memcpy(pk, ((const struct sio_identity_stub *)id)->pk, 32);
}

__attribute__((weak)) const uint8_t *sio_identity_secret_key(const sio_identity *id)
{
	return ((const struct sio_identity_stub *)id)->sk;
}
