/* `sio keygen`, `sio pubkey`, `sio fingerprint`: the key tool. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

/* Does FILE look like a private key? (PEM header naming a private key.) */
static int looks_private(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return 0;
	char buf[512];
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	return strstr(buf, "PRIVATE KEY-----") != NULL;
}

static int key_file_error(const char *path, int err)
{
	if (err == SIO_EIO && errno)
		cli_err("%s: %s", path, strerror(errno));
	else
		cli_err("%s: %s", path, sio_strerror(err));
	return CLI_ERR;
}

int cli_identity_error(const char *dir, const char *keypath, int err)
{
	struct stat st;
	if (err == SIO_EDIRPERM && stat(dir, &st) == 0) {
		if (st.st_uid != geteuid() && st.st_uid != 0)
			cli_err("identity directory %s belongs to uid %u, neither to this user (uid %u) "
			        "nor to root: whoever owns it can replace the key; use a directory of your own",
			        dir, (unsigned)st.st_uid, (unsigned)geteuid());
		else
			cli_err("identity directory %s: permissions %04o are too open: group or others "
			        "can replace the key in it (fix: chmod go-w %s)",
			        dir, (unsigned)(st.st_mode & 07777), dir);
		return CLI_ERR;
	}
	if (keypath)
		return key_file_error(keypath, err);
	cli_err("identity %s: %s", dir, err == SIO_EIO && errno ? strerror(errno) : sio_strerror(err));
	return CLI_ERR;
}

/* Loads every public key of PATH (a private key file, a public key file or
 * an authorized_keys-style list) into a remote set. */
static int load_keys(const char *path, sio_remote **out)
{
	struct stat st;
	if (stat(path, &st) != 0) {
		cli_err("%s: %s", path, strerror(errno));
		return CLI_ERR;
	}
	if (!S_ISREG(st.st_mode)) {
		cli_err("%s: not a regular file", path);
		return CLI_ERR;
	}
	int rc;
	if (looks_private(path)) {
		uint8_t pk[SIO_PUBLIC_KEY_BYTES];
		errno = 0; /* the public half: no passphrase needed */
		rc = sio_private_key_info(path, pk, NULL, NULL, 0);
		if (rc < 0)
			return key_file_error(path, rc);
		rc = sio_remote_from_public_key(out, pk);
	} else {
		errno = 0;
		rc = sio_remote_load(out, path);
	}
	if (rc < 0)
		return key_file_error(path, rc);
	return 0;
}

/* The comment of PK's line in the public key file PATH ("" if none): the
 * text after the base64 key, as ssh-keygen writes it. */
static void comment_in(const char *path, const uint8_t pk[SIO_PUBLIC_KEY_BYTES], char *out,
                       size_t cap)
{
	out[0] = 0;
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	char *l = NULL;
	size_t lcap = 0;
	ssize_t n;
	while ((n = getline(&l, &lcap, f)) > 0) {
		uint8_t got[SIO_PUBLIC_KEY_BYTES];
		if (sio_public_key_parse(l, (size_t)n, got) != 0 || memcmp(got, pk, sizeof got) != 0)
			continue;
		char *p = strstr(l, "ssh-ed25519");
		if (!p)
			break;
		p += 11;
		p += strspn(p, " \t");
		p += strcspn(p, " \t\r\n"); /* the base64 key */
		p += strspn(p, " \t");
		p[strcspn(p, "\r\n")] = 0;
		snprintf(out, cap, "%s", p);
		break;
	}
	free(l);
	fclose(f);
}

/* The public key line of the private key file PATH with the key's comment:
 * from the file itself when unencrypted, else from PATH.pub. */
static int private_key_line(const char *path, char *line, size_t cap)
{
	uint8_t pk[SIO_PUBLIC_KEY_BYTES];
	char comment[1100];
	errno = 0;
	int rc = sio_private_key_info(path, pk, NULL, comment, sizeof comment);
	if (rc < 0)
		return key_file_error(path, rc);
	if (!comment[0]) {
		char pub[4200];
		snprintf(pub, sizeof pub, "%s.pub", path);
		comment_in(pub, pk, comment, sizeof comment);
	}
	comment[strcspn(comment, "\r\n")] = 0;
	if (sio_public_key_line(pk, comment[0] ? comment : NULL, line, cap) < 0 &&
	    sio_public_key_line(pk, NULL, line, cap) < 0) {
		cli_err("%s: cannot format the public key", path);
		return CLI_ERR;
	}
	return 0;
}

static int identity_path(char *buf, size_t len, const char *dir)
{
	int n = snprintf(buf, len, "%s/id_ed25519", dir);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* The passphrase of a new key: --passphrase-file, or asked twice (through
 * SIO_ASKPASS, or on the terminal when stdin is one); nothing to ask with
 * (a script) means none, as before. Empty = none, as ssh-keygen does. */
static int new_passphrase(const char *passfile, const char *path, char *buf, size_t cap,
                          size_t *len)
{
	*len = 0;
	const char *ask = getenv("SIO_ASKPASS");
	if (!passfile && !(ask && *ask) && !isatty(STDIN_FILENO))
		return 0;
	char prompt[4300];
	snprintf(prompt, sizeof prompt, "Enter passphrase for %s (empty for no passphrase): ", path);
	int rc = cli_get_passphrase(passfile, prompt, buf, cap, len, NULL);
	if (rc == -1) /* no terminal after all */
		return 0;
	if (rc || passfile || *len == 0)
		return rc;
	char *again = malloc(cap);
	size_t alen = 0;
	if (!again)
		return CLI_ERR;
	rc = cli_get_passphrase(NULL, "Enter the same passphrase again: ", again, cap, &alen, NULL);
	if (rc == 0 && (alen != *len || memcmp(again, buf, alen) != 0)) {
		cli_err("the passphrases do not match; nothing written");
		rc = CLI_ERR;
	}
	explicit_bzero(again, cap);
	free(again);
	return rc ? CLI_ERR : 0;
}

static int print_key_of(const char *path)
{
	char line[SIO_PUBKEY_LINE_MAX + 1100];
	if (private_key_line(path, line, sizeof line))
		return CLI_ERR;
	printf("%s\n", line);
	return fflush(stdout) == 0 ? CLI_OK : CLI_ERR;
}

int cli_keygen(int argc, char **argv)
{
	const char *dir = NULL, *file = NULL, *passfile = NULL, *comment = "secureio";
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		int has = i + 1 < argc;
		if ((!strcmp(a, "-i") || !strcmp(a, "-f")) && has && !dir && !file) {
			if (a[1] == 'i')
				dir = argv[++i];
			else
				file = argv[++i];
		} else if (!strcmp(a, "-i") || !strcmp(a, "-f")) {
			return cli_usage_error("keygen", "give one -i DIR or -f FILE");
		} else if (!strcmp(a, "--passphrase-file") && has && !passfile) {
			passfile = argv[++i];
		} else if (!strncmp(a, "--passphrase-file=", 18) && !passfile) {
			passfile = a + 18;
		} else if (!strcmp(a, "-C") && has) {
			comment = argv[++i];
		} else {
			return cli_usage_error("keygen", "unexpected argument '%s'", a);
		}
	}
	char path[4096];
	struct stat st;
	if (dir && stat(dir, &st) == 0 && !S_ISDIR(st.st_mode))
		file = dir, dir = NULL; /* -i names a key file, as ssh -i does */
	if (!file) {
		if (!dir)
			dir = cli_default_id_dir();
		if (identity_path(path, sizeof path, dir)) {
			cli_err("%s: directory name too long", dir);
			return CLI_ERR;
		}
		if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
			cli_err("%s: cannot create the identity directory (%s)", dir, strerror(errno));
			return CLI_ERR;
		}
		int drc = sio_identity_check_dir(dir);
		if (drc)
			return cli_identity_error(dir, NULL, drc);
	} else if (snprintf(path, sizeof path, "%s", file) >= (int)sizeof path) {
		cli_err("%s: name too long", file);
		return CLI_ERR;
	}
	if (lstat(path, &st) == 0)
		return print_key_of(path); /* never overwritten, never asked for */
	char *pass = malloc(1024);
	size_t plen = 0;
	if (!pass)
		return CLI_ERR;
	int rc = new_passphrase(passfile, path, pass, 1024, &plen);
	sio_identity *id = NULL;
	if (rc == 0) {
		errno = 0;
		rc = sio_identity_generate(&id);
		if (rc == 0)
			rc = sio_identity_save_passphrase(id, path, comment, pass, plen, 0);
		if (rc == SIO_EEXIST && access(path, F_OK) == 0) {
			/* another process made it first: show that one */
			rc = 0;
		} else if (rc < 0) {
			rc = key_file_error(path, rc);
		} else {
			fprintf(stderr, "sio: created %s%s and %s.pub\n", path,
			        plen ? " (passphrase-protected)" : "", path);
		}
	}
	explicit_bzero(pass, 1024);
	free(pass);
	sio_identity_free(id);
	return rc ? rc : print_key_of(path);
}

int cli_pubkey(int argc, char **argv)
{
	const char *dir = NULL, *file = NULL;
	for (int i = 1; i < argc; i++) {
		if ((strcmp(argv[i], "-i") == 0 || strcmp(argv[i], "-f") == 0) && i + 1 < argc) {
			if (dir || file)
				return cli_usage_error("pubkey",
				                       "give either -i DIR or -f FILE, once");
			if (argv[i][1] == 'i')
				dir = argv[++i];
			else
				file = argv[++i];
		} else if (strcmp(argv[i], "-i") == 0 || strcmp(argv[i], "-f") == 0) {
			return cli_usage_error("pubkey", "%s needs a value", argv[i]);
		} else {
			return cli_usage_error("pubkey", "unexpected argument '%s'", argv[i]);
		}
	}
	char path[4096];
	if (!file) {
		if (!dir)
			dir = cli_default_id_dir();
		if (identity_path(path, sizeof path, dir)) {
			cli_err("%s: directory name too long", dir);
			return CLI_ERR;
		}
		struct stat st;
		if (stat(path, &st) != 0) {
			cli_err("%s: no identity there (create one with: sio keygen -i %s)", path,
			        dir);
			return CLI_ERR;
		}
		file = path;
	}
	if (looks_private(file))
		return print_key_of(file); /* with the key's comment */
	sio_remote *keys = NULL;
	int rc = load_keys(file, &keys);
	if (rc)
		return rc;
	for (size_t i = 0; i < sio_remote_count(keys); i++) {
		uint8_t pk[SIO_PUBLIC_KEY_BYTES];
		char line[SIO_PUBKEY_LINE_MAX + 1100], comment[1100] = "";
		if (sio_remote_key(keys, i, pk) == 0)
			comment_in(file, pk, comment, sizeof comment);
		if (sio_remote_key(keys, i, pk) < 0 ||
		    (sio_public_key_line(pk, comment[0] ? comment : NULL, line, sizeof line) < 0 &&
		     sio_public_key_line(pk, NULL, line, sizeof line) < 0)) {
			sio_remote_free(keys);
			cli_err("%s: cannot format key %zu", file, i + 1);
			return CLI_ERR;
		}
		printf("%s\n", line);
	}
	sio_remote_free(keys);
	return fflush(stdout) == 0 ? CLI_OK : CLI_ERR;
}

int cli_fingerprint(int argc, char **argv)
{
	if (argc != 2 || argv[1][0] == '-')
		return cli_usage_error("fingerprint",
		                       argc < 2 ? "missing FILE" : "expected one FILE");
	sio_remote *keys = NULL;
	int rc = load_keys(argv[1], &keys);
	if (rc)
		return rc;
	for (size_t i = 0; i < sio_remote_count(keys); i++) {
		uint8_t pk[SIO_PUBLIC_KEY_BYTES];
		char fp[SIO_FINGERPRINT_MAX];
		if (sio_remote_key(keys, i, pk) < 0 || sio_fingerprint(pk, fp, sizeof fp) < 0) {
			sio_remote_free(keys);
			cli_err("%s: cannot compute the fingerprint of key %zu", argv[1], i + 1);
			return CLI_ERR;
		}
		printf("%s\n", fp);
	}
	sio_remote_free(keys);
	return fflush(stdout) == 0 ? CLI_OK : CLI_ERR;
}
