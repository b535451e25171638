/* Key files on disk: loading (with the permission check ssh does), atomic
 * never-overwriting saves, and the DIR/id_ed25519 load-or-generate helper. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "identity.h"
#include "keyfile_crypt.h"

#define MAX_KEYFILE (1024 * 1024)

static int map_errno(int e)
{
	switch (e) {
	case ENOENT:
	case ENOTDIR:
		return SIO_ENOENT;
	case EEXIST:
		return SIO_EEXIST;
	case ENOMEM:
		return SIO_ENOMEM;
	default:
		return SIO_EIO;
	}
}

/* Opens PATH for reading and checks it: a regular file (SIO_ENOTFILE), and
 * with PRIVATE set, no permission bit for group or others (SIO_EPERM), as
 * ssh requires of private keys. On success *FD is open and *ST filled. */
static int open_checked(const char *path, int private_file, int *fd, struct stat *st)
{
	/* non-blocking: opening a FIFO must not wait for a writer (it is
	 * refused below as not a regular file) */
	*fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (*fd < 0)
		return map_errno(errno);
	int rc = 0;
	if (fstat(*fd, st) != 0)
		rc = map_errno(errno);
	else if (!S_ISREG(st->st_mode))
		rc = SIO_ENOTFILE;
	else if (private_file && (st->st_mode & 077))
		rc = SIO_EPERM;
	if (rc) {
		close(*fd);
		*fd = -1;
	}
	return rc;
}

/* Reads a whole file into a sodium_malloc'ed, NUL-terminated buffer. With
 * PRIVATE set, refuses files accessible by group or others. */
static int read_file(const char *path, int private_key, char **out, size_t *outlen)
{
	int fd;
	struct stat st;
	int rc = open_checked(path, private_key, &fd, &st);
	if (rc)
		return rc;
	if (st.st_size > MAX_KEYFILE) {
		close(fd);
		return SIO_EFORMAT;
	}
	size_t cap = (size_t)st.st_size + 1, n = 0;
	char *buf = sodium_malloc(cap);
	if (!buf) {
		close(fd);
		return SIO_ENOMEM;
	}
	while (n < cap - 1) {
		ssize_t r = read(fd, buf + n, cap - 1 - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			close(fd);
			sodium_memzero(buf, cap);
			sodium_free(buf);
			return map_errno(e);
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	buf[n] = 0;
	*out = buf;
	*outlen = n;
	return 0;
}

static void free_buf(char *buf, size_t len)
{
	if (buf) {
		sodium_memzero(buf, len);
		sodium_free(buf);
	}
}

#define ASK_CAP 1024 /* longest passphrase a callback may give */

/* Loads PATH; an encrypted key is opened with PASS (LEN bytes) or, when
 * PASS is NULL, with what ASK gives (asked only then). INFO_PK etc.: see
 * sio_private_key_info. */
static int load_key(sio_identity **out, const char *path, const void *pass, size_t passlen,
                    sio_passphrase_fn ask, void *ctx, uint8_t *info_pk, int *encrypted,
                    char *comment, size_t ccap)
{
	if (out)
		*out = NULL;
	if (!path)
		return SIO_EINVAL;
	if (sodium_init() < 0)
		return SIO_ECRYPTO;
	char *buf = NULL;
	size_t len = 0;
	int rc = read_file(path, 1, &buf, &len);
	if (rc)
		return rc;
	uint8_t *sk = sodium_malloc(SIO_SECRET_KEY_BYTES);
	char *asked = NULL;
	if (!sk) {
		free_buf(buf, len);
		return SIO_ENOMEM;
	}
	struct sio_kf_pass pw = {pass, passlen, SIO_KDF_MAX_ROUNDS};
	rc = sio_keyfile_parse_private_ex((const uint8_t *)buf, len, pass ? &pw : NULL, sk, info_pk,
	                                  encrypted, comment, ccap);
	if (rc == SIO_EENCRYPTED && !pass && ask) {
		size_t alen = 0;
		asked = sodium_malloc(ASK_CAP);
		if (!asked)
			rc = SIO_ENOMEM;
		else
			rc = ask(ctx, path, asked, ASK_CAP, &alen);
		if (rc == 0 && alen > ASK_CAP)
			rc = SIO_EINVAL;
		if (rc == 0) {
			pw.p = (const uint8_t *)asked;
			pw.len = alen;
			rc = sio_keyfile_parse_private_ex((const uint8_t *)buf, len, &pw, sk, NULL,
			                                  NULL, comment, ccap);
		}
	}
	free_buf(buf, len);
	free_buf(asked, ASK_CAP);
	if (rc == 0 && out)
		rc = sio_identity_from_secret(out, sk);
	sodium_memzero(sk, SIO_SECRET_KEY_BYTES);
	sodium_free(sk);
	return rc;
}

int sio_identity_load(sio_identity **out, const char *path)
{
	if (!out)
		return SIO_EINVAL;
	return load_key(out, path, NULL, 0, NULL, NULL, NULL, NULL, NULL, 0);
}

int sio_identity_load_passphrase(sio_identity **out, const char *path, const void *pass,
                                 size_t len)
{
	if (!out || (!pass && len))
		return SIO_EINVAL;
	return load_key(out, path, pass ? pass : "", len, NULL, NULL, NULL, NULL, NULL, 0);
}

int sio_identity_load_ask(sio_identity **out, const char *path, sio_passphrase_fn ask, void *ctx)
{
	if (!out || !ask)
		return SIO_EINVAL;
	return load_key(out, path, NULL, 0, ask, ctx, NULL, NULL, NULL, 0);
}

int sio_private_key_info(const char *path, uint8_t pk[SIO_PUBLIC_KEY_BYTES], int *encrypted,
                         char *comment, size_t ccap)
{
	if (!pk)
		return SIO_EINVAL;
	int enc = 0;
	int rc = load_key(NULL, path, NULL, 0, NULL, NULL, pk, &enc, comment, ccap);
	if (encrypted)
		*encrypted = enc;
	if (rc == SIO_EENCRYPTED && enc)
		rc = 0; /* the public half and the flag are what was asked for */
	if (rc)
		sodium_memzero(pk, SIO_PUBLIC_KEY_BYTES);
	return rc;
}

struct first_key {
	uint8_t *pk;
	int got;
};

static int take_first(void *ctx, const uint8_t pk[SIO_PUBLIC_KEY_BYTES])
{
	struct first_key *f = ctx;
	if (!f->got)
		memcpy(f->pk, pk, SIO_PUBLIC_KEY_BYTES);
	f->got = 1;
	return 0;
}

int sio_public_key_parse(const char *text, size_t len, uint8_t pk[SIO_PUBLIC_KEY_BYTES])
{
	if (!text || !pk)
		return SIO_EINVAL;
	struct first_key f = {pk, 0};
	int rc = sio_pubkey_parse_all(text, len, take_first, &f);
	return rc < 0 ? rc : 0;
}

static int add_to_remote(void *ctx, const uint8_t pk[SIO_PUBLIC_KEY_BYTES], const char *from)
{
	return sio_remote_add_rule(ctx, pk, from);
}

int sio_remote_load_err(sio_remote **out, const char *path, char *msg, size_t msglen)
{
	if (!out || !path)
		return SIO_EINVAL;
	*out = NULL;
	if (msg && msglen)
		msg[0] = 0;
	char *buf = NULL;
	size_t len = 0;
	int rc = read_file(path, 0, &buf, &len);
	if (rc)
		return rc;
	sio_remote *r = NULL;
	struct sio_pk_err err;
	memset(&err, 0, sizeof err);
	rc = sio_remote_new(&r);
	if (rc == 0)
		rc = sio_pubkey_parse_all_ex(buf, len, add_to_remote, r, &err);
	free_buf(buf, len);
	if (rc < 0) {
		if (msg && msglen && err.line)
			snprintf(msg, msglen, "line %zu%s%s%s: %s", err.line,
			         err.option[0] ? ": option '" : "", err.option,
			         err.option[0] ? "'" : "", err.why ? err.why : sio_strerror(rc));
		sio_remote_free(r);
		return rc;
	}
	*out = r;
	return 0;
}

int sio_remote_load(sio_remote **out, const char *path)
{
	return sio_remote_load_err(out, path, NULL, 0);
}

/* Writes DATA to a fresh temporary file next to PATH (mode MODE), fsyncs it
 * and links it to PATH, which must not exist (link() never overwrites). */
static int write_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
	size_t pl = strlen(path);
	char *tmp = malloc(pl + 16);
	if (!tmp)
		return SIO_ENOMEM;
	memcpy(tmp, path, pl);
	memcpy(tmp + pl, ".tmp-XXXXXX", 12);
	int fd = mkstemp(tmp);
	if (fd < 0) {
		int e = errno;
		free(tmp);
		return map_errno(e);
	}
	int rc = 0;
	if (fchmod(fd, mode) != 0)
		rc = map_errno(errno);
	size_t n = 0;
	while (rc == 0 && n < len) {
		ssize_t w = write(fd, (const char *)data + n, len - n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			rc = map_errno(errno);
		else
			n += (size_t)w;
	}
	if (rc == 0 && fsync(fd) != 0)
		rc = map_errno(errno);
	if (close(fd) != 0 && rc == 0)
		rc = map_errno(errno);
	if (rc == 0 && link(tmp, path) != 0)
		rc = map_errno(errno);
	unlink(tmp);
	free(tmp);
	return rc;
}

static int pub_path(const char *path, char **out)
{
	size_t pl = strlen(path);
	*out = malloc(pl + 5);
	if (!*out)
		return SIO_ENOMEM;
	memcpy(*out, path, pl);
	memcpy(*out + pl, ".pub", 5);
	return 0;
}

/* 0 if PUBPATH is missing or holds PK, SIO_EMISMATCH or a read error. */
static int check_pub(const char *pubpath, const uint8_t pk[SIO_PUBLIC_KEY_BYTES], int *exists)
{
	char *buf = NULL;
	size_t len = 0;
	*exists = 0;
	int rc = read_file(pubpath, 0, &buf, &len);
	if (rc == SIO_ENOENT)
		return 0;
	if (rc)
		return rc;
	*exists = 1;
	uint8_t got[SIO_PUBLIC_KEY_BYTES];
	rc = sio_public_key_parse(buf, len, got);
	free_buf(buf, len);
	if (rc)
		return rc;
	return sodium_memcmp(got, pk, SIO_PUBLIC_KEY_BYTES) == 0 ? 0 : SIO_EMISMATCH;
}

static int save_key(const sio_identity *id, const char *path, const char *comment,
                    const void *pass, size_t passlen, unsigned rounds)
{
	if (!id || !path || (!pass && passlen) || !sio_identity_secret_key(id))
		return SIO_EINVAL; /* a signer identity has no secret key to write */
	if (!comment)
		comment = "";
	uint8_t pk[SIO_PUBLIC_KEY_BYTES];
	sio_identity_public_key(id, pk);
	char line[SIO_PUBKEY_LINE_MAX + 1024 + 2];
	int rc = sio_public_key_line(pk, comment, line, sizeof line - 1);
	if (rc)
		return rc;
	strcat(line, "\n");
	char *pubpath = NULL;
	rc = pub_path(path, &pubpath);
	if (rc)
		return rc;
	int pub_exists = 0;
	if (access(path, F_OK) == 0)
		rc = SIO_EEXIST;
	else
		rc = check_pub(pubpath, pk, &pub_exists);
	char *txt = NULL;
	size_t tlen = 0;
	if (rc == 0)
		rc = sio_keyfile_format_private_ex(sio_identity_secret_key(id), comment,
		                                   randombytes_random(), NULL, pass, passlen,
		                                   rounds ? rounds : SIO_KDF_DEFAULT_ROUNDS, &txt,
		                                   &tlen);
	if (rc == 0)
		rc = write_atomic(path, txt, tlen, 0600);
	sio_keyfile_free_text(txt, tlen);
	if (rc == 0 && !pub_exists) {
		rc = write_atomic(pubpath, line, strlen(line), 0644);
		if (rc == SIO_EEXIST) /* appeared meanwhile: it must match */
			rc = check_pub(pubpath, pk, &pub_exists);
	}
	free(pubpath);
	return rc;
}

int sio_psk_load(const char *path, uint8_t *psk, size_t cap, size_t *len)
{
	if (!path || !psk || !len)
		return SIO_EINVAL;
	*len = 0;
	int fd;
	struct stat st;
	int rc = open_checked(path, 1, &fd, &st);
	if (rc)
		return rc;
	size_t n = 0;
	while (rc == 0) {
		uint8_t extra;
		ssize_t r = n < cap ? read(fd, psk + n, cap - n) : read(fd, &extra, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			rc = map_errno(errno);
		else if (r == 0)
			break;
		else if (n == cap)
			rc = SIO_ETOOBIG; /* more than CAP bytes */
		else
			n += (size_t)r;
	}
	close(fd);
	if (rc == SIO_ETOOBIG) {
		*len = st.st_size > 0 && (uint64_t)st.st_size > cap ? (size_t)st.st_size : cap + 1;
		sodium_memzero(psk, cap);
		return rc;
	}
	if (rc) {
		sodium_memzero(psk, n);
		return rc;
	}
	*len = n;
	return 0;
}

/* The rule for an identity directory, after OpenSSH's for ~/.ssh: it must
 * belong to the user we run as (the effective uid) or to root, and no one
 * else may write to it (no group/other write bit, sticky or not). Whoever
 * can write to it can swap the key files for their own. */
int sio_identity_check_dir(const char *dir)
{
	if (!dir)
		return SIO_EINVAL;
	struct stat st;
	if (stat(dir, &st) != 0)
		return map_errno(errno);
	if (!S_ISDIR(st.st_mode))
		return SIO_ENOENT; /* as opening DIR/id_ed25519 would say */
	if ((st.st_uid != geteuid() && st.st_uid != 0) || (st.st_mode & 022))
		return SIO_EDIRPERM;
	return 0;
}

int sio_identity_save(const sio_identity *id, const char *path, const char *comment)
{
	return save_key(id, path, comment, NULL, 0, 0);
}

int sio_identity_save_passphrase(const sio_identity *id, const char *path, const char *comment,
                                 const void *pass, size_t len, unsigned rounds)
{
	if (rounds > SIO_KDF_MAX_ROUNDS)
		return SIO_EINVAL;
	return save_key(id, path, comment, pass, len, rounds);
}

int sio_identity_from_dir(sio_identity **out, const char *dir)
{
	if (!out || !dir)
		return SIO_EINVAL;
	*out = NULL;
	if (mkdir(dir, 0700) != 0 && errno != EEXIST)
		return map_errno(errno);
	int drc = sio_identity_check_dir(dir);
	if (drc)
		return drc;
	size_t dl = strlen(dir);
	char *path = malloc(dl + 16);
	if (!path)
		return SIO_ENOMEM;
	snprintf(path, dl + 16, "%s/id_ed25519", dir);
	char *pubpath = NULL;
	int rc = pub_path(path, &pubpath);
	if (rc) {
		free(path);
		return rc;
	}
	sio_identity *id = NULL;
	rc = sio_identity_load(&id, path);
	if (rc == SIO_ENOENT) {
		rc = sio_identity_generate(&id);
		if (rc == 0)
			rc = sio_identity_save(id, path, "secureio");
		if (rc == SIO_EEXIST && access(path, F_OK) == 0) {
			/* another process created it first: use that one */
			sio_identity_free(id);
			id = NULL;
			rc = sio_identity_load(&id, path);
		}
	}
	if (rc == 0) {
		uint8_t pk[SIO_PUBLIC_KEY_BYTES];
		int exists;
		sio_identity_public_key(id, pk);
		rc = check_pub(pubpath, pk, &exists);
	}
	free(path);
	free(pubpath);
	if (rc) {
		sio_identity_free(id);
		return rc;
	}
	*out = id;
	return 0;
}
