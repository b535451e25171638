/* Interoperability with the real ssh-keygen, both directions. Skipped (with
 * a message, exit 0) when ssh-keygen is not installed; CI installs
 * openssh-client through scripts/deps.sh. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "identity.h"
#include "keyfile_crypt.h"
#include "secureio.h"

static char dir[] = "/tmp/sio-sshtest-XXXXXX";

/* Runs CMD through the shell; stores the first output line (stdout) in OUT.
 * Returns the exit status. */
static int run(const char *cmd, char *out, size_t cap)
{
	FILE *p = popen(cmd, "r");
	if (!p)
		return -1;
	if (out) {
		out[0] = 0;
		if (fgets(out, (int)cap, p))
			out[strcspn(out, "\n")] = 0;
	}
	char sink[256];
	while (fgets(sink, sizeof sink, p))
		;
	int st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* "256 SHA256:xxx comment (ED25519)" -> "SHA256:xxx" */
static void second_field(const char *line, char *fp, size_t cap)
{
	const char *s = strchr(line, ' ');
	snprintf(fp, cap, "%s", s ? s + 1 : "");
	fp[strcspn(fp, " ")] = 0;
}

static void keygen_to_us(void)
{
	char cmd[512], out[512], fp_ssh[128], fp_ours[SIO_FINGERPRINT_MAX],
	    line[SIO_PUBKEY_LINE_MAX];
	snprintf(cmd, sizeof cmd,
	         "ssh-keygen -q -t ed25519 -N '' -C 'made by ssh-keygen' -f %s/a 2>&1", dir);
	CHECK_OK(run(cmd, NULL, 0));
	snprintf(cmd, sizeof cmd, "ssh-keygen -l -f %s/a.pub", dir);
	CHECK_OK(run(cmd, out, sizeof out));
	second_field(out, fp_ssh, sizeof fp_ssh);

	sio_identity *id = NULL;
	snprintf(cmd, sizeof cmd, "%s/a", dir);
	CHECK_OK(sio_identity_load(&id, cmd));
	if (!id)
		return;
	uint8_t pk[32], pk2[32];
	sio_identity_public_key(id, pk);
	CHECK_OK(sio_fingerprint(pk, fp_ours, sizeof fp_ours));
	CHECK(strcmp(fp_ours, fp_ssh) == 0);
	fprintf(stderr, "ssh-keygen: %s ours: %s\n", fp_ssh, fp_ours);
	sio_remote *r = NULL;
	snprintf(cmd, sizeof cmd, "%s/a.pub", dir);
	CHECK_OK(sio_remote_load(&r, cmd));
	CHECK_EQ(sio_remote_contains(r, pk), 1);
	sio_remote_free(r);
	/* our public key line matches the .pub ssh-keygen wrote */
	snprintf(cmd, sizeof cmd, "cat %s/a.pub", dir);
	CHECK_OK(run(cmd, out, sizeof out));
	CHECK_OK(sio_public_key_line(pk, "made by ssh-keygen", line, sizeof line));
	CHECK(strcmp(out, line) == 0);
	/* the directory helper accepts the ssh-keygen pair */
	snprintf(cmd, sizeof cmd,
	         "mkdir -p %s/d && cp -p %s/a %s/d/id_ed25519 && cp %s/a.pub %s/d/id_ed25519.pub",
	         dir, dir, dir, dir, dir);
	CHECK_OK(run(cmd, NULL, 0));
	sio_identity *id2 = NULL;
	snprintf(cmd, sizeof cmd, "%s/d", dir);
	CHECK_OK(sio_identity_from_dir(&id2, cmd));
	if (id2) {
		sio_identity_public_key(id2, pk2);
		CHECK(memcmp(pk, pk2, 32) == 0);
	}
	sio_identity_free(id2);
	sio_identity_free(id);
}

static void us_to_keygen(void)
{
	char cmd[512], out[512], want[SIO_PUBKEY_LINE_MAX], fp[SIO_FINGERPRINT_MAX], fp_ssh[128];
	sio_identity *id = NULL;
	snprintf(cmd, sizeof cmd, "%s/ours", dir);
	CHECK_OK(sio_identity_from_dir(&id, cmd));
	if (!id)
		return;
	uint8_t pk[32];
	sio_identity_public_key(id, pk);
	CHECK_OK(sio_public_key_line(pk, NULL, want, sizeof want));
	/* ssh-keygen -y derives the public key from our private key file */
	snprintf(cmd, sizeof cmd, "ssh-keygen -y -f %s/ours/id_ed25519", dir);
	CHECK_OK(run(cmd, out, sizeof out));
	out[strlen(want) < sizeof out ? strlen(want) : 0] =
	    0; /* newer versions append the comment */
	CHECK(strcmp(out, want) == 0);
	/* ... and prints the same key as our .pub */
	snprintf(cmd, sizeof cmd, "cut -d' ' -f1,2 %s/ours/id_ed25519.pub", dir);
	CHECK_OK(run(cmd, out, sizeof out));
	CHECK(strcmp(out, want) == 0);
	/* fingerprints agree, from the private and the public file */
	CHECK_OK(sio_fingerprint(pk, fp, sizeof fp));
	snprintf(cmd, sizeof cmd, "ssh-keygen -l -f %s/ours/id_ed25519", dir);
	CHECK_OK(run(cmd, out, sizeof out));
	second_field(out, fp_ssh, sizeof fp_ssh);
	CHECK(strcmp(fp, fp_ssh) == 0);
	snprintf(cmd, sizeof cmd, "ssh-keygen -l -f %s/ours/id_ed25519.pub", dir);
	CHECK_OK(run(cmd, out, sizeof out));
	second_field(out, fp_ssh, sizeof fp_ssh);
	CHECK(strcmp(fp, fp_ssh) == 0);
	/* ssh-keygen can rewrite our file (adds a passphrase) and we then refuse
	 * it as encrypted; removing the passphrase again makes it loadable. */
	snprintf(cmd, sizeof cmd, "ssh-keygen -q -p -P '' -N secret -f %s/ours/id_ed25519 2>&1",
	         dir);
	CHECK_OK(run(cmd, NULL, 0));
	sio_identity *id2 = NULL;
	snprintf(cmd, sizeof cmd, "%s/ours/id_ed25519", dir);
	CHECK_EQ(sio_identity_load(&id2, cmd), SIO_EENCRYPTED);
	if (sio_kf_crypt_available()) {
		CHECK_OK(sio_identity_load_passphrase(&id2, cmd, "secret", 6));
		if (id2)
			CHECK(memcmp(sio_identity_secret_key(id2), sio_identity_secret_key(id), 64) ==
			      0);
		sio_identity_free(id2);
		id2 = NULL;
	}
	snprintf(cmd, sizeof cmd, "ssh-keygen -q -p -P secret -N '' -f %s/ours/id_ed25519 2>&1",
	         dir);
	CHECK_OK(run(cmd, NULL, 0));
	snprintf(cmd, sizeof cmd, "%s/ours/id_ed25519", dir);
	CHECK_OK(sio_identity_load(&id2, cmd));
	if (id2)
		CHECK(memcmp(sio_identity_secret_key(id2), sio_identity_secret_key(id), 64) == 0);
	sio_identity_free(id2);
	sio_identity_free(id);
}

static const char *const ciphers[] = {
    "aes256-ctr", "aes128-ctr", "aes192-ctr", "aes128-cbc", "aes192-cbc", "aes256-cbc",
    "aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"};

/* Every cipher ssh-keygen -Z offers (but 3des-cbc, which ssh-keygen only
 * reads), at two round counts, both ways. */
static void encrypted_both_ways(void)
{
	char cmd[768], path[300], out[512], want[SIO_PUBKEY_LINE_MAX];
	if (!sio_kf_crypt_available()) {
		printf("test_identity_ssh: built without OpenSSL: encrypted keys not tested\n");
		return;
	}
	for (size_t i = 0; i < sizeof ciphers / sizeof *ciphers; i++) {
		unsigned rounds = i % 2 ? 3 : 16;
		/* ssh-keygen writes, we read */
		snprintf(path, sizeof path, "%s/enc%zu", dir, i);
		snprintf(cmd, sizeof cmd,
		         "ssh-keygen -q -t ed25519 -N 'pass phrase' -Z %s -a %u -C c%zu -f %s 2>&1",
		         ciphers[i], rounds, i, path);
		CHECK_OK(run(cmd, NULL, 0));
		sio_identity *id = NULL;
		CHECK_EQ(sio_identity_load(&id, path), SIO_EENCRYPTED);
		CHECK_EQ(sio_identity_load_passphrase(&id, path, "pass phrasE", 11), SIO_EPASSPHRASE);
		CHECK(id == NULL);
		CHECK_EQ(sio_identity_load_passphrase(&id, path, "", 0), SIO_EPASSPHRASE);
		CHECK_OK(sio_identity_load_passphrase(&id, path, "pass phrase", 11));
		uint8_t pk[32], pk2[32];
		int enc = 0;
		if (id) {
			sio_identity_public_key(id, pk);
			CHECK_OK(sio_public_key_line(pk, NULL, want, sizeof want));
			snprintf(cmd, sizeof cmd, "cut -d' ' -f1,2 %s.pub", path);
			CHECK_OK(run(cmd, out, sizeof out));
			CHECK(strcmp(out, want) == 0);
			CHECK_OK(sio_private_key_info(path, pk2, &enc, NULL, 0));
			CHECK(enc == 1 && memcmp(pk, pk2, 32) == 0);
		}
		sio_identity_free(id);
		/* ssh-keygen -p changes the passphrase (and cipher stays): we follow */
		snprintf(cmd, sizeof cmd,
		         "ssh-keygen -q -p -P 'pass phrase' -N other -Z %s -a %u -f %s 2>&1",
		         ciphers[i], rounds + 1, path);
		CHECK_OK(run(cmd, NULL, 0));
		id = NULL;
		CHECK_EQ(sio_identity_load_passphrase(&id, path, "pass phrase", 11), SIO_EPASSPHRASE);
		CHECK_OK(sio_identity_load_passphrase(&id, path, "other", 5));
		sio_identity_free(id);

		/* we write (this cipher, these rounds), ssh-keygen reads */
		uint8_t seed[32];
		randombytes_buf(seed, sizeof seed);
		CHECK_OK(sio_identity_from_seed(&id, seed));
		if (!id)
			continue;
		sio_identity_public_key(id, pk);
		CHECK_OK(sio_public_key_line(pk, NULL, want, sizeof want));
		char *txt = NULL;
		size_t len = 0;
		CHECK_OK(sio_keyfile_format_private_ex(sio_identity_secret_key(id), "ours", 77,
		                                       ciphers[i], (const uint8_t *)"s3cret", 6,
		                                       rounds, &txt, &len));
		snprintf(path, sizeof path, "%s/ourenc%zu", dir, i);
		FILE *f = fopen(path, "w");
		CHECK(f != NULL);
		if (f) {
			fwrite(txt, 1, len, f);
			fclose(f);
		}
		chmod(path, 0600);
		sio_keyfile_free_text(txt, len);
		snprintf(cmd, sizeof cmd, "ssh-keygen -y -P s3cret -f %s | cut -d' ' -f1,2", path);
		CHECK_OK(run(cmd, out, sizeof out));
		CHECK(strcmp(out, want) == 0);
		snprintf(cmd, sizeof cmd, "ssh-keygen -y -P s3creT -f %s 2>&1", path);
		CHECK(run(cmd, NULL, 0) != 0);
		sio_identity_free(id);
	}
	/* the public API: sio_identity_save_passphrase writes what ssh-keygen
	 * reads with the passphrase and not without */
	sio_identity *id = NULL;
	CHECK_OK(sio_identity_generate(&id));
	snprintf(path, sizeof path, "%s/saved", dir);
	CHECK_OK(sio_identity_save_passphrase(id, path, "saved", "pw", 2, 0));
	uint8_t pk[32];
	sio_identity_public_key(id, pk);
	CHECK_OK(sio_public_key_line(pk, NULL, want, sizeof want));
	snprintf(cmd, sizeof cmd, "ssh-keygen -y -P pw -f %s | cut -d' ' -f1,2", path);
	CHECK_OK(run(cmd, out, sizeof out));
	CHECK(strcmp(out, want) == 0);
	snprintf(cmd, sizeof cmd, "ssh-keygen -y -P '' -f %s 2>&1", path);
	CHECK(run(cmd, NULL, 0) != 0);
	sio_identity_free(id);
}

static void refused(void)
{
	char cmd[512];
	sio_identity *id = NULL;
	sio_remote *r = NULL;
	snprintf(cmd, sizeof cmd, "ssh-keygen -q -t ed25519 -N pass -f %s/enc 2>&1", dir);
	CHECK_OK(run(cmd, NULL, 0));
	snprintf(cmd, sizeof cmd, "%s/enc", dir);
	CHECK_EQ(sio_identity_load(&id, cmd), SIO_EENCRYPTED);
	snprintf(cmd, sizeof cmd, "ssh-keygen -q -t rsa -b 2048 -N '' -f %s/rsa 2>&1", dir);
	CHECK_OK(run(cmd, NULL, 0));
	snprintf(cmd, sizeof cmd, "%s/rsa", dir);
	CHECK_EQ(sio_identity_load(&id, cmd), SIO_EKEYTYPE);
	snprintf(cmd, sizeof cmd, "%s/rsa.pub", dir);
	CHECK_EQ(sio_remote_load(&r, cmd), SIO_EKEYTYPE);
	snprintf(cmd, sizeof cmd, "ssh-keygen -q -t ecdsa -N '' -f %s/ec 2>&1", dir);
	CHECK_OK(run(cmd, NULL, 0));
	snprintf(cmd, sizeof cmd, "%s/ec", dir);
	CHECK_EQ(sio_identity_load(&id, cmd), SIO_EKEYTYPE);
	/* RSA in the old PEM format */
	snprintf(cmd, sizeof cmd, "ssh-keygen -q -t rsa -b 2048 -m PEM -N '' -f %s/rsapem 2>&1",
	         dir);
	CHECK_OK(run(cmd, NULL, 0));
	snprintf(cmd, sizeof cmd, "%s/rsapem", dir);
	CHECK_EQ(sio_identity_load(&id, cmd), SIO_EKEYTYPE);
	/* an authorized_keys mixing all of them accepts only the ed25519 key */
	snprintf(cmd, sizeof cmd, "cat %s/rsa.pub %s/ec.pub %s/a.pub > %s/authorized_keys", dir,
	         dir, dir, dir);
	CHECK_OK(run(cmd, NULL, 0));
	snprintf(cmd, sizeof cmd, "%s/authorized_keys", dir);
	CHECK_OK(sio_remote_load(&r, cmd));
	CHECK_EQ(sio_remote_count(r), 1);
	sio_remote_free(r);
	CHECK(id == NULL);
}

int main(void)
{
	CHECK_OK(sio_init());
	if (run("command -v ssh-keygen >/dev/null 2>&1", NULL, 0) != 0) {
		printf("test_identity_ssh: SKIPPED: ssh-keygen not installed (apt-get install "
		       "openssh-client)\n");
		return 0;
	}
	umask(022);
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	keygen_to_us();
	us_to_keygen();
	encrypted_both_ways();
	refused();
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (run(cmd, NULL, 0) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	return check_done("test_identity_ssh");
}
