/* Identities (Ed25519 key pairs) and remote key sets, in memory. The file
 * formats live in keyfile.c (parsing/formatting) and keyfile_io.c (files). */
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "identity.h"

/* Both are reference-counted: the program's handle is one reference, each
 * session or listener using the object holds another, so the program may
 * free its handle while a session (say, one freed from its own handler,
 * whose I/O thread ends later) still uses the object. */
struct sio_identity {
	uint8_t sk[SIO_SECRET_KEY_BYTES]; /* seed || public key; zero with a signer */
	uint8_t pk[SIO_PUBLIC_KEY_BYTES];
	sio_sign_fn sign; /* set: signatures are made elsewhere (agent, HSM) */
	void *sign_ctx;
	void (*sign_free)(void *ctx);
	atomic_int refs;
};

/* One authorized_keys line's restriction: PK may connect from FROM's
 * addresses (FROM NULL: from anywhere). */
struct remote_rule {
	uint8_t pk[SIO_PUBLIC_KEY_BYTES];
	char *from;
};

/* A key set: the keys in insertion order (sio_remote_key), plus an
 * open-addressing index over them so that a lookup costs one keyed hash and
 * a few compares whatever the size (a listener looks up the identity of
 * every first key-exchange message, junk included, under its lock). The
 * hash is SipHash (crypto_shorthash) under a random key per set: nobody
 * can choose keys that collide and turn lookups back into scans. The rules
 * come from authorized_keys options (see allows()). */
struct sio_remote {
	size_t n, cap;
	uint8_t (*pk)[SIO_PUBLIC_KEY_BYTES];
	uint32_t *slot;  /* hcap entries: index into pk + 1, 0 = empty */
	size_t hcap;     /* power of two, at least twice n */
	uint8_t hkey[crypto_shorthash_KEYBYTES];
	struct remote_rule *rules;
	size_t nrules;
	int restricted; /* some rule has a from= list */
	atomic_int refs;
};

static const char ssh_ed25519_name[] = "ssh-ed25519";

static int identity_alloc(sio_identity **out)
{
	if (!out)
		return SIO_EINVAL;
	*out = NULL;
	if (sodium_init() < 0)
		return SIO_ECRYPTO;
	sio_identity *id = calloc(1, sizeof *id);
	if (!id)
		return SIO_ENOMEM;
	atomic_init(&id->refs, 1);
	*out = id;
	return 0;
}

int sio_identity_from_seed(sio_identity **out, const uint8_t seed[SIO_SEED_BYTES])
{
	if (!seed)
		return SIO_EINVAL;
	int rc = identity_alloc(out);
	if (rc)
		return rc;
	if (crypto_sign_seed_keypair((*out)->pk, (*out)->sk, seed) != 0) {
		sio_identity_free(*out);
		*out = NULL;
		return SIO_ECRYPTO;
	}
	return 0;
}

int sio_identity_generate(sio_identity **out)
{
	int rc = identity_alloc(out);
	if (rc)
		return rc;
	if (crypto_sign_keypair((*out)->pk, (*out)->sk) != 0) {
		sio_identity_free(*out);
		*out = NULL;
		return SIO_ECRYPTO;
	}
	return 0;
}

int sio_identity_from_secret(sio_identity **out, const uint8_t sk[SIO_SECRET_KEY_BYTES])
{
	if (!sk)
		return SIO_EINVAL;
	int rc = sio_identity_from_seed(out, sk); /* seed = first 32 bytes */
	if (rc)
		return rc;
	if (sodium_memcmp((*out)->sk + 32, sk + 32, 32) != 0) {
		sio_identity_free(*out);
		*out = NULL;
		return SIO_EMISMATCH;
	}
	return 0;
}

int sio_identity_from_signer(sio_identity **out, const uint8_t pk[SIO_PUBLIC_KEY_BYTES],
                             sio_sign_fn sign, void *ctx, void (*free_ctx)(void *ctx))
{
	if (!pk || !sign)
		return SIO_EINVAL;
	int rc = identity_alloc(out);
	if (rc)
		return rc;
	memcpy((*out)->pk, pk, SIO_PUBLIC_KEY_BYTES);
	(*out)->sign = sign;
	(*out)->sign_ctx = ctx;
	(*out)->sign_free = free_ctx;
	return 0;
}

void sio_identity_public_key(const sio_identity *id, uint8_t pk[SIO_PUBLIC_KEY_BYTES])
{
	memcpy(pk, id->pk, SIO_PUBLIC_KEY_BYTES);
}

const uint8_t *sio_identity_secret_key(const sio_identity *id)
{
	return id->sign ? NULL : id->sk;
}

int sio_identity_is_external(const sio_identity *id)
{
	return id && id->sign != NULL;
}

int sio_identity_sign(const sio_identity *id, uint8_t sig[64], const uint8_t *msg, size_t len)
{
	if (!id->sign) {
		crypto_sign_detached(sig, NULL, msg, len, id->sk);
		return 0;
	}
	int rc = id->sign(id->sign_ctx, sig, msg, len);
	if (rc == 0 && crypto_sign_verify_detached(sig, msg, len, id->pk) != 0)
		rc = SIO_ESIGN; /* another key's signature, or garbage: never sent */
	if (rc > 0)
		rc = SIO_ESIGN;
	if (rc)
		sodium_memzero(sig, 64);
	return rc;
}

sio_identity *sio_identity_ref(const sio_identity *id)
{
	sio_identity *m = (sio_identity *)id;
	if (m)
		atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
	return m;
}

void sio_identity_free(sio_identity *id)
{
	if (!id || atomic_fetch_sub_explicit(&id->refs, 1, memory_order_acq_rel) != 1)
		return;
	if (id->sign_free)
		id->sign_free(id->sign_ctx);
	sodium_memzero(id, sizeof *id);
	free(id);
}

/* ---- remote key sets --------------------------------------------------- */

int sio_remote_new(sio_remote **out)
{
	if (!out)
		return SIO_EINVAL;
	*out = NULL;
	if (sodium_init() < 0)
		return SIO_ECRYPTO;
	*out = calloc(1, sizeof **out);
	if (!*out)
		return SIO_ENOMEM;
	randombytes_buf((*out)->hkey, sizeof((*out)->hkey));
	atomic_init(&(*out)->refs, 1);
	return 0;
}

static size_t remote_hash(const sio_remote *r, const uint8_t *pk)
{
	uint8_t h[crypto_shorthash_BYTES];
	crypto_shorthash(h, pk, SIO_PUBLIC_KEY_BYTES, r->hkey);
	uint64_t v;
	memcpy(&v, h, sizeof(v));
	return (size_t)v & (r->hcap - 1);
}

/* Slot of PK in the index: where it is, or the empty slot ending its probe
 * sequence (the index is never full: hcap >= 2 n). */
static size_t remote_find(const sio_remote *r, const uint8_t *pk)
{
	size_t i = remote_hash(r, pk);
	while (r->slot[i] && sodium_memcmp(r->pk[r->slot[i] - 1], pk, SIO_PUBLIC_KEY_BYTES) != 0)
		i = (i + 1) & (r->hcap - 1);
	return i;
}

/* Makes room for one more key: arrays and index grown (index rebuilt). */
static int remote_grow(sio_remote *r)
{
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 4;
		if (cap > UINT32_MAX / 4)
			return SIO_ENOMEM;
		void *p = realloc(r->pk, cap * sizeof *r->pk);
		if (!p)
			return SIO_ENOMEM;
		r->pk = p;
		r->cap = cap;
	}
	if (2 * (r->n + 1) <= r->hcap)
		return 0;
	size_t hcap = r->hcap ? r->hcap * 2 : 8;
	uint32_t *slot = calloc(hcap, sizeof(*slot));
	if (!slot)
		return SIO_ENOMEM;
	free(r->slot);
	r->slot = slot;
	r->hcap = hcap;
	for (size_t k = 0; k < r->n; k++)
		r->slot[remote_find(r, r->pk[k])] = (uint32_t)(k + 1);
	return 0;
}

int sio_remote_from_public_key(sio_remote **out, const uint8_t pk[SIO_PUBLIC_KEY_BYTES])
{
	if (!pk)
		return SIO_EINVAL;
	int rc = sio_remote_new(out);
	if (rc)
		return rc;
	rc = sio_remote_add(*out, pk);
	if (rc) {
		sio_remote_free(*out);
		*out = NULL;
	}
	return rc;
}

int sio_remote_add(sio_remote *r, const uint8_t pk[SIO_PUBLIC_KEY_BYTES])
{
	if (!r || !pk)
		return SIO_EINVAL;
	if (sio_remote_contains(r, pk))
		return 0; /* a set: duplicates are kept once */
	int e = remote_grow(r);
	if (e < 0)
		return e;
	memcpy(r->pk[r->n], pk, SIO_PUBLIC_KEY_BYTES);
	r->slot[remote_find(r, pk)] = (uint32_t)(r->n + 1);
	r->n++;
	return 0;
}

/* Each compare is constant time (sodium_memcmp); which slots are probed
 * depends on a keyed hash the caller cannot compute. */
int sio_remote_contains(const sio_remote *r, const uint8_t pk[SIO_PUBLIC_KEY_BYTES])
{
	if (!r || !pk || r->n == 0)
		return 0;
	return r->slot[remote_find(r, pk)] != 0;
}

size_t sio_remote_count(const sio_remote *r)
{
	return r ? r->n : 0;
}

int sio_remote_key(const sio_remote *r, size_t i, uint8_t pk[SIO_PUBLIC_KEY_BYTES])
{
	if (!r || !pk || i >= r->n)
		return SIO_EINVAL;
	memcpy(pk, r->pk[i], SIO_PUBLIC_KEY_BYTES);
	return 0;
}

sio_remote *sio_remote_ref(const sio_remote *r)
{
	sio_remote *m = (sio_remote *)r;
	if (m)
		atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
	return m;
}

int sio_remote_add_rule(sio_remote *r, const uint8_t pk[SIO_PUBLIC_KEY_BYTES], const char *from)
{
	int rc = sio_remote_add(r, pk);
	if (rc)
		return rc;
	struct remote_rule *nr = realloc(r->rules, (r->nrules + 1) * sizeof *nr);
	if (!nr)
		return SIO_ENOMEM;
	r->rules = nr;
	memcpy(nr[r->nrules].pk, pk, SIO_PUBLIC_KEY_BYTES);
	nr[r->nrules].from = NULL;
	if (from && !(nr[r->nrules].from = strdup(from)))
		return SIO_ENOMEM;
	r->nrules++;
	if (from)
		r->restricted = 1;
	return 0;
}

int sio_remote_has_rules(const sio_remote *r)
{
	return r && r->restricted;
}

int sio_remote_allows(const sio_remote *r, const uint8_t pk[SIO_PUBLIC_KEY_BYTES],
                      const struct sockaddr *sa, socklen_t salen)
{
	if (!sio_remote_contains(r, pk))
		return 0;
	if (!r->restricted)
		return 1;
	int lines = 0;
	for (size_t i = 0; i < r->nrules; i++) {
		if (memcmp(r->rules[i].pk, pk, SIO_PUBLIC_KEY_BYTES) != 0)
			continue;
		lines++;
		if (!r->rules[i].from || sio_from_list_match(r->rules[i].from, sa, salen))
			return 1;
	}
	return lines == 0; /* added by sio_remote_add: no restriction */
}

int sio_remote_copy(sio_remote **out, const sio_remote *in)
{
	if (!out || !in)
		return SIO_EINVAL;
	int rc = sio_remote_new(out);
	for (size_t i = 0; rc == 0 && i < in->n; i++)
		rc = sio_remote_add(*out, in->pk[i]);
	for (size_t i = 0; rc == 0 && i < in->nrules; i++)
		rc = sio_remote_add_rule(*out, in->rules[i].pk, in->rules[i].from);
	if (rc) {
		sio_remote_free(*out);
		*out = NULL;
	}
	return rc;
}

void sio_remote_free(sio_remote *r)
{
	if (!r || atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) != 1)
		return;
	for (size_t i = 0; i < r->nrules; i++)
		free(r->rules[i].from);
	free(r->rules);
	free(r->pk);
	free(r->slot);
	free(r);
}

/* ---- textual forms ----------------------------------------------------- */

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

void sio_pubkey_blob(const uint8_t pk[SIO_PUBLIC_KEY_BYTES], uint8_t blob[SIO_PUBKEY_BLOB_BYTES])
{
	put32(blob, 11);
	memcpy(blob + 4, ssh_ed25519_name, 11);
	put32(blob + 15, 32);
	memcpy(blob + 19, pk, 32);
}

int sio_fingerprint(const uint8_t pk[SIO_PUBLIC_KEY_BYTES], char *out, size_t outlen)
{
	uint8_t blob[SIO_PUBKEY_BLOB_BYTES], h[crypto_hash_sha256_BYTES];
	char b64[sodium_base64_ENCODED_LEN(crypto_hash_sha256_BYTES,
	                                   sodium_base64_VARIANT_ORIGINAL_NO_PADDING)];
	if (!pk || !out)
		return SIO_EINVAL;
	if (sodium_init() < 0)
		return SIO_ECRYPTO;
	sio_pubkey_blob(pk, blob);
	crypto_hash_sha256(h, blob, sizeof blob);
	sodium_bin2base64(b64, sizeof b64, h, sizeof h, sodium_base64_VARIANT_ORIGINAL_NO_PADDING);
	size_t need = 7 + strlen(b64) + 1;
	if (outlen < need)
		return SIO_EINVAL;
	memcpy(out, "SHA256:", 7);
	memcpy(out + 7, b64, need - 7);
	return 0;
}

int sio_public_key_line(const uint8_t pk[SIO_PUBLIC_KEY_BYTES], const char *comment, char *out,
                        size_t outlen)
{
	uint8_t blob[SIO_PUBKEY_BLOB_BYTES];
	char b64[sodium_base64_ENCODED_LEN(SIO_PUBKEY_BLOB_BYTES, sodium_base64_VARIANT_ORIGINAL)];
	if (!pk || !out)
		return SIO_EINVAL;
	if (comment && strpbrk(comment, "\r\n"))
		return SIO_EINVAL;
	sio_pubkey_blob(pk, blob);
	sodium_bin2base64(b64, sizeof b64, blob, sizeof blob, sodium_base64_VARIANT_ORIGINAL);
	size_t clen = comment ? strlen(comment) : 0;
	size_t need = 12 + strlen(b64) + (clen ? 1 + clen : 0) + 1;
	if (outlen < need)
		return SIO_EINVAL;
	int n = clen ? snprintf(out, outlen, "ssh-ed25519 %s %s", b64, comment)
	             : snprintf(out, outlen, "ssh-ed25519 %s", b64);
	return n < 0 ? SIO_EINVAL : 0;
}
