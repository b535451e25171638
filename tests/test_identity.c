/* Identity module, in memory: seeds, generation, remote sets, fingerprints
 * and public key lines (vectors: RFC 8032 test 1, fingerprint from ssh-keygen -l). */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "identity.h"
#include "secureio.h"

#define SEED1 "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
#define PK1   "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
#define LINE1 "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINdamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea"
#define FP1   "SHA256:bbXpuKG6zhzdmnxq256TlqzFBzRl2f6OOg722cYNbU8"

static void test_seed(void)
{
	uint8_t seed[32], pk[32], want[32];
	sio_identity *id = NULL;
	CHECK_EQ(check_unhex(SEED1, seed, 32), 32);
	CHECK_EQ(check_unhex(PK1, want, 32), 32);
	CHECK_OK(sio_identity_from_seed(&id, seed));
	sio_identity_public_key(id, pk);
	CHECK(memcmp(pk, want, 32) == 0);
	const uint8_t *sk = sio_identity_secret_key(id);
	CHECK(memcmp(sk, seed, 32) == 0 && memcmp(sk + 32, want, 32) == 0);
	/* the secret key signs verifiably for the public key */
	uint8_t sig[64];
	CHECK_OK(crypto_sign_detached(sig, NULL, (const uint8_t *)"m", 1, sk));
	CHECK_OK(crypto_sign_verify_detached(sig, (const uint8_t *)"m", 1, pk));

	/* from a 64-byte secret: accepted when consistent, refused otherwise */
	sio_identity *id2 = NULL;
	uint8_t bad[64];
	CHECK_OK(sio_identity_from_secret(&id2, sk));
	sio_identity_free(id2);
	memcpy(bad, sk, 64);
	bad[40] ^= 1;
	id2 = (sio_identity *)1;
	CHECK_EQ(sio_identity_from_secret(&id2, bad), SIO_EMISMATCH);
	CHECK(id2 == NULL);
	sio_identity_free(id);
	sio_identity_free(NULL);
	CHECK_EQ(sio_identity_from_seed(NULL, seed), SIO_EINVAL);
	CHECK_EQ(sio_identity_from_seed(&id, NULL), SIO_EINVAL);
}

static void test_generate(void)
{
	sio_identity *a = NULL, *b = NULL;
	uint8_t pa[32], pb[32];
	CHECK_OK(sio_identity_generate(&a));
	CHECK_OK(sio_identity_generate(&b));
	sio_identity_public_key(a, pa);
	sio_identity_public_key(b, pb);
	CHECK(memcmp(pa, pb, 32) != 0);
	/* the public half of the secret key is the one derived from its seed */
	sio_identity *c = NULL;
	CHECK_OK(sio_identity_from_secret(&c, sio_identity_secret_key(a)));
	sio_identity_free(c);
	sio_identity_free(a);
	sio_identity_free(b);
	CHECK_EQ(sio_identity_generate(NULL), SIO_EINVAL);
}

static void test_remote(void)
{
	uint8_t k[5][32], out[32];
	for (int i = 0; i < 5; i++)
		randombytes_buf(k[i], 32);
	sio_remote *r = NULL;
	CHECK_OK(sio_remote_from_public_key(&r, k[0]));
	CHECK_EQ(sio_remote_count(r), 1);
	CHECK_EQ(sio_remote_contains(r, k[0]), 1);
	CHECK_EQ(sio_remote_contains(r, k[1]), 0);
	for (int i = 1; i < 4; i++)
		CHECK_OK(sio_remote_add(r, k[i]));
	CHECK_OK(sio_remote_add(r, k[2])); /* duplicate kept once */
	CHECK_EQ(sio_remote_count(r), 4);
	for (int i = 0; i < 4; i++) {
		CHECK_EQ(sio_remote_contains(r, k[i]), 1);
		CHECK_OK(sio_remote_key(r, (size_t)i, out));
		CHECK(memcmp(out, k[i], 32) == 0);
	}
	CHECK_EQ(sio_remote_contains(r, k[4]), 0);
	/* a key differing in one bit only is not in the set */
	memcpy(out, k[3], 32);
	out[31] ^= 0x80;
	CHECK_EQ(sio_remote_contains(r, out), 0);
	CHECK_EQ(sio_remote_key(r, 4, out), SIO_EINVAL);
	CHECK_EQ(sio_remote_count(NULL), 0);
	CHECK_EQ(sio_remote_contains(NULL, k[0]), 0);
	sio_remote_free(r);
	sio_remote_free(NULL);
}

/* A large set (an authorized_keys file of thousands of lines, as a
 * listener's allowed set): every key found, in insertion order, none of
 * thousands of others, no key one bit away; duplicates kept once. */
static void test_remote_large(void)
{
	enum { N = 5000 };
	uint8_t(*k)[32] = malloc((size_t)2 * N * 32);
	CHECK(k != NULL);
	if (!k)
		return;
	randombytes_buf(k, (size_t)2 * N * 32);
	sio_remote *r = NULL;
	CHECK_OK(sio_remote_new(&r));
	for (int i = 0; i < N; i++)
		CHECK_OK(sio_remote_add(r, k[i]));
	for (int i = 0; i < N; i += 7)
		CHECK_OK(sio_remote_add(r, k[i]));
	CHECK_EQ(sio_remote_count(r), N);
	int in = 0, out = 0, near = 0, order = 0;
	uint8_t pk[32];
	for (int i = 0; i < N; i++) {
		in += sio_remote_contains(r, k[i]);
		out += sio_remote_contains(r, k[N + i]);
		memcpy(pk, k[i], 32);
		pk[i % 32] ^= (uint8_t)(1u << (i % 8));
		near += sio_remote_contains(r, pk);
		order += sio_remote_key(r, (size_t)i, pk) == 0 && memcmp(pk, k[i], 32) == 0;
	}
	CHECK_EQ(in, N);
	CHECK_EQ(out, 0);
	CHECK_EQ(near, 0);
	CHECK_EQ(order, N);
	sio_remote_free(r);
	free(k);
}

static void test_text(void)
{
	uint8_t pk[32];
	char buf[SIO_PUBKEY_LINE_MAX], fp[SIO_FINGERPRINT_MAX];
	CHECK_EQ(check_unhex(PK1, pk, 32), 32);
	CHECK_OK(sio_fingerprint(pk, fp, sizeof fp));
	CHECK(strcmp(fp, FP1) == 0);
	CHECK_EQ(sio_fingerprint(pk, fp, strlen(FP1)), SIO_EINVAL); /* no room for NUL */
	CHECK_OK(sio_fingerprint(pk, fp, strlen(FP1) + 1));
	CHECK_OK(sio_public_key_line(pk, NULL, buf, sizeof buf));
	CHECK(strcmp(buf, LINE1) == 0);
	CHECK_OK(sio_public_key_line(pk, "", buf, sizeof buf));
	CHECK(strcmp(buf, LINE1) == 0);
	CHECK_OK(sio_public_key_line(pk, "me@host", buf, sizeof buf));
	CHECK(strcmp(buf, LINE1 " me@host") == 0);
	CHECK_EQ(sio_public_key_line(pk, "a\nb", buf, sizeof buf), SIO_EINVAL);
	CHECK_EQ(sio_public_key_line(pk, "me@host", buf, strlen(LINE1) + 8), SIO_EINVAL);
	CHECK_OK(sio_public_key_line(pk, "me@host", buf, strlen(LINE1) + 9));
}

int main(void)
{
	CHECK_OK(sio_init());
	test_seed();
	test_generate();
	test_remote();
	test_remote_large();
	test_text();
	return check_done("test_identity");
}
