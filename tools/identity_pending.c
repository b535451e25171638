/* TEMPORARY, DELETE WHEN THE IDENTITY MODULE IS MERGED.
 *
 * The identity module (issue 2: src/identity.c) has not landed yet, so
 * libsecureio lacks the sio_identity_* / sio_remote_* / sio_fingerprint /
 * sio_public_key_line functions that `sio` and the session layer call. This
 * file gives `sio` weak versions of the ones it uses meanwhile, reading and
 * writing the real formats so that `sio` works with the keys people have:
 *  - private keys: OpenSSH "openssh-key-v1" (unencrypted Ed25519; the format
 *    of OpenSSH's PROTOCOL.key), and PEM "ED25519 PRIVATE KEY" (64 bytes, the
 *    Go library's); written: OpenSSH, 0600, atomically, never overwriting;
 *  - public keys: "ssh-ed25519 BASE64 [comment]" lines (authorized_keys style,
 *    options prefix allowed, other key types skipped) and PEM
 *    "ED25519 PUBLIC KEY" (32 bytes).
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

#define WEAK     __attribute__((weak))
#define MAX_FILE (64 * 1024)
#define MAX_KEYS 64

struct pending_id {
	uint8_t pk[32], sk[64];
};
struct pending_remote {
	size_t n;
	uint8_t pk[MAX_KEYS][32];
};

const uint8_t *sio_identity_secret_key(const sio_identity *id);

/* ---- small helpers ---------------------------------------------------- */

/* Reads a whole (small) file; *mode gets its permission bits. */
static int read_file(const char *path, char **out, size_t *len, mode_t *mode)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? SIO_ENOENT : SIO_EIO;
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > MAX_FILE) {
		close(fd);
		return S_ISREG(st.st_mode) ? SIO_EFORMAT : SIO_EIO;
	}
	char *buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		return SIO_ENOMEM;
	}
	size_t n = 0;
	while (n < (size_t)st.st_size) {
		ssize_t k = read(fd, buf + n, (size_t)st.st_size - n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		n += (size_t)k;
	}
	close(fd);
	buf[n] = '\0';
	*out = buf;
	*len = n;
	if (mode)
		*mode = st.st_mode;
	return 0;
}

static void free_secret(char *buf, size_t len)
{
	if (buf)
		sodium_memzero(buf, len);
	free(buf);
}

/* Decodes the base64 body of the PEM block LABEL in TEXT into OUT. */
static int pem_body(const char *text, const char *label, uint8_t *out, size_t cap, size_t *outlen)
{
	char begin[64], end[64];
	snprintf(begin, sizeof begin, "-----BEGIN %s-----", label);
	snprintf(end, sizeof end, "-----END %s-----", label);
	const char *b = strstr(text, begin);
	if (!b)
		return SIO_ENOENT;
	b += strlen(begin);
	const char *e = strstr(b, end);
	if (!e)
		return SIO_EFORMAT;
	if (sodium_base642bin(out, cap, b, (size_t)(e - b), " \t\r\n", outlen, NULL,
	                      sodium_base64_VARIANT_ORIGINAL) != 0)
		return SIO_EFORMAT;
	return 0;
}

/* SSH wire reader */
struct rd {
	const uint8_t *p;
	size_t n;
};

static int rd_u32(struct rd *r, uint32_t *v)
{
	if (r->n < 4)
		return -1;
	*v = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 | (uint32_t)r->p[2] << 8 | r->p[3];
	r->p += 4;
	r->n -= 4;
	return 0;
}

static int rd_str(struct rd *r, const uint8_t **s, uint32_t *len)
{
	if (rd_u32(r, len) || *len > r->n)
		return -1;
	*s = r->p;
	r->p += *len;
	r->n -= *len;
	return 0;
}

static int str_is(const uint8_t *s, uint32_t len, const char *lit)
{
	return len == strlen(lit) && memcmp(s, lit, len) == 0;
}

static void wr_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static size_t wr_str(uint8_t *p, const void *s, uint32_t len)
{
	wr_u32(p, len);
	memcpy(p + 4, s, len);
	return 4 + (size_t)len;
}

static size_t ssh_pub_blob(const uint8_t pk[32], uint8_t b[51])
{
	size_t n = wr_str(b, "ssh-ed25519", 11);
	return n + wr_str(b + n, pk, 32);
}

/* Parses an SSH public-key blob: SIO_EKEYTYPE if not Ed25519. */
static int parse_pub_blob(const uint8_t *b, size_t len, uint8_t pk[32])
{
	struct rd r = {b, len};
	const uint8_t *t, *k;
	uint32_t tl, kl;
	if (rd_str(&r, &t, &tl))
		return SIO_EFORMAT;
	if (!str_is(t, tl, "ssh-ed25519"))
		return SIO_EKEYTYPE;
	if (rd_str(&r, &k, &kl) || kl != 32 || r.n != 0)
		return SIO_EFORMAT;
	memcpy(pk, k, 32);
	return 0;
}

/* ---- identities --------------------------------------------------------- */

WEAK int sio_identity_from_seed(sio_identity **out, const uint8_t seed[32])
{
	struct pending_id *i = sodium_malloc(sizeof *i);
	if (!i)
		return SIO_ENOMEM;
	crypto_sign_seed_keypair(i->pk, i->sk, seed);
	*out = (sio_identity *)i;
	return 0;
}

WEAK void sio_identity_free(sio_identity *id)
{
	if (id)
		sodium_free(id); /* wipes */
}

WEAK void sio_identity_public_key(const sio_identity *id, uint8_t pk[32])
{
	memcpy(pk, ((const struct pending_id *)id)->pk, 32);
}

WEAK const uint8_t *sio_identity_secret_key(const sio_identity *id)
{
	return ((const struct pending_id *)id)->sk;
}

/* A 64-byte libsodium secret key (seed || public) to an identity, checked. */
static int from_sk64(sio_identity **out, const uint8_t sk[64], const uint8_t *pk_claimed)
{
	int rc = sio_identity_from_seed(out, sk);
	if (rc)
		return rc;
	const struct pending_id *i = (const struct pending_id *)*out;
	if (sodium_memcmp(i->pk, sk + 32, 32) != 0 ||
	    (pk_claimed && sodium_memcmp(i->pk, pk_claimed, 32) != 0)) {
		sio_identity_free(*out);
		*out = NULL;
		return SIO_EMISMATCH;
	}
	return 0;
}

static int parse_openssh(sio_identity **out, const uint8_t *b, size_t len)
{
	static const char magic[] = "openssh-key-v1";
	if (len < sizeof magic || memcmp(b, magic, sizeof magic) != 0)
		return SIO_EFORMAT;
	struct rd r = {b + sizeof magic, len - sizeof magic};
	const uint8_t *cipher, *kdf, *kdfopt, *pub, *priv;
	uint32_t cl, kl, kol, nkeys, publ, privl;
	if (rd_str(&r, &cipher, &cl) || rd_str(&r, &kdf, &kl) || rd_str(&r, &kdfopt, &kol) ||
	    rd_u32(&r, &nkeys))
		return SIO_EFORMAT;
	if (!str_is(cipher, cl, "none") || !str_is(kdf, kl, "none"))
		return SIO_EENCRYPTED;
	if (nkeys != 1 || rd_str(&r, &pub, &publ))
		return SIO_EFORMAT;
	uint8_t pk[32];
	int rc = parse_pub_blob(pub, publ, pk);
	if (rc)
		return rc;
	if (rd_str(&r, &priv, &privl) || privl % 8 != 0)
		return SIO_EFORMAT;
	struct rd p = {priv, privl};
	uint32_t c1, c2, tl, pl, sl, coml;
	const uint8_t *t, *ppk, *sk, *com;
	if (rd_u32(&p, &c1) || rd_u32(&p, &c2) || c1 != c2 || rd_str(&p, &t, &tl) ||
	    !str_is(t, tl, "ssh-ed25519") || rd_str(&p, &ppk, &pl) || pl != 32 ||
	    rd_str(&p, &sk, &sl) || sl != 64 || rd_str(&p, &com, &coml))
		return SIO_EFORMAT;
	for (size_t i = 0; i < p.n; i++) /* padding 1, 2, 3, ... */
		if (p.p[i] != (uint8_t)(i + 1))
			return SIO_EFORMAT;
	if (sodium_memcmp(ppk, pk, 32) != 0)
		return SIO_EMISMATCH;
	return from_sk64(out, sk, pk);
}

WEAK int sio_identity_load(sio_identity **out, const char *path)
{
	char *text = NULL;
	size_t len = 0;
	mode_t mode = 0;
	int rc = read_file(path, &text, &len, &mode);
	if (rc)
		return rc;
	if (mode & 077) {
		free_secret(text, len);
		return SIO_EPERM;
	}
	uint8_t *bin = sodium_malloc(len + 1);
	if (!bin) {
		free_secret(text, len);
		return SIO_ENOMEM;
	}
	size_t binlen = 0;
	rc = pem_body(text, "OPENSSH PRIVATE KEY", bin, len + 1, &binlen);
	if (rc == 0) {
		rc = parse_openssh(out, bin, binlen);
	} else if (rc == SIO_ENOENT) {
		rc = pem_body(text, "ED25519 PRIVATE KEY", bin, len + 1, &binlen);
		if (rc == 0)
			rc = binlen == 64 ? from_sk64(out, bin, NULL) : SIO_EFORMAT;
		else if (rc == SIO_ENOENT)
			rc = strstr(text, "PRIVATE KEY-----") ? SIO_EKEYTYPE : SIO_EFORMAT;
	}
	sodium_free(bin);
	free_secret(text, len);
	return rc;
}

WEAK int sio_public_key_line(const uint8_t pk[32], const char *comment, char *out, size_t outlen)
{
	uint8_t b[51];
	char b64[96];
	sodium_bin2base64(b64, sizeof b64, b, ssh_pub_blob(pk, b), sodium_base64_VARIANT_ORIGINAL);
	int n = snprintf(out, outlen, "ssh-ed25519 %s%s%s", b64, comment && *comment ? " " : "",
	                 comment ? comment : "");
	return n < 0 || (size_t)n >= outlen ? SIO_EINVAL : 0;
}

WEAK int sio_fingerprint(const uint8_t pk[32], char *out, size_t outlen)
{
	uint8_t b[51], h[32];
	char b64[64];
	crypto_hash_sha256(h, b, ssh_pub_blob(pk, b));
	sodium_bin2base64(b64, sizeof b64, h, 32, sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
	int n = snprintf(out, outlen, "SHA256:%s", b64);
	return n < 0 || (size_t)n >= outlen ? SIO_EINVAL : 0;
}

/* Writes DATA to PATH atomically (temporary file, then link: never replaces
 * an existing file). */
static int write_new(const char *path, const void *data, size_t len, mode_t mode)
{
	char tmp[4200];
	snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0)
		return SIO_EIO;
	int ok = write(fd, data, len) == (ssize_t)len && fsync(fd) == 0;
	ok &= close(fd) == 0;
	int rc = !ok ? SIO_EIO : link(tmp, path) == 0 ? 0 : errno == EEXIST ? SIO_EEXIST : SIO_EIO;
	unlink(tmp);
	return rc;
}

static int save_openssh(const struct pending_id *id, const char *path, const char *comment)
{
	uint8_t pub[51], priv[512], bin[1024];
	size_t publ = ssh_pub_blob(id->pk, pub), n = 0, cl = strlen(comment);
	if (cl > 200)
		cl = 200;
	uint32_t check;
	randombytes_buf(&check, sizeof check);
	wr_u32(priv, check);
	wr_u32(priv + 4, check);
	n = 8;
	n += wr_str(priv + n, "ssh-ed25519", 11);
	n += wr_str(priv + n, id->pk, 32);
	n += wr_str(priv + n, id->sk, 64);
	n += wr_str(priv + n, comment, (uint32_t)cl);
	for (uint8_t pad = 1; n % 8; pad++)
		priv[n++] = pad;
	size_t m = 0;
	memcpy(bin, "openssh-key-v1", 15);
	m = 15;
	m += wr_str(bin + m, "none", 4);
	m += wr_str(bin + m, "none", 4);
	m += wr_str(bin + m, "", 0);
	wr_u32(bin + m, 1);
	m += 4;
	m += wr_str(bin + m, pub, (uint32_t)publ);
	m += wr_str(bin + m, priv, (uint32_t)n);
	sodium_memzero(priv, sizeof priv);
	char b64[1500], text[1700];
	sodium_bin2base64(b64, sizeof b64, bin, m, sodium_base64_VARIANT_ORIGINAL);
	sodium_memzero(bin, sizeof bin);
	size_t t = (size_t)snprintf(text, sizeof text, "-----BEGIN OPENSSH PRIVATE KEY-----\n");
	for (size_t i = 0, bl = strlen(b64); i < bl; i += 70)
		t += (size_t)snprintf(text + t, sizeof text - t, "%.70s\n", b64 + i);
	t += (size_t)snprintf(text + t, sizeof text - t, "-----END OPENSSH PRIVATE KEY-----\n");
	int rc = write_new(path, text, t, 0600);
	sodium_memzero(b64, sizeof b64);
	sodium_memzero(text, sizeof text);
	return rc;
}

static int load_public_file(sio_remote **out, const char *path);

WEAK int sio_identity_from_dir(sio_identity **out, const char *dir)
{
	char path[4096], pubpath[4200];
	snprintf(path, sizeof path, "%s/id_ed25519", dir);
	snprintf(pubpath, sizeof pubpath, "%s.pub", path);
	int rc = sio_identity_load(out, path);
	if (rc == 0) {
		sio_remote *pub = NULL;
		if (load_public_file(&pub, pubpath) == 0) {
			uint8_t pk[32];
			sio_identity_public_key(*out, pk);
			int same = sio_remote_contains(pub, pk);
			sio_remote_free(pub);
			if (!same) {
				sio_identity_free(*out);
				*out = NULL;
				return SIO_EMISMATCH;
			}
		}
		return 0;
	}
	if (rc != SIO_ENOENT)
		return rc;
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return SIO_EIO;
	uint8_t seed[32];
	randombytes_buf(seed, sizeof seed);
	rc = sio_identity_from_seed(out, seed);
	sodium_memzero(seed, sizeof seed);
	if (rc)
		return rc;
	char host[256] = "localhost", comment[300];
	gethostname(host, sizeof host - 1);
	const char *user = getenv("USER");
	snprintf(comment, sizeof comment, "%s@%s", user && *user ? user : "sio", host);
	rc = save_openssh((const struct pending_id *)*out, path, comment);
	if (rc == 0) {
		char line[SIO_PUBKEY_LINE_MAX + 300];
		uint8_t pk[32];
		sio_identity_public_key(*out, pk);
		sio_public_key_line(pk, comment, line, sizeof line);
		strcat(line, "\n");
		int prc = write_new(pubpath, line, strlen(line), 0644);
		if (prc && prc != SIO_EEXIST)
			rc = prc;
	}
	if (rc) {
		sio_identity_free(*out);
		*out = NULL;
	}
	return rc;
}

/* ---- remote sets -------------------------------------------------------- */

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

/* Every "ssh-ed25519 BASE64" key of TEXT (authorized_keys lines, options
 * prefix allowed), or a PEM "ED25519 PUBLIC KEY" block. */
static int parse_public_text(struct pending_remote *r, char *text, size_t len)
{
	uint8_t b[128];
	size_t bl = 0;
	int rc = pem_body(text, "ED25519 PUBLIC KEY", b, sizeof b, &bl);
	if (rc == 0) {
		if (bl != 32)
			return SIO_EFORMAT;
		memcpy(r->pk[r->n++], b, 32);
		return 0;
	}
	int other = 0;
	for (char *line = text, *next; line && line < text + len; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		while (*line == ' ' || *line == '\t')
			line++;
		if (*line == '#' || *line == '\0' || *line == '\r')
			continue;
		char *k = strstr(line, "ssh-ed25519 ");
		if (!k) {
			other = 1;
			continue;
		}
		k += strlen("ssh-ed25519 ");
		size_t kl = strcspn(k, " \t\r");
		uint8_t pk[32];
		if (sodium_base642bin(b, sizeof b, k, kl, NULL, &bl, NULL,
		                      sodium_base64_VARIANT_ORIGINAL) != 0 ||
		    parse_pub_blob(b, bl, pk) != 0)
			return SIO_EFORMAT;
		if (r->n < MAX_KEYS)
			memcpy(r->pk[r->n++], pk, 32);
	}
	if (r->n == 0)
		return other && strstr(text, "ssh-") ? SIO_EKEYTYPE : SIO_EFORMAT;
	return 0;
}

static int load_public_file(sio_remote **out, const char *path)
{
	char *text = NULL;
	size_t len = 0;
	int rc = read_file(path, &text, &len, NULL);
	if (rc)
		return rc;
	struct pending_remote *r = calloc(1, sizeof *r);
	if (!r) {
		free(text);
		return SIO_ENOMEM;
	}
	rc = parse_public_text(r, text, len);
	free(text);
	if (rc) {
		free(r);
		return rc;
	}
	*out = (sio_remote *)r;
	return 0;
}

WEAK int sio_remote_load(sio_remote **out, const char *path)
{
	return load_public_file(out, path);
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
	if (!r || i >= r->n)
		return SIO_EINVAL;
	memcpy(pk, r->pk[i], 32);
	return 0;
}

WEAK void sio_remote_free(sio_remote *r)
{
	free(r);
}
