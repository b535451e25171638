/* libFuzzer target: public key parsing (ssh-ed25519 lines, authorized_keys
 * files with options/comments, PEM "ED25519 PUBLIC KEY"). Must never crash;
 * every key found must round-trip through sio_public_key_line(). */
#include <stdlib.h>
#include <string.h>

#include "identity.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int check_key(void *ctx, const uint8_t pk[SIO_PUBLIC_KEY_BYTES])
{
	char line[SIO_PUBKEY_LINE_MAX], fp[SIO_FINGERPRINT_MAX];
	uint8_t back[SIO_PUBLIC_KEY_BYTES];
	size_t *n = ctx;
	(*n)++;
	if (sio_public_key_line(pk, "c", line, sizeof line) != 0 ||
	    sio_public_key_parse(line, strlen(line), back) != 0 || memcmp(pk, back, 32) != 0 ||
	    sio_fingerprint(pk, fp, sizeof fp) != 0)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t n = 0;
	int all = sio_pubkey_parse_all((const char *)data, size, check_key, &n);
	if (all > 0 && (size_t)all != n)
		abort();
	uint8_t pk[SIO_PUBLIC_KEY_BYTES];
	int one = sio_public_key_parse((const char *)data, size, pk);
	if ((one == 0) != (all > 0))
		abort();
	return 0;
}
