/* libFuzzer target: the private key file parser (OpenSSH openssh-key-v1,
 * Go PEM "ED25519 PRIVATE KEY", other PEM types). Must never crash; a
 * successful parse must yield a consistent key pair, and re-encoding it must
 * parse back to the same key. */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "identity.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int init;
	if (!init) {
		if (sodium_init() < 0)
			abort();
		init = 1;
	}
	uint8_t sk[64], sk2[64];
	if (sio_keyfile_parse_private(data, size, sk) != 0)
		return 0;
	sio_identity *id = NULL;
	if (sio_identity_from_secret(&id, sk) != 0)
		return 0; /* a Go PEM key whose halves disagree */
	char *txt = NULL;
	size_t len = 0;
	if (sio_keyfile_format_private(sk, "fuzz", 7, &txt, &len) != 0)
		abort();
	if (sio_keyfile_parse_private((const uint8_t *)txt, len, sk2) != 0 ||
	    memcmp(sk, sk2, 64) != 0)
		abort();
	sio_keyfile_free_text(txt, len);
	sio_identity_free(id);
	return 0;
}
