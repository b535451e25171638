/* bcrypt_pbkdf and the key-file ciphers, without files: the Blowfish pi
 * table and key expansion against OpenSSL's BF_set_key, bcrypt_pbkdf
 * against OpenBSD's published vectors, every cipher both ways (tamper and
 * wrong passphrase give SIO_EPASSPHRASE, never a key), and the parser on
 * truncated or corrupted encrypted files. ssh-keygen interop is in
 * test_identity_ssh.c. */
#include <sodium.h>
#include <string.h>

#include "check.h"
#include "identity.h"
#include "keyfile_crypt.h"

#ifdef SIO_TEST_HAVE_OPENSSL
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <openssl/blowfish.h>
void sio_kf_blowfish_schedule(void *s, const uint8_t *key, size_t keylen);

static void blowfish_table(void)
{
	static const char long_key[] = "0123456789012345678901234567890123456789012345678901"
	                               "234567890123456789";
	static const char *const keys[] = {"abcdefghijklmnopqrstuvwxyz", "k", "\xff\x00\x80",
	                                   long_key};
	for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
		BF_KEY a, b;
		size_t len = strlen(keys[i]) ? strlen(keys[i]) : 1;
		if (i == 2)
			len = 3;
		if (len > 72)
			len = 72; /* BF_set_key uses at most 72 bytes */
		BF_set_key(&a, (int)len, (const unsigned char *)keys[i]);
		sio_kf_blowfish_schedule(&b, (const uint8_t *)keys[i], len);
		CHECK(memcmp(&a, &b, sizeof a) == 0);
	}
}
#endif

static void vectors(void)
{
	/* OpenBSD's regression vectors for bcrypt_pbkdf (also in Go's
	 * x/crypto/ssh and RustCrypto's bcrypt-pbkdf tests) */
	static const struct {
		const char *pass;
		size_t plen;
		const char *salt;
		size_t slen;
		unsigned rounds;
		const char *hex;
	} v[] = {
	    {"password", 8, "salt", 4, 4,
	     "5bbf0cc293587f1c3635555c27796598d47e579071bf427e9d8fbe842aba34d9"},
	    {"password", 8, "\0", 1, 4, "c12b566235eee04c212598970a579a67"},
	    {"\0", 1, "salt", 4, 4, "6051be18c2f4f82cbf0efee5471b4bb9"},
	    {"password\0", 9, "salt\0", 5, 4,
	     "7410e44cf4fa07bfaac8a928b1727fac001375e7bf7384370f48efd121743050"},
	};
	for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
		uint8_t want[64], got[64];
		long n = check_unhex(v[i].hex, want, sizeof want);
		CHECK(n > 0);
		memset(got, 0, sizeof got);
		CHECK_OK(sio_bcrypt_pbkdf((const uint8_t *)v[i].pass, v[i].plen,
		                          (const uint8_t *)v[i].salt, v[i].slen, got, (size_t)n,
		                          v[i].rounds));
		CHECK(memcmp(got, want, (size_t)n) == 0);
	}
	uint8_t k[8];
	CHECK_EQ(sio_bcrypt_pbkdf((const uint8_t *)"", 0, (const uint8_t *)"s", 1, k, 8, 1),
	         SIO_EINVAL);
	CHECK_EQ(sio_bcrypt_pbkdf((const uint8_t *)"p", 1, (const uint8_t *)"s", 1, k, 8, 0),
	         SIO_EINVAL);
}

static const char *const all_ciphers[] = {
    "aes128-ctr", "aes192-ctr", "aes256-ctr", "aes128-cbc", "aes192-cbc", "aes256-cbc",
    "aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com"};

static int parse(const char *txt, size_t len, const char *pass, unsigned max_rounds,
                 uint8_t sk[64])
{
	struct sio_kf_pass pw = {(const uint8_t *)pass, pass ? strlen(pass) : 0, max_rounds};
	return sio_keyfile_parse_private_ex((const uint8_t *)txt, len, pass ? &pw : NULL, sk, NULL,
	                                    NULL, NULL, 0);
}

/* Decodes the base64 body of TXT into BIN; returns its length. */
static size_t unarmour(const char *txt, uint8_t *bin, size_t cap)
{
	const char *b = strchr(txt, '\n') + 1, *e = strstr(txt, "-----END");
	size_t blen = 0;
	sodium_base642bin(bin, cap, b, (size_t)(e - b), "\n", &blen, NULL,
	                  sodium_base64_VARIANT_ORIGINAL);
	return blen;
}

static char *armour(const uint8_t *bin, size_t len)
{
	static char out[8192];
	strcpy(out, "-----BEGIN OPENSSH PRIVATE KEY-----\n");
	sodium_bin2base64(out + strlen(out), 6000, bin, len, sodium_base64_VARIANT_ORIGINAL);
	strcat(out, "\n-----END OPENSSH PRIVATE KEY-----\n");
	return out;
}

static void round_trips(void)
{
	uint8_t pk[32], sk[64], got[64], pk2[32];
	crypto_sign_keypair(pk, sk);
	for (size_t i = 0; i < sizeof all_ciphers / sizeof *all_ciphers; i++) {
		char *txt = NULL;
		size_t len = 0;
		CHECK_OK(sio_keyfile_format_private_ex(sk, "c", 0x01020304, all_ciphers[i],
		                                       (const uint8_t *)"pw", 2, 2, &txt, &len));
		if (!txt)
			continue;
		char comment[16];
		int enc = 0;
		struct sio_kf_pass pw = {(const uint8_t *)"pw", 2, 16};
		CHECK_OK(sio_keyfile_parse_private_ex((const uint8_t *)txt, len, &pw, got, pk2, &enc,
		                                      comment, sizeof comment));
		CHECK(memcmp(got, sk, 64) == 0 && memcmp(pk2, pk, 32) == 0 && enc == 1);
		CHECK(strcmp(comment, "c") == 0);
		/* no passphrase: refused, but the public key is known */
		memset(pk2, 0, 32);
		CHECK_EQ(sio_keyfile_parse_private_ex((const uint8_t *)txt, len, NULL, got, pk2, &enc,
		                                      NULL, 0),
		         SIO_EENCRYPTED);
		CHECK(memcmp(pk2, pk, 32) == 0);
		CHECK_EQ(parse(txt, len, "pW", 16, got), SIO_EPASSPHRASE);
		CHECK_EQ(parse(txt, len, "", 16, got), SIO_EPASSPHRASE);
		CHECK_EQ(parse(txt, len, "pw", 1, got), SIO_EFORMAT); /* rounds over the cap */
		uint8_t zero[64] = {0};
		CHECK(memcmp(got, zero, 64) == 0); /* wiped on failure */

		uint8_t bin[4096];
		size_t blen = unarmour(txt, bin, sizeof bin);
		const struct sio_kf_cipher *c =
		    sio_kf_cipher_find((const uint8_t *)all_ciphers[i], strlen(all_ciphers[i]));
		/* the last encrypted byte (or the tag's) flipped: an AEAD cipher
		 * refuses it as a wrong passphrase; CTR/CBC reach the padding or
		 * the comment, never a different key */
		bin[blen - 1] ^= 0x40;
		char *t2 = armour(bin, blen);
		int rc = parse(t2, strlen(t2), "pw", 16, got);
		CHECK(rc != 0);
		if (c->authlen)
			CHECK_EQ(rc, SIO_EPASSPHRASE);
		bin[blen - 1] ^= 0x40;
		/* truncated anywhere: a format error, before the KDF runs */
		for (size_t cut = 1; cut < blen; cut += 7) {
			t2 = armour(bin, blen - cut);
			CHECK_EQ(parse(t2, strlen(t2), "pw", 16, got), SIO_EFORMAT);
		}
		/* one byte more: refused too */
		bin[blen] = 0;
		t2 = armour(bin, blen + 1);
		CHECK_EQ(parse(t2, strlen(t2), "pw", 16, got), SIO_EFORMAT);
		sio_keyfile_free_text(txt, len);
	}
	char *txt = NULL;
	size_t len = 0;
	CHECK_EQ(sio_keyfile_format_private_ex(sk, "", 1, "3des-cbc", (const uint8_t *)"p", 1, 16,
	                                       &txt, &len),
	         SIO_EINVAL);
	/* an empty passphrase writes an unencrypted key */
	CHECK_OK(sio_keyfile_format_private_ex(sk, "", 1, NULL, (const uint8_t *)"", 0, 16, &txt,
	                                       &len));
	CHECK_OK(parse(txt, len, NULL, 16, got));
	sio_keyfile_free_text(txt, len);
}

int main(void)
{
	CHECK(sodium_init() >= 0);
	CHECK(sio_kf_cipher_find((const uint8_t *)"aes256-ctr", 10) != NULL);
	CHECK(sio_kf_cipher_find((const uint8_t *)"aes256-ct", 9) == NULL);
	if (!sio_kf_crypt_available()) {
		printf("test_keyfile_crypt: built without OpenSSL, encrypted keys unsupported\n");
		uint8_t k[8];
		CHECK_EQ(sio_bcrypt_pbkdf((const uint8_t *)"p", 1, (const uint8_t *)"s", 1, k, 8, 1),
		         SIO_ECRYPTO);
		return check_done("test_keyfile_crypt");
	}
#ifdef SIO_TEST_HAVE_OPENSSL
	blowfish_table();
#endif
	vectors();
	round_trips();
	return check_done("test_keyfile_crypt");
}
