/* TEMPORARY until the identity module (src/identity.c) is merged: weak
 * minimal sio_remote functions so the core tests link. A strong definition
 * in the library wins as soon as it is linked in. Remove after the merge. */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "secureio.h"

struct sio_remote_stub {
	size_t n;
	uint8_t pk[8][32];
};

__attribute__((weak)) int sio_remote_from_public_key(sio_remote **out, const uint8_t pk[32])
{
	struct sio_remote_stub *r = calloc(1, sizeof *r);
	if (!r)
		return SIO_ENOMEM;
	memcpy(r->pk[0], pk, 32);
	r->n = 1;
	*out = (sio_remote *)r;
	return 0;
}

__attribute__((weak)) int sio_remote_contains(const sio_remote *rr, const uint8_t pk[32])
{
	const struct sio_remote_stub *r = (const struct sio_remote_stub *)rr;
	int found = 0;
	for (size_t i = 0; i < r->n; i++)
		found |= sodium_memcmp(r->pk[i], pk, 32) == 0;
	return found;
}

__attribute__((weak)) void sio_remote_free(sio_remote *r)
{
	free(r);
}
