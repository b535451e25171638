/* libFuzzer target: the ssh-agent reply parsers (src/identity/agent.c), which read
 * what another process (the agent, or whatever listens on SSH_AUTH_SOCK)
 * sends. Each input is parsed as an identities answer, with and without a
 * wanted key, and as a sign response. Must never crash or read out of
 * bounds; a key reported found must be an Ed25519 key present in the
 * input. */
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "secureio.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int contains(const uint8_t *h, size_t hl, const uint8_t *n, size_t nl)
{
	for (size_t i = 0; i + nl <= hl; i++)
		if (memcmp(h + i, n, nl) == 0)
			return 1;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t pk[32], sig[64], want[32];
	memset(want, 0x41, sizeof want);
	int rc = sio_agent_parse_identities(data, size, NULL, pk);
	if (rc == 0 && !contains(data, size, pk, 32))
		abort();
	if (rc != 0 && rc != SIO_EAGENT && rc != SIO_EPROTO)
		abort();
	rc = sio_agent_parse_identities(data, size, want, pk);
	if (rc == 0 && memcmp(pk, want, 32) != 0)
		abort();
	rc = sio_agent_parse_sign(data, size, sig);
	if (rc == 0 && !contains(data, size, sig, 64))
		abort();
	if (rc != 0 && rc != SIO_ESIGN && rc != SIO_EPROTO)
		abort();
	return 0;
}
