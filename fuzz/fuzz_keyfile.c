/* libFuzzer target: the private key file parser (OpenSSH openssh-key-v1,
 * unencrypted and passphrase-protected; Go PEM "ED25519 PRIVATE KEY", other
 * PEM types). Each input is also parsed with the passphrase "fuzz" (bcrypt
 * capped at 2 rounds so an execution stays short; the seeds fuzz/corpus/
 * fuzz_keyfile/enc_* use 1 round and that passphrase), which reaches the
 * ciphers and the decrypted section's parser. Each input is parsed as
 * is (text) and, so that the binary openssh-key-v1 parser is reached without
 * the mutator having to keep base64 valid, also base64-armoured as an
 * OpenSSH key. Must never crash; a successful parse must yield a consistent
 * key pair, and re-encoding it must parse back to the same key. */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "identity.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void one(const uint8_t *data, size_t size)
{
	uint8_t sk[64], sk2[64], pk[32];
	int enc = 0;
	char comment[64];
	struct sio_kf_pass pw = {(const uint8_t *)"fuzz", 4, 2};
	int rc = sio_keyfile_parse_private_ex(data, size, &pw, sk, pk, &enc, comment, sizeof comment);
	if (rc == 0 && (memcmp(pk, sk + 32, 32) != 0 || strlen(comment) >= sizeof comment))
		abort();
	if (rc == 0 && enc) {
		/* an encrypted key that opened: the same key must be what an
		 * unencrypted copy of it gives */
		char *txt = NULL;
		size_t len = 0;
		if (sio_keyfile_format_private(sk, "fuzz", 9, &txt, &len) != 0 ||
		    sio_keyfile_parse_private((const uint8_t *)txt, len, sk2) != 0 ||
		    memcmp(sk, sk2, 64) != 0)
			abort();
		sio_keyfile_free_text(txt, len);
	}
	if (sio_keyfile_parse_private(data, size, sk) != 0)
		return;
	sio_identity *id = NULL;
	if (sio_identity_from_secret(&id, sk) != 0)
		return; /* a Go PEM key whose halves disagree */
	char *txt = NULL;
	size_t len = 0;
	if (sio_keyfile_format_private(sk, "fuzz", 7, &txt, &len) != 0)
		abort();
	if (sio_keyfile_parse_private((const uint8_t *)txt, len, sk2) != 0 ||
	    memcmp(sk, sk2, 64) != 0)
		abort();
	sio_keyfile_free_text(txt, len);
	sio_identity_free(id);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char begin[] = "-----BEGIN OPENSSH PRIVATE KEY-----\n";
	static const char end[] = "\n-----END OPENSSH PRIVATE KEY-----\n";
	static int init;
	if (!init) {
		if (sodium_init() < 0)
			abort();
		init = 1;
	}
	one(data, size);
	if (size > 8192)
		return 0;
	size_t b64 = sodium_base64_ENCODED_LEN(size, sodium_base64_VARIANT_ORIGINAL);
	size_t cap = sizeof begin + b64 + sizeof end;
	char *t = malloc(cap);
	if (!t)
		abort();
	memcpy(t, begin, sizeof begin - 1);
	sodium_bin2base64(t + sizeof begin - 1, b64, data, size, sodium_base64_VARIANT_ORIGINAL);
	size_t n = strlen(t);
	memcpy(t + n, end, sizeof end);
	one((const uint8_t *)t, n + sizeof end - 1);
	free(t);
	return 0;
}
