/* `sio keygen`, `sio pubkey`, `sio fingerprint`: the key tool. */
#include <errno.h>
#include <stdio.h>
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
		sio_identity *id = NULL;
		errno = 0;
		rc = sio_identity_load(&id, path);
		if (rc < 0)
			return key_file_error(path, rc);
		uint8_t pk[SIO_PUBLIC_KEY_BYTES];
		sio_identity_public_key(id, pk);
		sio_identity_free(id);
		rc = sio_remote_from_public_key(out, pk);
	} else {
		errno = 0;
		rc = sio_remote_load(out, path);
	}
	if (rc < 0)
		return key_file_error(path, rc);
	return 0;
}

static int print_identity_line(const sio_identity *id)
{
	uint8_t pk[SIO_PUBLIC_KEY_BYTES];
	char line[SIO_PUBKEY_LINE_MAX];
	sio_identity_public_key(id, pk);
	int rc = sio_public_key_line(pk, NULL, line, sizeof line);
	if (rc < 0) {
		cli_err("cannot format the public key: %s", sio_strerror(rc));
		return CLI_ERR;
	}
	printf("%s\n", line);
	return fflush(stdout) == 0 ? CLI_OK : CLI_ERR;
}

static int identity_path(char *buf, size_t len, const char *dir)
{
	int n = snprintf(buf, len, "%s/id_ed25519", dir);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

int cli_keygen(int argc, char **argv)
{
	const char *dir = NULL;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-i") == 0 && i + 1 < argc && !dir)
			dir = argv[++i];
		else if (strcmp(argv[i], "-i") == 0)
			return cli_usage_error("keygen", "-i needs one DIR");
		else
			return cli_usage_error("keygen", "unexpected argument '%s'", argv[i]);
	}
	if (!dir)
		dir = cli_default_id_dir();
	char path[4096];
	if (identity_path(path, sizeof path, dir)) {
		cli_err("%s: directory name too long", dir);
		return CLI_ERR;
	}
	struct stat st;
	int existed = lstat(path, &st) == 0;
	sio_identity *id = NULL;
	errno = 0;
	int rc = sio_identity_from_dir(&id, dir);
	if (rc < 0 && !existed) {
		/* the library says what failed, not why the key could not be
		 * created: ask the file system the same question */
		struct stat ds;
		if (stat(dir, &ds) != 0) {
			int e = errno;
			if (mkdir(dir, 0700) != 0) {
				cli_err("%s: cannot create the identity directory (%s)", dir,
				        strerror(errno ? errno : e));
				return CLI_ERR;
			}
			rmdir(dir);
		} else if (!S_ISDIR(ds.st_mode)) {
			cli_err("%s: not a directory", dir);
			return CLI_ERR;
		} else if (access(dir, W_OK) != 0) {
			cli_err("%s: cannot create a key in this directory (%s)", dir, strerror(errno));
			return CLI_ERR;
		}
	}
	if (rc < 0)
		return key_file_error(existed ? path : dir, rc);
	if (!existed)
		fprintf(stderr, "sio: created %s and %s.pub\n", path, path);
	rc = print_identity_line(id);
	sio_identity_free(id);
	return rc;
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
	sio_remote *keys = NULL;
	int rc = load_keys(file, &keys);
	if (rc)
		return rc;
	for (size_t i = 0; i < sio_remote_count(keys); i++) {
		uint8_t pk[SIO_PUBLIC_KEY_BYTES];
		char line[SIO_PUBKEY_LINE_MAX];
		if (sio_remote_key(keys, i, pk) < 0 ||
		    sio_public_key_line(pk, NULL, line, sizeof line) < 0) {
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
