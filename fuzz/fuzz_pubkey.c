/* libFuzzer target: public key parsing (ssh-ed25519 lines, authorized_keys
 * files with options/comments, PEM "ED25519 PUBLIC KEY"), and each from=
 * pattern list found matched against IPv4, IPv6 and IPv4-mapped addresses.
 * Must never crash; every key found must round-trip through
 * sio_public_key_line(); a from= list handed out must be valid. */
#include <arpa/inet.h>
#include <netinet/in.h>
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

static int check_from(void *ctx, const uint8_t pk[SIO_PUBLIC_KEY_BYTES], const char *from)
{
	(void)ctx;
	(void)pk;
	if (!from)
		return 0;
	if (!sio_from_list_valid(from))
		abort();
	struct sockaddr_in a4 = {.sin_family = AF_INET};
	struct sockaddr_in6 a6 = {.sin6_family = AF_INET6};
	inet_pton(AF_INET, "10.1.2.3", &a4.sin_addr);
	inet_pton(AF_INET6, "2001:db8::7", &a6.sin6_addr);
	(void)sio_from_list_match(from, (struct sockaddr *)&a4, sizeof a4);
	(void)sio_from_list_match(from, (struct sockaddr *)&a6, sizeof a6);
	inet_pton(AF_INET6, "::ffff:10.1.2.3", &a6.sin6_addr);
	(void)sio_from_list_match(from, (struct sockaddr *)&a6, sizeof a6);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sio_pk_err err;
	(void)sio_pubkey_parse_all_ex((const char *)data, size, check_from, NULL, &err);
	if (err.option[sizeof err.option - 1] != 0)
		abort();
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
