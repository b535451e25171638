/* Identity key files: the formats read and written, sio_identity_from_dir,
 * and one test per malformed-file case (each built in a temp directory by
 * an independent encoder in this file, then mutated). */
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "identity.h"
#include "secureio.h"

static char tmpdir[] = "/tmp/sio-idtest-XXXXXX";
static uint8_t seed[32], sk[64], pk[32];

static char *tpath(const char *name)
{
	static char buf[8][256];
	static int k;
	char *p = buf[k++ % 8];
	snprintf(p, 256, "%s/%s", tmpdir, name);
	return p;
}

static void write_file(const char *name, const void *data, size_t len, mode_t mode)
{
	char *p = tpath(name);
	unlink(p);
	FILE *f = fopen(p, "wb");
	CHECK(f != NULL);
	if (!f)
		return;
	CHECK_EQ(fwrite(data, 1, len, f), len);
	fclose(f);
	CHECK_OK(chmod(p, mode));
}

static void write_text(const char *name, const char *text, mode_t mode)
{
	write_file(name, text, strlen(text), mode);
}

/* ---- an independent openssh-key-v1 encoder with knobs for corruption --- */

struct ossh {
	const char *cipher, *kdf, *outer_type, *inner_type;
	uint32_t nkeys, check1, check2;
	size_t pklen, sklen;
	int bad_padding, flip_sk_pub, truncate, magic_typo, extra;
};

static size_t w32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8),
	p[3] = (uint8_t)v;
	return 4;
}

static size_t wstr(uint8_t *p, const void *s, size_t n)
{
	w32(p, (uint32_t)n);
	memcpy(p + 4, s, n);
	return 4 + n;
}

static void ossh_defaults(struct ossh *o)
{
	memset(o, 0, sizeof *o);
	o->cipher = o->kdf = "none";
	o->outer_type = o->inner_type = "ssh-ed25519";
	o->nkeys = 1;
	o->check1 = o->check2 = 0x12345678;
	o->pklen = 32;
	o->sklen = 64;
}

/* Armoured text into OUT (cap 4096); returns its length. */
static size_t ossh_encode(const struct ossh *o, char *out)
{
	uint8_t bin[1024], priv[512], blob[256], zero[64] = {0};
	size_t n = 0, pn = 0, bn = 0;
	bn += wstr(blob + bn, o->outer_type, strlen(o->outer_type));
	bn += wstr(blob + bn, pk, 32);
	pn += w32(priv + pn, o->check1);
	pn += w32(priv + pn, o->check2);
	pn += wstr(priv + pn, o->inner_type, strlen(o->inner_type));
	pn += wstr(priv + pn, pk, o->pklen);
	uint8_t skc[64];
	memcpy(skc, sk, 64);
	if (o->flip_sk_pub)
		skc[63] ^= 1;
	pn += wstr(priv + pn, o->sklen <= 64 ? skc : zero, o->sklen <= 64 ? o->sklen : 64);
	pn += wstr(priv + pn, "comment", 7);
	for (uint8_t i = 1; pn % 8; i++)
		priv[pn++] = o->bad_padding ? 0 : i;
	memcpy(bin, o->magic_typo ? "openssh-key-v2" : "openssh-key-v1", 15);
	n = 15;
	n += wstr(bin + n, o->cipher, strlen(o->cipher));
	n += wstr(bin + n, o->kdf, strlen(o->kdf));
	if (strcmp(o->kdf, "none") == 0)
		n += wstr(bin + n, "", 0);
	else
		n += wstr(bin + n, "\0\0\0\x10saltsaltsaltsalt\0\0\0\x10", 24);
	n += w32(bin + n, o->nkeys);
	n += wstr(bin + n, blob, bn);
	n += wstr(bin + n, priv, pn);
	if (o->extra)
		bin[n++] = 0;
	if (o->truncate)
		n = n > (size_t)o->truncate ? n - (size_t)o->truncate : 0;
	char b64[2048];
	sodium_bin2base64(b64, sizeof b64, bin, n, sodium_base64_VARIANT_ORIGINAL);
	return (size_t)snprintf(out, 4096,
	                        "-----BEGIN OPENSSH PRIVATE KEY-----\n%s\n"
	                        "-----END OPENSSH PRIVATE KEY-----\n",
	                        b64);
}

static int load_ossh(const struct ossh *o)
{
	char txt[4096];
	size_t n = ossh_encode(o, txt);
	write_file("k", txt, n, 0600);
	sio_identity *id = (sio_identity *)1;
	int rc = sio_identity_load(&id, tpath("k"));
	if (rc == 0) {
		uint8_t got[32];
		sio_identity_public_key(id, got);
		CHECK(memcmp(got, pk, 32) == 0);
		CHECK(memcmp(sio_identity_secret_key(id), sk, 64) == 0);
		sio_identity_free(id);
	} else {
		CHECK(id == NULL);
	}
	return rc;
}

static void test_openssh_private(void)
{
	struct ossh o;
	ossh_defaults(&o);
	CHECK_OK(load_ossh(&o));
	ossh_defaults(&o), o.magic_typo = 1;
	CHECK_EQ(load_ossh(&o), SIO_EFORMAT); /* bad magic */
	ossh_defaults(&o), o.check2 = 0x12345679;
	CHECK_EQ(load_ossh(&o), SIO_EFORMAT); /* check integers differ */
	ossh_defaults(&o), o.cipher = "aes256-ctr", o.kdf = "bcrypt";
	CHECK_EQ(load_ossh(&o), SIO_EENCRYPTED);
	ossh_defaults(&o), o.outer_type = o.inner_type = "ssh-rsa";
	CHECK_EQ(load_ossh(&o), SIO_EKEYTYPE);
	ossh_defaults(&o), o.outer_type = o.inner_type = "ecdsa-sha2-nistp256";
	CHECK_EQ(load_ossh(&o), SIO_EKEYTYPE);
	ossh_defaults(&o), o.inner_type = "ssh-rsa";
	CHECK_EQ(load_ossh(&o), SIO_EKEYTYPE);
	ossh_defaults(&o), o.nkeys = 2;
	CHECK_EQ(load_ossh(&o), SIO_EFORMAT);
	ossh_defaults(&o), o.pklen = 31;
	CHECK_EQ(load_ossh(&o), SIO_EFORMAT); /* wrong lengths */
	ossh_defaults(&o), o.sklen = 32;
	CHECK_EQ(load_ossh(&o), SIO_EFORMAT);
	ossh_defaults(&o), o.bad_padding = 1;
	CHECK_EQ(load_ossh(&o), SIO_EFORMAT);
	ossh_defaults(&o), o.extra = 1;
	CHECK_EQ(load_ossh(&o), SIO_EFORMAT);
	ossh_defaults(&o), o.flip_sk_pub = 1;
	CHECK_EQ(load_ossh(&o), SIO_EMISMATCH); /* secret's public half differs */
	for (int t = 1; t < 200; t += 7) {      /* truncated anywhere */
		ossh_defaults(&o), o.truncate = t;
		CHECK_EQ(load_ossh(&o), SIO_EFORMAT);
	}
	/* armour problems */
	char txt[4096];
	ossh_defaults(&o);
	size_t n = ossh_encode(&o, txt);
	write_file("k", txt, n - 20, 0600); /* END line cut */
	sio_identity *id = NULL;
	CHECK_EQ(sio_identity_load(&id, tpath("k")), SIO_EFORMAT);
	txt[60] = '*'; /* bad base64 */
	write_file("k", txt, n, 0600);
	CHECK_EQ(sio_identity_load(&id, tpath("k")), SIO_EFORMAT);
	write_text("k", "", 0600); /* empty */
	CHECK_EQ(sio_identity_load(&id, tpath("k")), SIO_EFORMAT);
	write_text("k", "hello world\n", 0600);
	CHECK_EQ(sio_identity_load(&id, tpath("k")), SIO_EFORMAT);
	write_text("k", "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
	           0600);
	CHECK_EQ(sio_identity_load(&id, tpath("k")), SIO_EKEYTYPE);
	write_text(
	    "k",
	    "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
	    0600);
	CHECK_EQ(sio_identity_load(&id, tpath("k")), SIO_EENCRYPTED);
	CHECK(id == NULL);
}

static void test_permissions_and_missing(void)
{
	struct ossh o;
	char txt[4096];
	ossh_defaults(&o);
	size_t n = ossh_encode(&o, txt);
	sio_identity *id = NULL;
	static const mode_t bad[] = {0640, 0604, 0644, 0660, 0700 | 0070};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		write_file("k", txt, n, bad[i]);
		CHECK_EQ(sio_identity_load(&id, tpath("k")), SIO_EPERM);
	}
	write_file("k", txt, n, 0400);
	CHECK_OK(sio_identity_load(&id, tpath("k")));
	sio_identity_free(id);
	CHECK_EQ(sio_identity_load(&id, tpath("does-not-exist")), SIO_ENOENT);
	CHECK_EQ(sio_identity_load(&id, tpath("nodir/k")), SIO_ENOENT);
	CHECK_EQ(sio_identity_load(&id, tmpdir), SIO_ENOTFILE); /* a directory */
	/* a FIFO with no writer: refused at once, never waited on */
	CHECK_OK(mkfifo(tpath("fifo"), 0600));
	CHECK_EQ(sio_identity_load(&id, tpath("fifo")), SIO_ENOTFILE);
	sio_remote *r = NULL;
	CHECK_EQ(sio_remote_load(&r, tpath("fifo")), SIO_ENOTFILE);
	CHECK_EQ(sio_remote_load(&r, tmpdir), SIO_ENOTFILE);
	unlink(tpath("fifo"));
	CHECK_EQ(sio_remote_load(&r, tpath("does-not-exist.pub")), SIO_ENOENT);
	CHECK_EQ(sio_identity_load(NULL, tpath("k")), SIO_EINVAL);
}

static void test_go_pem(void)
{
	char b64[200], txt[512];
	sio_identity *id = NULL;
	sodium_bin2base64(b64, sizeof b64, sk, 64, sodium_base64_VARIANT_ORIGINAL);
	snprintf(txt, sizeof txt,
	         "-----BEGIN ED25519 PRIVATE KEY-----\n%s\n-----END ED25519 PRIVATE KEY-----\n",
	         b64);
	write_text("go", txt, 0600);
	CHECK_OK(sio_identity_load(&id, tpath("go")));
	if (id)
		CHECK(memcmp(sio_identity_secret_key(id), sk, 64) == 0);
	sio_identity_free(id);
	/* wrong length */
	sodium_bin2base64(b64, sizeof b64, sk, 48, sodium_base64_VARIANT_ORIGINAL);
	snprintf(txt, sizeof txt,
	         "-----BEGIN ED25519 PRIVATE KEY-----\n%s\n-----END ED25519 PRIVATE KEY-----\n",
	         b64);
	write_text("go", txt, 0600);
	CHECK_EQ(sio_identity_load(&id, tpath("go")), SIO_EFORMAT);
	/* public half not matching the seed */
	uint8_t bad[64];
	memcpy(bad, sk, 64);
	bad[33] ^= 4;
	sodium_bin2base64(b64, sizeof b64, bad, 64, sodium_base64_VARIANT_ORIGINAL);
	snprintf(txt, sizeof txt,
	         "-----BEGIN ED25519 PRIVATE KEY-----\n%s\n-----END ED25519 PRIVATE KEY-----\n",
	         b64);
	write_text("go", txt, 0600);
	CHECK_EQ(sio_identity_load(&id, tpath("go")), SIO_EMISMATCH);

	/* public PEM */
	sio_remote *r = NULL;
	uint8_t got[32];
	sodium_bin2base64(b64, sizeof b64, pk, 32, sodium_base64_VARIANT_ORIGINAL);
	snprintf(txt, sizeof txt,
	         "-----BEGIN ED25519 PUBLIC KEY-----\n%s\n-----END ED25519 PUBLIC KEY-----\n", b64);
	write_text("go.pub", txt, 0644);
	CHECK_OK(sio_remote_load(&r, tpath("go.pub")));
	CHECK_EQ(sio_remote_count(r), 1);
	CHECK_EQ(sio_remote_contains(r, pk), 1);
	sio_remote_free(r);
	CHECK_OK(sio_public_key_parse(txt, strlen(txt), got));
	CHECK(memcmp(got, pk, 32) == 0);
	sodium_bin2base64(b64, sizeof b64, pk, 31, sodium_base64_VARIANT_ORIGINAL);
	snprintf(txt, sizeof txt,
	         "-----BEGIN ED25519 PUBLIC KEY-----\n%s\n-----END ED25519 PUBLIC KEY-----\n", b64);
	CHECK_EQ(sio_public_key_parse(txt, strlen(txt), got), SIO_EFORMAT);
}

static void test_public_lines(void)
{
	char line[SIO_PUBKEY_LINE_MAX], txt[4096];
	uint8_t other[32], got[32];
	randombytes_buf(other, 32);
	CHECK_OK(sio_public_key_line(pk, "alice@host", line, sizeof line));
	CHECK_OK(sio_public_key_parse(line, strlen(line), got));
	CHECK(memcmp(got, pk, 32) == 0);
	char oline[SIO_PUBKEY_LINE_MAX];
	CHECK_OK(sio_public_key_line(other, NULL, oline, sizeof oline));
	/* authorized_keys: comments, blanks, options, other key types */
	snprintf(txt, sizeof txt,
	         "# my keys\n\n"
	         "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 rsa@host\n"
	         "from=\"10.0.0.1,host name\",no-pty %s\r\n"
	         "   \t\n"
	         "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY= ec\n"
	         "%s\n",
	         line, oline);
	write_text("ak", txt, 0644);
	sio_remote *r = NULL;
	CHECK_OK(sio_remote_load(&r, tpath("ak")));
	CHECK_EQ(sio_remote_count(r), 2);
	CHECK_EQ(sio_remote_contains(r, pk), 1);
	CHECK_EQ(sio_remote_contains(r, other), 1);
	sio_remote_free(r);
	/* only other key types: refused */
	write_text("ak", "# none\nssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 rsa@host\n", 0644);
	CHECK_EQ(sio_remote_load(&r, tpath("ak")), SIO_EKEYTYPE);
	write_text("ak", "# nothing here\n\n", 0644);
	CHECK_EQ(sio_remote_load(&r, tpath("ak")), SIO_EFORMAT);
	write_text("ak", "", 0644);
	CHECK_EQ(sio_remote_load(&r, tpath("ak")), SIO_EFORMAT);
	/* bad base64, truncated blob, wrong type inside the blob */
	CHECK_EQ(sio_public_key_parse("ssh-ed25519 AAAA*AAA", 20, got), SIO_EFORMAT);
	CHECK_EQ(sio_public_key_parse("ssh-ed25519", 11, got), SIO_EFORMAT);
	/* bytes >= 0x80 inside base64 (libsodium's decoder lets some through) */
	static const char hi[] = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAbCBLx00MGXutg6mYY3yoEHi"
	                         "\240\3158I9moEx5eQCVTj9yf";
	CHECK_EQ(sio_public_key_parse(hi, sizeof hi - 1, got), SIO_EFORMAT);
	char pem[256];
	snprintf(pem, sizeof pem,
	         "-----BEGIN ED25519 PUBLIC KEY-----\n%s\n-----END ED25519 PUBLIC KEY-----\n",
	         hi + 12);
	CHECK_EQ(sio_public_key_parse(pem, strlen(pem), got), SIO_EFORMAT);
	size_t l = strlen(line);
	char cut[SIO_PUBKEY_LINE_MAX];
	memcpy(cut, line, l);
	char *sp = strchr(cut + 12, ' ');
	CHECK(sp != NULL);
	if (sp) {
		size_t b = (size_t)(sp - cut);
		memmove(cut + b - 8, sp, l - b); /* drop 8 base64 chars */
		CHECK_EQ(sio_public_key_parse(cut, l - 8, got), SIO_EFORMAT);
	}
	/* "ssh-ed25519" label in front of an ssh-rsa blob */
	CHECK_EQ(sio_public_key_parse("ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQC7", 44, got),
	         SIO_EKEYTYPE);
	/* a private key where a public key is expected */
	struct ossh o;
	ossh_defaults(&o);
	size_t n = ossh_encode(&o, txt);
	CHECK_EQ(sio_public_key_parse(txt, n, got), SIO_EFORMAT);
	/* a malformed ed25519 line among good ones fails the whole file */
	snprintf(txt, sizeof txt, "%s\nssh-ed25519 AAAA!!!\n", line);
	write_text("ak", txt, 0644);
	CHECK_EQ(sio_remote_load(&r, tpath("ak")), SIO_EFORMAT);
}

static void test_save_and_dir(void)
{
	sio_identity *id = NULL, *id2 = NULL;
	uint8_t a[32], b[32];
	struct stat st;
	CHECK_OK(sio_identity_from_seed(&id, seed));
	CHECK_OK(sio_identity_save(id, tpath("saved"), "test@sio"));
	CHECK_OK(stat(tpath("saved"), &st));
	CHECK_EQ(st.st_mode & 0777, 0600);
	CHECK_EQ(sio_identity_save(id, tpath("saved"), NULL), SIO_EEXIST); /* never overwrite */
	CHECK_OK(sio_identity_load(&id2, tpath("saved")));
	if (id2)
		CHECK(memcmp(sio_identity_secret_key(id2), sk, 64) == 0);
	sio_identity_free(id2);
	sio_remote *r = NULL;
	CHECK_OK(sio_remote_load(&r, tpath("saved.pub")));
	CHECK_EQ(sio_remote_contains(r, pk), 1);
	sio_remote_free(r);
	/* no temp files left behind */
	CHECK(access(tpath("saved.tmp-XXXXXX"), F_OK) != 0);

	/* from_dir: creates DIR 0700 and the key pair, then reloads it */
	char dir[300];
	snprintf(dir, sizeof dir, "%s", tpath("ids/"));
	CHECK_OK(sio_identity_from_dir(&id2, dir));
	CHECK_OK(stat(dir, &st));
	CHECK_EQ(st.st_mode & 0777, 0700);
	CHECK_OK(stat(tpath("ids/id_ed25519"), &st));
	CHECK_EQ(st.st_mode & 0777, 0600);
	CHECK_OK(stat(tpath("ids/id_ed25519.pub"), &st));
	sio_identity_public_key(id2, a);
	sio_identity_free(id2);
	CHECK_OK(sio_identity_from_dir(&id2, dir));
	sio_identity_public_key(id2, b);
	CHECK(memcmp(a, b, 32) == 0);
	sio_identity_free(id2);
	/* .pub not matching the private key */
	char line[SIO_PUBKEY_LINE_MAX + 1];
	CHECK_OK(sio_public_key_line(pk, NULL, line, sizeof line));
	write_text("ids/id_ed25519.pub", line, 0644);
	id2 = (sio_identity *)1;
	CHECK_EQ(sio_identity_from_dir(&id2, dir), SIO_EMISMATCH);
	CHECK(id2 == NULL);
	/* corrupt .pub is reported, not ignored */
	write_text("ids/id_ed25519.pub", "ssh-ed25519 ####\n", 0644);
	CHECK_EQ(sio_identity_from_dir(&id2, dir), SIO_EFORMAT);
	/* orphan .pub without private key: the new key would not match it */
	CHECK_OK(unlink(tpath("ids/id_ed25519")));
	write_text("ids/id_ed25519.pub", line, 0644);
	CHECK_EQ(sio_identity_from_dir(&id2, dir), SIO_EMISMATCH);
	CHECK(access(tpath("ids/id_ed25519"), F_OK) != 0);
	/* private key with loose permissions in the directory */
	CHECK_OK(unlink(tpath("ids/id_ed25519.pub")));
	CHECK_OK(sio_identity_from_dir(&id2, dir));
	sio_identity_free(id2);
	CHECK_OK(chmod(tpath("ids/id_ed25519"), 0644));
	CHECK_EQ(sio_identity_from_dir(&id2, dir), SIO_EPERM);
	/* DIR whose parent is missing */
	CHECK_EQ(sio_identity_from_dir(&id2, tpath("no/such/dir")), SIO_ENOENT);
	sio_identity_free(id);
}

/* Pre-shared key files get the private-key permission check. */
static void test_psk_file(void)
{
	uint8_t key[40], buf[64];
	size_t len = 99;
	for (size_t i = 0; i < sizeof key; i++)
		key[i] = (uint8_t)(200 + i);
	write_file("psk", key, sizeof key, 0600);
	CHECK_OK(sio_psk_load(tpath("psk"), buf, sizeof buf, &len));
	CHECK_EQ(len, sizeof key);
	CHECK(memcmp(buf, key, sizeof key) == 0);
	write_file("psk", key, sizeof key, 0400);
	CHECK_OK(sio_psk_load(tpath("psk"), buf, sizeof buf, &len));
	static const mode_t bad[] = {0640, 0604, 0644, 0660, 0610, 0601, 0700 | 0070};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		write_file("psk", key, sizeof key, bad[i]);
		len = 99;
		CHECK_EQ(sio_psk_load(tpath("psk"), buf, sizeof buf, &len), SIO_EPERM);
		CHECK_EQ(len, 0);
	}
	/* longer than the room: refused, with the file's size */
	write_file("psk", key, sizeof key, 0600);
	CHECK_EQ(sio_psk_load(tpath("psk"), buf, 16, &len), SIO_ETOOBIG);
	CHECK_EQ(len, sizeof key);
	CHECK_OK(sio_psk_load(tpath("psk"), buf, sizeof key, &len)); /* exactly the room */
	CHECK_EQ(len, sizeof key);
	CHECK_EQ(sio_psk_load(tpath("no-such-psk"), buf, sizeof buf, &len), SIO_ENOENT);
	CHECK_EQ(sio_psk_load(tmpdir, buf, sizeof buf, &len), SIO_ENOTFILE);
	CHECK_OK(mkfifo(tpath("pskfifo"), 0600));
	CHECK_EQ(sio_psk_load(tpath("pskfifo"), buf, sizeof buf, &len), SIO_ENOTFILE);
	unlink(tpath("pskfifo"));
	CHECK_EQ(sio_psk_load(NULL, buf, sizeof buf, &len), SIO_EINVAL);
	unlink(tpath("psk"));
}

/* An existing identity directory others could write to, or that belongs to
 * another user, is refused before any key in it is read or written. */
static void test_dir_owner_and_mode(void)
{
	sio_identity *id = NULL;
	char dir[300], link[300];
	snprintf(dir, sizeof dir, "%s", tpath("ownd"));
	snprintf(link, sizeof link, "%s", tpath("ownd-link"));
	CHECK_OK(mkdir(dir, 0755)); /* readable by others, as ~/.ssh may be */
	CHECK_OK(sio_identity_from_dir(&id, dir));
	sio_identity_free(id);
	id = NULL;
	static const mode_t bad[] = {0777, 0775, 0757, 0720, 0702, 01777, 0770};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		CHECK_OK(chmod(dir, bad[i]));
		id = (sio_identity *)1;
		CHECK_EQ(sio_identity_from_dir(&id, dir), SIO_EDIRPERM);
		CHECK(id == NULL);
	}
	/* a fresh directory is never made in a refused one's place */
	CHECK_OK(chmod(dir, 0777));
	CHECK_OK(unlink(tpath("ownd/id_ed25519")));
	CHECK_OK(unlink(tpath("ownd/id_ed25519.pub")));
	CHECK_EQ(sio_identity_from_dir(&id, dir), SIO_EDIRPERM);
	CHECK(access(tpath("ownd/id_ed25519"), F_OK) != 0);
	/* a symbolic link is judged by the directory it names */
	CHECK_OK(symlink(dir, link));
	CHECK_EQ(sio_identity_from_dir(&id, link), SIO_EDIRPERM);
	CHECK_OK(chmod(dir, 0700));
	CHECK_OK(sio_identity_from_dir(&id, link));
	sio_identity_free(id);
	id = NULL;
	/* owned by another user: testable when we may chown (root, as in CI).
	 * For root, "another user" is any uid but 0: a directory a user owns
	 * lets that user replace the key root would then use. */
	if (chown(dir, 12345, 12345) == 0) {
		CHECK_EQ(sio_identity_from_dir(&id, dir), SIO_EDIRPERM);
		CHECK_EQ(sio_identity_from_dir(&id, link), SIO_EDIRPERM);
		CHECK(id == NULL);
		if (geteuid() != 0) /* not reached in practice: only root may give a file away */
			fprintf(stderr, "note: chown worked without root\n");
		/* owned by root: accepted (as OpenSSH accepts root-owned paths) */
		CHECK_OK(chown(dir, 0, 0));
		CHECK_OK(sio_identity_from_dir(&id, dir));
		sio_identity_free(id);
		id = NULL;
	} else {
		fprintf(stderr, "test_identity_files: not root, the other-owner case is skipped\n");
	}
	/* a plain file where the directory should be: as before, not found */
	write_text("notadir", "x", 0600);
	CHECK_EQ(sio_identity_from_dir(&id, tpath("notadir")), SIO_ENOENT);
}

int main(void)
{
	CHECK_OK(sio_init());
	umask(022);
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	for (int i = 0; i < 32; i++)
		seed[i] = (uint8_t)(i * 7 + 1);
	crypto_sign_seed_keypair(pk, sk, seed);
	test_openssh_private();
	test_permissions_and_missing();
	test_go_pem();
	test_public_lines();
	test_save_and_dir();
	test_psk_file();
	test_dir_owner_and_mode();
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmpdir);
	return check_done("test_identity_files");
}
