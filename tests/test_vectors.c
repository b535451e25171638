/* Test vectors (tests/vectors/protocol.txt): the key exchange, key schedule,
 * PSK protection and data packets are recomputed here from the text of
 * docs/PROTOCOL.md with plain libsodium calls (not the library's kx.c or
 * aead.c), compared with the file, and then two real cores, fed the same
 * identities, randomness and clocks, must put exactly those bytes on the
 * wire. SIO_VECTORS_WRITE=1 prints a fresh file instead of checking. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core_int.h"
#include "wire.h"

#define MAXV 64
static struct {
	char name[64];
	uint8_t val[1536];
	size_t len;
} vec[MAXV];
static size_t nvec;
static int writing;

static const uint8_t *get(const char *name, size_t *len)
{
	for (size_t i = 0; i < nvec; i++)
		if (strcmp(vec[i].name, name) == 0) {
			if (len)
				*len = vec[i].len;
			return vec[i].val;
		}
	fprintf(stderr, "vector %s missing\n", name);
	CHECK(!"vector missing");
	static uint8_t zero[1536];
	if (len)
		*len = 0;
	return zero;
}

static void load(const char *path)
{
	FILE *f = fopen(path, "r");
	char line[4096];
	CHECK(f != NULL);
	if (!f)
		return;
	while (fgets(line, sizeof line, f)) {
		char *eq = strchr(line, '=');
		if (line[0] == '#' || !eq)
			continue;
		*eq = 0;
		char *name = line, *hex = eq + 1;
		while (*name == ' ')
			name++;
		for (char *e = name + strlen(name); e > name && e[-1] == ' ';)
			*--e = 0;
		while (*hex == ' ')
			hex++;
		hex[strcspn(hex, " \r\n")] = 0;
		if (nvec == MAXV)
			break;
		size_t nl = strlen(name);
		if (nl >= sizeof vec[nvec].name)
			nl = sizeof vec[nvec].name - 1;
		memcpy(vec[nvec].name, name, nl);
		vec[nvec].name[nl] = 0;
		long n = check_unhex(hex, vec[nvec].val, sizeof vec[nvec].val);
		CHECK(n >= 0);
		vec[nvec].len = n < 0 ? 0 : (size_t)n;
		nvec++;
	}
	fclose(f);
}

/* Compares (or, when writing, prints) one output vector. */
static void out(const char *name, const uint8_t *v, size_t len)
{
	if (writing) {
		printf("%s = ", name);
		for (size_t i = 0; i < len; i++)
			printf("%02x", v[i]);
		printf("\n");
		return;
	}
	size_t l;
	const uint8_t *want = get(name, &l);
	if (l != len || memcmp(want, v, len) != 0) {
		fprintf(stderr, "vector %s differs\n", name);
		CHECK(!"vector differs");
	} else {
		check_passed++;
	}
}

/* ---- the spec, recomputed with libsodium only -------------------------- */

static void kx_msg(uint8_t m[175], const uint8_t sid[16], const uint8_t sid_recv[16], uint32_t gen,
		   uint8_t mode, uint64_t created, const uint8_t esk[32], const uint8_t sk[64])
{
	static const char dom[] = "secureio/1 kx signature";
	uint8_t sb[23 + 111];
	m[0] = 0x80;
	m[1] = 1;
	memcpy(m + 2, sid, 16);
	memcpy(m + 18, sid_recv, 16);
	sio_put_le32(m + 34, gen);
	m[38] = mode;
	sio_put_le64(m + 39, created);
	crypto_scalarmult_base(m + 47, esk);
	memcpy(m + 79, sk + 32, 32);
	memcpy(sb, dom, 23);
	memcpy(sb + 23, m, 111);
	crypto_sign_detached(m + 111, NULL, sb, sizeof sb, sk);
}

static void hash2(uint8_t out32[32], const uint8_t *key, const char *dom, const uint8_t *a,
		  size_t al, const uint8_t *b, size_t bl)
{
	crypto_generichash_state st;
	crypto_generichash_init(&st, key, key ? 32 : 0, 32);
	crypto_generichash_update(&st, (const uint8_t *)dom, strlen(dom));
	crypto_generichash_update(&st, a, al);
	if (b)
		crypto_generichash_update(&st, b, bl);
	crypto_generichash_final(&st, out32, 32);
}

/* A data packet: header 0x40|kid, LE32 pn; XChaCha20-Poly1305 with nonce
 * sid || LE64(pn) and the header as associated data; then, with a PSK, the
 * header protection. */
static size_t data_packet(uint8_t *pkt, const uint8_t key[32], const uint8_t sid[16], int kid,
			  uint32_t pn, const uint8_t *pt, size_t ptlen, const uint8_t *hp_key)
{
	uint8_t nonce[24];
	unsigned long long cl;
	pkt[0] = (uint8_t)(0x40 | kid);
	sio_put_le32(pkt + 1, pn);
	memcpy(nonce, sid, 16);
	sio_put_le64(nonce + 16, pn);
	crypto_aead_xchacha20poly1305_ietf_encrypt(pkt + 5, &cl, pt, ptlen, pkt, 5, NULL, nonce, key);
	if (hp_key) {
		uint8_t mask[32];
		crypto_core_hchacha20(mask, pkt + 5, hp_key, NULL);
		pkt[0] ^= mask[0] & 0x3f;
		for (int i = 0; i < 4; i++)
			pkt[1 + i] ^= mask[1 + i];
	}
	return 5 + (size_t)cl;
}

/* KDF(key, id, ctx) as PROTOCOL.md writes it out: BLAKE2b keyed with KEY,
 * salt LE64(id) || 0^8, personalisation ctx || 0^8, empty message, 32-byte
 * digest (libsodium's crypto_kdf_derive_from_key, which the library uses,
 * is checked against it below). */
static void kdf(uint8_t out[32], const uint8_t key[32], uint64_t id, const char ctx[8])
{
	uint8_t salt[16] = {0}, person[16] = {0};
	sio_put_le64(salt, id);
	memcpy(person, ctx, 8);
	CHECK_OK(crypto_generichash_blake2b_salt_personal(out, 32, NULL, 0, key, 32, salt, person));
}

/* LEB128, as PROTOCOL.md's varint (written here, not taken from wire.h). */
static size_t leb(uint8_t *p, uint32_t v)
{
	size_t n = 0;
	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

/* A fragmented message (§14.2): FRAG_LEN bytes of the default type, message
 * id 1, cut for 1452-byte packets (1431 bytes of frames each): every
 * fragment but the last fills its packet and has no length (L set); the
 * last one carries its length. Returns the number of packets. */
#define FRAG_LEN 3000u
#define FRAG_ROOM (1452u - 5u - 16u)
static size_t frag_packets(uint8_t pkts[][1452], size_t lens[], const uint8_t key[32],
			   const uint8_t sid[16], uint32_t pn0)
{
	uint8_t msg[FRAG_LEN], fr[FRAG_ROOM];
	for (uint32_t i = 0; i < FRAG_LEN; i++)
		msg[i] = (uint8_t)(i * 13 + 5);
	size_t np = 0;
	uint32_t off = 0;
	while (off < FRAG_LEN) {
		size_t h = 0;
		fr[h++] = 0x07;
		fr[h++] = 0x00; /* type code 0: SIO_TYPE_READWRITE */
		h += leb(fr + h, 1); /* message id */
		h += leb(fr + h, FRAG_LEN);
		h += leb(fr + h, off);
		uint32_t n = FRAG_LEN - off;
		uint8_t lb[5];
		size_t ll = leb(lb, n);
		if (h + ll + n <= FRAG_ROOM) { /* the last fragment, with its length */
			memcpy(fr + h, lb, ll);
			h += ll;
		} else { /* fills the packet: L, no length */
			fr[0] |= 0x80;
			n = (uint32_t)(FRAG_ROOM - h);
		}
		memcpy(fr + h, msg + off, n);
		lens[np] = data_packet(pkts[np], key, sid, 1, pn0 + (uint32_t)np, fr, h + n, NULL);
		np++;
		off += n;
	}
	return np;
}

static uint8_t frag_got[FRAG_LEN];
static size_t frag_got_len, frag_deliveries;
static void frag_deliver(void *ctx, uint32_t type, const uint8_t *d, size_t len)
{
	(void)ctx;
	frag_deliveries++;
	if (type == SIO_TYPE_READWRITE && len <= sizeof frag_got) {
		memcpy(frag_got, d, len);
		frag_got_len = len;
	}
}

typedef struct script {
	const uint8_t *bytes;
	size_t len, pos;
} script;

static void scripted(void *ctx, uint8_t *buf, size_t len)
{
	script *s = ctx;
	CHECK(s->pos + len <= s->len);
	if (s->pos + len <= s->len)
		memcpy(buf, s->bytes + s->pos, len);
	s->pos += len;
}

static size_t first_packet(sio_core *c, uint64_t now, uint8_t *buf, int want_kx)
{
	struct iovec iov[16];
	size_t n = sio_core_pending(c, now, iov, 16), got = 0;
	for (size_t i = 0; i < n; i++)
		if (!got && (((uint8_t *)iov[i].iov_base)[0] & 0x80 ? 1 : 0) == want_kx) {
			memcpy(buf, iov[i].iov_base, iov[i].iov_len);
			got = iov[i].iov_len;
		}
	sio_core_sent(c, n, 0);
	return got;
}

int main(int argc, char **argv)
{
	CHECK_OK(sio_init());
	writing = getenv("SIO_VECTORS_WRITE") != NULL;
	char path[1024];
	const char *src = getenv("SIO_SOURCE_DIR");
	snprintf(path, sizeof path, "%s/tests/vectors/protocol.txt", argc > 1 ? argv[1] : src ? src : ".");
	if (!writing)
		load(path);

	/* inputs */
	uint8_t seed_a[32], seed_b[32], rnd_a[8], rnd_b[8], esk_a[32], esk_b[32], psk[32], nonce_a[24],
		nonce_b[24], esk_a2[32], esk_b2[32];
	/* Renewal: A's timer fires at T1 (monotonic), B answers at T1 + 500 ns;
	 * the cores were started at T0 (A) and T0 + 77 (B). */
	const uint64_t T0 = 5000000000ull, T1 = T0 + 61000000000ull;
	uint64_t wall_a, wall_b, created_a1, created_b1;
	if (writing) {
		for (int i = 0; i < 32; i++) {
			seed_a[i] = (uint8_t)i;
			seed_b[i] = (uint8_t)(0x80 + i);
			esk_a[i] = (uint8_t)(0x20 + i);
			esk_b[i] = (uint8_t)(0xa0 + i);
			esk_a2[i] = (uint8_t)(0x40 + 3 * i);
			esk_b2[i] = (uint8_t)(0xc0 + 5 * i);
			psk[i] = (uint8_t)(0x50 ^ i);
		}
		for (int i = 0; i < 8; i++) {
			rnd_a[i] = (uint8_t)(0x11 * (i + 1));
			rnd_b[i] = (uint8_t)(0xf0 - i);
		}
		for (int i = 0; i < 24; i++) {
			nonce_a[i] = (uint8_t)(0xc0 + i);
			nonce_b[i] = (uint8_t)(0x30 + i);
		}
		wall_a = 1767225600000000000ull; /* 2026-01-01T00:00:00Z */
		wall_b = wall_a + 123456789;
		uint8_t w[8];
		printf("# secureio protocol test vectors (docs/PROTOCOL.md §12). hex, little-endian.\n");
		printf("# inputs\n");
		out("seed_a", seed_a, 32);
		out("seed_b", seed_b, 32);
		sio_put_le64(w, wall_a);
		out("wall_a", w, 8);
		sio_put_le64(w, wall_b);
		out("wall_b", w, 8);
		/* generation 1 is built when the session starts: its creation
		 * time is the wall clock read at creation (PROTOCOL.md §11) */
		created_a1 = wall_a;
		created_b1 = wall_b;
		sio_put_le64(w, created_a1);
		out("created_a_gen1", w, 8);
		sio_put_le64(w, created_b1);
		out("created_b_gen1", w, 8);
		out("sid_random_a", rnd_a, 8);
		out("sid_random_b", rnd_b, 8);
		out("esk_a", esk_a, 32);
		out("esk_b", esk_b, 32);
		out("esk_a_gen2", esk_a2, 32);
		out("esk_b_gen2", esk_b2, 32);
		out("psk", psk, 32);
		out("psk_nonce_a", nonce_a, 24);
		out("psk_nonce_b", nonce_b, 24);
		printf("# outputs\n");
	} else {
		memcpy(seed_a, get("seed_a", NULL), 32);
		memcpy(seed_b, get("seed_b", NULL), 32);
		wall_a = sio_get_le64(get("wall_a", NULL));
		wall_b = sio_get_le64(get("wall_b", NULL));
		created_a1 = sio_get_le64(get("created_a_gen1", NULL));
		created_b1 = sio_get_le64(get("created_b_gen1", NULL));
		memcpy(rnd_a, get("sid_random_a", NULL), 8);
		memcpy(rnd_b, get("sid_random_b", NULL), 8);
		memcpy(esk_a, get("esk_a", NULL), 32);
		memcpy(esk_b, get("esk_b", NULL), 32);
		memcpy(esk_a2, get("esk_a_gen2", NULL), 32);
		memcpy(esk_b2, get("esk_b_gen2", NULL), 32);
		memcpy(psk, get("psk", NULL), 32);
		memcpy(nonce_a, get("psk_nonce_a", NULL), 24);
		memcpy(nonce_b, get("psk_nonce_b", NULL), 24);
	}

	/* identities and session ids */
	uint8_t pk_a[32], sk_a[64], pk_b[32], sk_b[64], sid_a[16], sid_b[16], zero[16] = {0};
	crypto_sign_seed_keypair(pk_a, sk_a, seed_a);
	crypto_sign_seed_keypair(pk_b, sk_b, seed_b);
	out("identity_pk_a", pk_a, 32);
	out("identity_pk_b", pk_b, 32);
	sio_put_le64(sid_a, wall_a);
	memcpy(sid_a + 8, rnd_a, 8);
	sio_put_le64(sid_b, wall_b);
	memcpy(sid_b + 8, rnd_b, 8);
	out("sid_a", sid_a, 16);
	out("sid_b", sid_b, 16);

	/* generation 1, both sides started at once (receiver ids unknown) */
	uint8_t m_a[175], m_b[175], th[32], dh[32], dh2[32], prk[32], k_a2b[32], k_b2a[32];
	kx_msg(m_a, sid_a, zero, 1, 1, created_a1, esk_a, sk_a);
	kx_msg(m_b, sid_b, zero, 1, 1, created_b1, esk_b, sk_b);
	out("kx_msg_a", m_a, 175);
	out("kx_msg_b", m_b, 175);
	int a_lo = memcmp(sid_a, sid_b, 16) < 0;
	hash2(th, NULL, "secureio/1 transcript", a_lo ? m_a : m_b, 175, a_lo ? m_b : m_a, 175);
	out("transcript", th, 32);
	CHECK_OK(crypto_scalarmult(dh, esk_a, m_b + 47));
	CHECK_OK(crypto_scalarmult(dh2, esk_b, m_a + 47));
	CHECK(memcmp(dh, dh2, 32) == 0);
	out("x25519", dh, 32);
	hash2(prk, NULL, "secureio/1 traffic keys", dh, 32, th, 32);
	out("prk", prk, 32);
	kdf(a_lo ? k_a2b : k_b2a, prk, 1, "sio1data");
	kdf(a_lo ? k_b2a : k_a2b, prk, 2, "sio1data");
	out("key_a2b", k_a2b, 32);
	out("key_b2a", k_b2a, 32);
	/* the answer A sends under the new key, then a message "hello" */
	uint8_t pkt_ans[64], pkt_hello[64], fr_ans = 0x03, fr_hello[6] = {0x81, 'h', 'e', 'l', 'l', 'o'};
	size_t l_ans = data_packet(pkt_ans, k_a2b, sid_a, 1, 0, &fr_ans, 1, NULL);
	size_t l_hello = data_packet(pkt_hello, k_a2b, sid_a, 1, 1, fr_hello, 6, NULL);
	out("packet_a_answer", pkt_ans, l_ans);
	out("packet_a_hello", pkt_hello, l_hello);

	/* with the PSK */
	uint8_t root[32], kdf_key[32], kx_key[32], hp_key[32], w_a[216], w_b[216], prk_p[32],
		kp_a2b[32], kp_b2a[32];
	hash2(root, NULL, "secureio/1 psk", psk, 32, NULL, 0);
	kdf(kdf_key, root, 1, "sio1psk_");
	kdf(kx_key, root, 2, "sio1psk_");
	kdf(hp_key, root, 3, "sio1psk_");
	out("psk_kdf_key", kdf_key, 32);
	out("psk_kx_key", kx_key, 32);
	out("psk_hp_key", hp_key, 32);
	const uint8_t *msgs[2] = {m_a, m_b}, *nonces[2] = {nonce_a, nonce_b};
	uint8_t *wraps[2] = {w_a, w_b};
	for (int i = 0; i < 2; i++) {
		unsigned long long cl;
		wraps[i][0] = 0x81;
		memcpy(wraps[i] + 1, nonces[i], 24);
		crypto_aead_xchacha20poly1305_ietf_encrypt(wraps[i] + 25, &cl, msgs[i], 175, wraps[i], 1,
							   NULL, nonces[i], kx_key);
		CHECK_EQ(cl, 191);
	}
	out("kx_wrapped_a", w_a, 216);
	out("kx_wrapped_b", w_b, 216);
	hash2(prk_p, kdf_key, "secureio/1 traffic keys", dh, 32, th, 32);
	kdf(a_lo ? kp_a2b : kp_b2a, prk_p, 1, "sio1data");
	kdf(a_lo ? kp_b2a : kp_a2b, prk_p, 2, "sio1data");
	out("psk_key_a2b", kp_a2b, 32);
	out("psk_key_b2a", kp_b2a, 32);
	uint8_t ppkt_ans[64], ppkt_hello[64];
	size_t pl_ans = data_packet(ppkt_ans, kp_a2b, sid_a, 1, 0, &fr_ans, 1, hp_key);
	size_t pl_hello = data_packet(ppkt_hello, kp_a2b, sid_a, 1, 1, fr_hello, 6, hp_key);
	out("psk_packet_a_answer", ppkt_ans, pl_ans);
	out("psk_packet_a_hello", ppkt_hello, pl_hello);

	/* generation 2 (renewal started by A's timer): both receiver ids known */
	uint64_t created_a2 = wall_a + (T1 - T0), created_b2 = wall_b + (T1 + 500 - (T0 + 77));
	uint8_t m_a2[175], m_b2[175], th2[32], prk2[32], k2_a2b[32], k2_b2a[32], cr[8];
	sio_put_le64(cr, created_a2);
	out("created_a_gen2", cr, 8);
	sio_put_le64(cr, created_b2);
	out("created_b_gen2", cr, 8);
	kx_msg(m_a2, sid_a, sid_b, 2, 1, created_a2, esk_a2, sk_a);
	kx_msg(m_b2, sid_b, sid_a, 2, 1, created_b2, esk_b2, sk_b);
	out("kx_msg_a_gen2", m_a2, 175);
	out("kx_msg_b_gen2", m_b2, 175);
	hash2(th2, NULL, "secureio/1 transcript", a_lo ? m_a2 : m_b2, 175, a_lo ? m_b2 : m_a2, 175);
	out("transcript_gen2", th2, 32);
	CHECK_OK(crypto_scalarmult(dh, esk_a2, m_b2 + 47));
	hash2(prk2, NULL, "secureio/1 traffic keys", dh, 32, th2, 32);
	kdf(a_lo ? k2_a2b : k2_b2a, prk2, 1, "sio1data");
	kdf(a_lo ? k2_b2a : k2_a2b, prk2, 2, "sio1data");
	out("key_a2b_gen2", k2_a2b, 32);
	out("key_b2a_gen2", k2_b2a, 32);
	uint8_t pkt_ans2[64];
	size_t l_ans2 = data_packet(pkt_ans2, k2_a2b, sid_a, 2, 0, &fr_ans, 1, NULL);
	out("packet_a_answer_gen2", pkt_ans2, l_ans2);
	/* after "hello" (packet number 1), A sends a 3000-byte message in
	 * three fragments (packet numbers 2, 3, 4; generation-1 keys) */
	static uint8_t fpk[3][1452];
	size_t flen[3];
	size_t nfrag = frag_packets(fpk, flen, k_a2b, sid_a, 2);
	CHECK_EQ(nfrag, 3);
	for (size_t i = 0; i < nfrag && i < 3; i++) {
		char name[32];
		snprintf(name, sizeof name, "packet_a_fragment%zu", i + 1);
		out(name, fpk[i], flen[i]);
	}
	if (writing)
		return 0;

	/* the library's own functions agree */
	sio_psk_keys pk;
	sio_psk_derive(&pk, psk, 32);
	CHECK(memcmp(pk.kdf_key, kdf_key, 32) == 0 && memcmp(pk.kx_key, kx_key, 32) == 0 &&
	      memcmp(pk.hp_key, hp_key, 32) == 0);

	/* two real cores with the same inputs put these exact bytes on the wire */
	for (int with_psk = 0; with_psk < 2; with_psk++) {
		/* randomness: session id half, then per generation the ephemeral
		 * secret (and with a PSK the wrapping nonce) */
		uint8_t ra[8 + 2 * (32 + 24)], rb[8 + 2 * (32 + 24)];
		size_t na = 0, nb = 0;
		memcpy(ra, rnd_a, 8);
		memcpy(rb, rnd_b, 8);
		na = nb = 8;
		memcpy(ra + na, esk_a, 32);
		memcpy(rb + nb, esk_b, 32);
		na += 32;
		nb += 32;
		if (with_psk) {
			memcpy(ra + na, nonce_a, 24);
			memcpy(rb + nb, nonce_b, 24);
			na += 24;
			nb += 24;
		}
		memcpy(ra + na, esk_a2, 32);
		memcpy(rb + nb, esk_b2, 32);
		na += 32;
		nb += 32;
		if (with_psk) { /* generation-2 nonces: not in the vectors */
			memset(ra + na, 0xaa, 24);
			memset(rb + nb, 0xbb, 24);
			na += 24;
			nb += 24;
		}
		script sa = {ra, na, 0}, sb = {rb, nb, 0};
		sio_core_cbs cba = {.ctx = &sa, .random = scripted}, cbb = {.ctx = &sb, .random = scripted};
		sio_core_config ca, cb;
		memset(&ca, 0, sizeof ca);
		memset(&cb, 0, sizeof cb);
		ca.ed25519_sk = sk_a;
		cb.ed25519_sk = sk_b;
		ca.datagram = cb.datagram = 1;
		/* Packet-size probing (on by default for datagrams) is not part of
		 * the vectors. */
		ca.opts.negotiation = cb.opts.negotiation = -1;
		ca.wallclock_ns = wall_a;
		cb.wallclock_ns = wall_b;
		if (with_psk) {
			ca.opts.psk = cb.opts.psk = psk;
			ca.opts.psk_len = cb.opts.psk_len = 32;
		}
		sio_remote *rem_a, *rem_b; /* each side pins the other */
		CHECK_OK(sio_remote_from_public_key(&rem_a, pk_b));
		CHECK_OK(sio_remote_from_public_key(&rem_b, pk_a));
		ca.remote = rem_a;
		cb.remote = rem_b;
		sio_core *a, *b;
		CHECK_OK(sio_core_new(&a, &ca, &cba));
		CHECK_OK(sio_core_new(&b, &cb, &cbb));
		CHECK(memcmp(a->sid, sid_a, 16) == 0 && memcmp(b->sid, sid_b, 16) == 0);
		uint64_t t0 = T0;
		CHECK_OK(sio_core_start(a, t0));
		CHECK_OK(sio_core_start(b, t0 + 77));
		uint8_t pa[256], pb[256], p[256];
		static uint8_t p2[1452];
		size_t la = first_packet(a, t0, pa, 1), lb = first_packet(b, t0 + 77, pb, 1);
		CHECK_EQ(la, with_psk ? 216 : 175);
		CHECK_EQ(lb, with_psk ? 216 : 175);
		CHECK(memcmp(pa, with_psk ? w_a : m_a, la) == 0);
		CHECK(memcmp(pb, with_psk ? w_b : m_b, lb) == 0);
		if (!with_psk) {
			/* There is no answers mode 0 (PROTOCOL.md §3.1): A's message
			 * with mode 0, validly signed, is dropped when parsed. */
			uint8_t m0[175];
			sio_stats st0, st1;
			kx_msg(m0, sid_a, zero, 1, 0, created_a1, esk_a, sk_a);
			sio_core_stats(b, &st0);
			CHECK_EQ(sio_core_recv(b, t0 + 500, m0, sizeof m0), 0);
			sio_core_stats(b, &st1);
			CHECK_EQ(st1.drop_kx, st0.drop_kx + 1);
			CHECK_EQ(sio_core_state(b), SIO_STATE_KEY_EXCHANGING);
		}
		CHECK_EQ(sio_core_recv(a, t0 + 1000, pb, lb), SIO_CORE_RX_KX);
		size_t l = first_packet(a, t0 + 1000, p, 0);
		CHECK_EQ(l, with_psk ? pl_ans : l_ans);
		CHECK(memcmp(p, with_psk ? ppkt_ans : pkt_ans, l) == 0);
		/* B learns A's message, takes A's answer, and is established */
		CHECK_EQ(sio_core_recv(b, t0 + 2000, pa, la), SIO_CORE_RX_KX);
		CHECK_EQ(sio_core_recv(b, t0 + 2000, p, l), SIO_CORE_RX_DATA);
		CHECK_EQ(sio_core_state(b), SIO_STATE_ESTABLISHED);
		size_t lbans = first_packet(b, t0 + 2000, p, 0);
		CHECK(lbans > 0);
		CHECK_EQ(sio_core_recv(a, t0 + 3000, p, lbans), SIO_CORE_RX_DATA);
		CHECK_EQ(sio_core_state(a), SIO_STATE_ESTABLISHED);
		CHECK_OK(sio_core_write(a, t0 + 3000, SIO_TYPE_READWRITE, (const uint8_t *)"hello", 5, 0));
		sio_core_flush(a, t0 + 3000);
		l = first_packet(a, t0 + 3000, p, 0);
		CHECK_EQ(l, with_psk ? pl_hello : l_hello);
		CHECK(memcmp(p, with_psk ? ppkt_hello : pkt_hello, l) == 0);
		if (!with_psk) {
			/* the fragmented message: same bytes on the wire, and B
			 * reassembles it */
			CHECK_EQ(sio_core_max_packet(a), 1452);
			uint8_t msg[FRAG_LEN];
			for (uint32_t i = 0; i < FRAG_LEN; i++)
				msg[i] = (uint8_t)(i * 13 + 5);
			CHECK_OK(sio_core_write(a, t0 + 3000, SIO_TYPE_READWRITE, msg, FRAG_LEN, 0));
			sio_core_flush(a, t0 + 3000);
			struct iovec iov[8];
			size_t n = sio_core_pending(a, t0 + 3000, iov, 8);
			CHECK_EQ(n, 3);
			b->cb.deliver = frag_deliver;
			for (size_t i = 0; i < n && i < 3; i++) {
				CHECK_EQ(iov[i].iov_len, flen[i]);
				CHECK(iov[i].iov_len == flen[i] &&
				      memcmp(iov[i].iov_base, fpk[i], flen[i]) == 0);
				memcpy(p2, iov[i].iov_base, iov[i].iov_len);
				CHECK_EQ(sio_core_recv(b, t0 + 4000, p2, iov[i].iov_len), SIO_CORE_RX_DATA);
			}
			sio_core_sent(a, n, 0);
			CHECK_EQ(frag_deliveries, 1);
			CHECK(frag_got_len == FRAG_LEN && memcmp(frag_got, msg, FRAG_LEN) == 0);
			b->cb.deliver = NULL;
			/* the renewal */
			sio_core_tick(a, T1);
			la = first_packet(a, T1, pa, 1);
			CHECK_EQ(la, 175);
			CHECK(memcmp(pa, m_a2, 175) == 0);
			CHECK_EQ(sio_core_recv(b, T1 + 500, pa, la), SIO_CORE_RX_KX);
			lb = first_packet(b, T1 + 500, pb, 1);
			CHECK_EQ(lb, 175);
			CHECK(memcmp(pb, m_b2, 175) == 0);
			CHECK_EQ(sio_core_recv(a, T1 + 1000, pb, lb), SIO_CORE_RX_KX);
			l = first_packet(a, T1 + 1000, p, 0);
			CHECK_EQ(l, l_ans2);
			CHECK(memcmp(p, pkt_ans2, l) == 0);
		}
		sio_core_free(a);
		sio_core_free(b);
		sio_remote_free(rem_a);
		sio_remote_free(rem_b);
	}
	return check_done("test_vectors");
}
