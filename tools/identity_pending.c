/* TEMPORARY, DELETE WHEN THE IDENTITY MODULE IS MERGED.
 *
 * The identity module (issue 2: OpenSSH/PEM key files, src/identity.c) has
 * not landed yet, so libsecureio lacks the sio_identity_* / sio_remote_* /
 * sio_fingerprint / sio_public_key_line functions that `sio` and the session
 * layer call. These weak stand-ins let `sio` link and run meanwhile. They
 * are NOT the real thing: a key file here is one text line
 * "sio-temporary-seed HEX" (never an OpenSSH key), and any other existing key
 * file is refused rather than read or overwritten.
 *
 * Weak definitions in the program would keep the linker from taking the real
 * module out of the static library, so this file refuses to compile once
 * src/identity.c exists: delete it then. */
#if defined(__has_include)
#if __has_include("../src/identity.c") || __has_include("../src/keyfile.c")
#error "the identity module has landed: delete tools/identity_pending.c"
#endif
#endif

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "secureio.h"

#define WEAK  __attribute__((weak))
#define MAGIC "sio-temporary-seed "

struct pending_id {
	uint8_t pk[32], sk[64];
};
struct pending_remote {
	size_t n;
	uint8_t pk[16][32];
};

const uint8_t *sio_identity_secret_key(const sio_identity *id);

WEAK int sio_identity_from_seed(sio_identity **out, const uint8_t seed[32])
{
	struct pending_id *i = calloc(1, sizeof *i);
	if (!i)
		return SIO_ENOMEM;
	crypto_sign_seed_keypair(i->pk, i->sk, seed);
	*out = (sio_identity *)i;
	return 0;
}

WEAK void sio_identity_free(sio_identity *id)
{
	if (id)
		sodium_memzero(id, sizeof(struct pending_id));
	free(id);
}

WEAK void sio_identity_public_key(const sio_identity *id, uint8_t pk[32])
{
	memcpy(pk, ((const struct pending_id *)id)->pk, 32);
}

WEAK const uint8_t *sio_identity_secret_key(const sio_identity *id)
{
	return ((const struct pending_id *)id)->sk;
}

WEAK int sio_identity_load(sio_identity **out, const char *path)
{
	struct stat st;
	if (stat(path, &st) != 0)
		return errno == ENOENT ? SIO_ENOENT : SIO_EIO;
	if (st.st_mode & 077)
		return SIO_EPERM;
	FILE *f = fopen(path, "r");
	if (!f)
		return SIO_EIO;
	char line[128] = "";
	int ok = fgets(line, sizeof line, f) != NULL;
	fclose(f);
	uint8_t seed[32];
	size_t n = 0;
	if (!ok || strncmp(line, MAGIC, strlen(MAGIC)) != 0 ||
	    sodium_hex2bin(seed, 32, line + strlen(MAGIC), 64, NULL, &n, NULL) != 0 || n != 32)
		return SIO_EFORMAT;
	int rc = sio_identity_from_seed(out, seed);
	sodium_memzero(seed, sizeof seed);
	sodium_memzero(line, sizeof line);
	return rc;
}

static size_t ssh_blob(const uint8_t pk[32], uint8_t b[51])
{
	memcpy(b, "\0\0\0\x0bssh-ed25519\0\0\0\x20", 19);
	memcpy(b + 19, pk, 32);
	return 51;
}

WEAK int sio_public_key_line(const uint8_t pk[32], const char *comment, char *out, size_t outlen)
{
	uint8_t b[51];
	char b64[96];
	sodium_bin2base64(b64, sizeof b64, b, ssh_blob(pk, b), sodium_base64_VARIANT_ORIGINAL);
	int n = snprintf(out, outlen, "ssh-ed25519 %s%s%s", b64, comment ? " " : "",
	                 comment ? comment : "");
	return n < 0 || (size_t)n >= outlen ? SIO_EINVAL : 0;
}

WEAK int sio_fingerprint(const uint8_t pk[32], char *out, size_t outlen)
{
	uint8_t b[51], h[32];
	char b64[64];
	crypto_hash_sha256(h, b, ssh_blob(pk, b));
	sodium_bin2base64(b64, sizeof b64, h, 32, sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
	int n = snprintf(out, outlen, "SHA256:%s", b64);
	return n < 0 || (size_t)n >= outlen ? SIO_EINVAL : 0;
}

WEAK int sio_identity_from_dir(sio_identity **out, const char *dir)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/id_ed25519", dir);
	int rc = sio_identity_load(out, path);
	if (rc != SIO_ENOENT)
		return rc;
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return SIO_EIO;
	uint8_t seed[32];
	char hex[65];
	randombytes_buf(seed, sizeof seed);
	sodium_bin2hex(hex, sizeof hex, seed, sizeof seed);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return errno == EEXIST ? SIO_EEXIST : SIO_EIO;
	FILE *f = fdopen(fd, "w");
	fprintf(f, MAGIC "%s\n", hex);
	fclose(f);
	sodium_memzero(hex, sizeof hex);
	rc = sio_identity_from_seed(out, seed);
	sodium_memzero(seed, sizeof seed);
	if (rc)
		return rc;
	char line[SIO_PUBKEY_LINE_MAX];
	uint8_t pk[32];
	sio_identity_public_key(*out, pk);
	sio_public_key_line(pk, NULL, line, sizeof line);
	snprintf(path, sizeof path, "%s/id_ed25519.pub", dir);
	f = fopen(path, "wx");
	if (f) {
		fprintf(f, "%s\n", line);
		fclose(f);
	}
	return 0;
}

WEAK int sio_remote_from_public_key(sio_remote **out, const uint8_t pk[32])
{
	struct pending_remote *r = calloc(1, sizeof *r);
	if (!r)
		return SIO_ENOMEM;
	memcpy(r->pk[0], pk, 32);
	r->n = 1;
	*out = (sio_remote *)r;
	return 0;
}

WEAK int sio_remote_load(sio_remote **out, const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return errno == ENOENT ? SIO_ENOENT : SIO_EIO;
	struct pending_remote *r = calloc(1, sizeof *r);
	if (!r) {
		fclose(f);
		return SIO_ENOMEM;
	}
	char line[1024];
	while (fgets(line, sizeof line, f)) {
		char *s = strstr(line, "ssh-ed25519 ");
		if (!s)
			continue;
		s += strlen("ssh-ed25519 ");
		size_t l = strcspn(s, " \t\r\n");
		uint8_t b[64];
		size_t bl = 0;
		if (sodium_base642bin(b, sizeof b, s, l, NULL, &bl, NULL,
		                      sodium_base64_VARIANT_ORIGINAL) != 0 ||
		    bl != 51 || memcmp(b, "\0\0\0\x0bssh-ed25519\0\0\0\x20", 19) != 0)
			continue;
		if (r->n < 16)
			memcpy(r->pk[r->n++], b + 19, 32);
	}
	fclose(f);
	if (!r->n) {
		free(r);
		return SIO_EFORMAT;
	}
	*out = (sio_remote *)r;
	return 0;
}

WEAK int sio_remote_contains(const sio_remote *rr, const uint8_t pk[32])
{
	const struct pending_remote *r = (const struct pending_remote *)rr;
	int found = 0;
	for (size_t i = 0; i < r->n; i++)
		found |= sodium_memcmp(r->pk[i], pk, 32) == 0;
	return found;
}

WEAK size_t sio_remote_count(const sio_remote *r)
{
	return r ? ((const struct pending_remote *)r)->n : 0;
}

WEAK int sio_remote_key(const sio_remote *rr, size_t i, uint8_t pk[32])
{
	const struct pending_remote *r = (const struct pending_remote *)rr;
	if (i >= r->n)
		return SIO_EINVAL;
	memcpy(pk, r->pk[i], 32);
	return 0;
}

WEAK void sio_remote_free(sio_remote *r)
{
	free(r);
}
