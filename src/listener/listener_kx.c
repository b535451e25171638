/*
 * Listener admission: what a datagram from an unknown connection id must be
 * before the listener spends any state or signature work on it
 * (docs/PROTOCOL.md, "Listener"). Everything here is cheap: length and byte
 * checks, a set lookup, one keyed BLAKE2b.
 */
#include <netinet/in.h>
#include <sodium.h>
#include <string.h>

#include "kx.h"
#include "listener_int.h"
#include "wire.h"

#define KX_PLAIN 0x80
#define KX_PSK 0x81
#define KX_PLAIN_LEN 175
#define KX_PSK_LEN 216
#define COOKIE_ECHO 0x22

int sio_l_parse(const uint8_t *buf, size_t len, const uint8_t **cid, const uint8_t **pkt, size_t *plen,
		const uint8_t **cookie)
{
	if (len < SIO_L_PREFIX + 1 || buf[0] != SIO_LISTENER_MARK)
		return -1;
	*cid = buf + 1;
	*cookie = NULL;
	const uint8_t *p = buf + SIO_L_PREFIX;
	size_t n = len - SIO_L_PREFIX;
	if (p[0] == COOKIE_ECHO) {
		if (n < 1 + SIO_L_COOKIE_BYTES + 1)
			return -1;
		*cookie = p + 1;
		p += 1 + SIO_L_COOKIE_BYTES;
		n -= 1 + SIO_L_COOKIE_BYTES;
	}
	*pkt = p;
	*plen = n;
	return 0;
}

void sio_l_cookie(struct sio_listener *l, const uint8_t *secret, const uint8_t *cid,
		  const struct sockaddr *from, socklen_t flen, uint8_t out[SIO_L_COOKIE_BYTES])
{
	(void)l;
	crypto_generichash_state st;
	crypto_generichash_init(&st, secret, 32, SIO_L_COOKIE_BYTES);
	static const char dom[] = "secureio/1 listener cookie";
	crypto_generichash_update(&st, (const uint8_t *)dom, sizeof(dom) - 1);
	crypto_generichash_update(&st, cid, SIO_LISTENER_CID_BYTES);
	/* the address bytes that identify the sender: family, port, address */
	if (from->sa_family == AF_INET && flen >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)from;
		crypto_generichash_update(&st, (const uint8_t *)&a->sin_family, sizeof(a->sin_family));
		crypto_generichash_update(&st, (const uint8_t *)&a->sin_port, 2);
		crypto_generichash_update(&st, (const uint8_t *)&a->sin_addr, 4);
	} else if (from->sa_family == AF_INET6 && flen >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)from;
		crypto_generichash_update(&st, (const uint8_t *)&a->sin6_family, sizeof(a->sin6_family));
		crypto_generichash_update(&st, (const uint8_t *)&a->sin6_port, 2);
		crypto_generichash_update(&st, (const uint8_t *)&a->sin6_addr, 16);
	} else {
		crypto_generichash_update(&st, (const uint8_t *)from, flen);
	}
	crypto_generichash_final(&st, out, SIO_L_COOKIE_BYTES);
}

static int cookie_ok(struct sio_listener *l, const uint8_t *cid, const uint8_t *cookie,
		     const struct sockaddr *from, socklen_t flen)
{
	uint8_t c[SIO_L_COOKIE_BYTES];
	sio_l_cookie(l, l->secret, cid, from, flen, c);
	if (sodium_memcmp(c, cookie, sizeof(c)) == 0)
		return 1;
	sio_l_cookie(l, l->prev_secret, cid, from, flen, c);
	return sodium_memcmp(c, cookie, sizeof(c)) == 0;
}

static int under_load(const struct sio_listener *l)
{
	int32_t t = l->lo.cookie_threshold;
	if (t < 0)
		return 0;
	uint32_t th = t == 0 ? l->lo.max_half_open / 2 : (uint32_t)t;
	return l->nhalf + 1 >= th;
}

/* The record of first messages admitted lately (docs/PROTOCOL.md §13.2,
 * step 7). Open addressing over a few probes, entries older than
 * seen_ttl_ns are free; when all probed slots are live the oldest goes (the
 * record is bounded; what it forgets can create one half-open exchange
 * again, still within the amplification limit). Returns 1 if MSG was
 * admitted under another connection id within the lifetime; else records it
 * under CID (when ADD) and returns 0. */
static int seen_check(struct sio_listener *l, const uint8_t *msg, const uint8_t *cid, uint64_t now,
		      int add)
{
	uint8_t hb[crypto_shorthash_BYTES];
	crypto_shorthash(hb, msg, SIO_KX_MSG_LEN, l->seen_key);
	uint64_t h;
	memcpy(&h, hb, sizeof(h));
	h |= 1; /* 0 marks a free slot */
	size_t mask = l->nseen - 1;
	struct lseen *victim = NULL;
	int victim_live = 1;
	for (size_t i = 0; i < SIO_L_SEEN_PROBES; i++) {
		struct lseen *e = &l->seen[((size_t)h + i) & mask];
		int live = e->h && now - e->at < l->seen_ttl_ns;
		if (live && e->h == h)
			return memcmp(e->cid, cid, SIO_LISTENER_CID_BYTES) != 0;
		if (!live && victim_live) {
			victim = e; /* the first free slot */
			victim_live = 0;
		} else if (live && victim_live && (!victim || e->at < victim->at)) {
			victim = e; /* else the oldest live one */
		}
	}
	if (add) {
		victim->h = h;
		victim->at = now;
		memcpy(victim->cid, cid, SIO_LISTENER_CID_BYTES);
	}
	return 0;
}

int sio_l_admit(struct sio_listener *l, const uint8_t *cid, const uint8_t *pkt, size_t len,
		const uint8_t *cookie, const struct sockaddr *from, socklen_t flen, uint64_t now,
		int *validated)
{
	*validated = 0;
	/* Only the kind of message our sessions accept can start one: plain
	 * without a PSK, PSK-wrapped with one (unwrapped here: one AEAD
	 * opening, so junk without the PSK costs no state and no signature
	 * check, and the checks below see the inner message). */
	uint8_t inner[SIO_KX_MSG_LEN];
	const uint8_t *msg = pkt;
	if (pkt[0] != (l->psk.have ? KX_PSK : KX_PLAIN)) {
		l->st.drop_unknown++;
		return -1;
	}
	if (l->psk.have) {
		if (len != KX_PSK_LEN || sio_kx_unwrap(inner, pkt, len, l->psk.kx_key) != 0) {
			l->st.drop_malformed++;
			return -1;
		}
		msg = inner;
	} else if (len != KX_PLAIN_LEN) {
		l->st.drop_malformed++;
		return -1;
	}
	/* layout of a first key-exchange message (generation 1, receiver
	 * session id unknown); anything else cannot start a session */
	static const uint8_t zero[16];
	if (msg[0] != KX_PLAIN || msg[1] != 1 || sio_get_le32(msg + 34) != 1 ||
	    memcmp(msg + 18, zero, 16) != 0 || (msg[38] & 0xfc) != 0) {
		l->st.drop_malformed++;
		return -1;
	}
	if (now - l->secret_at > SIO_L_COOKIE_ROTATE_NS) {
		memcpy(l->prev_secret, l->secret, 32);
		randombytes_buf(l->secret, 32);
		l->secret_at = now;
	}
	if (l->nsessions >= l->lo.max_sessions) {
		l->st.drop_sessions++;
		return -1;
	}
	/* A wrong or stale cookie (it may come from an injector who saw the
	 * connection id) is ignored: not under load the message is admitted as
	 * if it had none, under load it is answered with a fresh cookie. */
	int valid = cookie && cookie_ok(l, cid, cookie, from, flen);
	if (cookie && !valid)
		l->st.drop_cookie++;
	if (!valid && under_load(l)) {
		uint8_t reply[SIO_L_PREFIX + SIO_L_COOKIE_BYTES];
		reply[0] = SIO_L_COOKIE_MARK;
		memcpy(reply + 1, cid, SIO_LISTENER_CID_BYTES);
		sio_l_cookie(l, l->secret, cid, from, flen, reply + SIO_L_PREFIX);
		/* smaller than the request: no amplification */
		(void)sendto(l->fd, reply, sizeof(reply), MSG_NOSIGNAL | MSG_DONTWAIT, from, flen);
		l->st.cookies_sent++;
		return 1;
	}
	if (l->nhalf >= l->lo.max_half_open) {
		l->st.drop_half_open++;
		return -1;
	}
	if (l->mem_used + l->peer_half > l->mem_budget) {
		l->st.drop_memory++;
		return -1;
	}
	/* the message names the identity: strangers cost nothing more */
	if (l->allowed && !sio_remote_contains(l->allowed, msg + 79)) {
		l->st.drop_unauthorized++;
		if (l->lo.on_diag)
			sio_l_diag_refused(l, msg, msg + 79, now);
		return -1;
	}
	/* nothing binds a first message to its connection id: the same message
	 * under a new one is a replay (a copy from the wire) */
	if (seen_check(l, msg, cid, now, 1)) {
		l->st.drop_replay++;
		return -1;
	}
	*validated = valid;
	return 0;
}

/* Same family, port and address (padding bytes aside). */
static int same_addr(const struct sockaddr *a, socklen_t al, const struct sockaddr *b, socklen_t bl)
{
	if (a->sa_family != b->sa_family)
		return 0;
	if (a->sa_family == AF_INET && al >= sizeof(struct sockaddr_in) && bl >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->sa_family == AF_INET6 && al >= sizeof(struct sockaddr_in6) &&
	    bl >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
		return x->sin6_port == y->sin6_port &&
		       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
	}
	return al == bl && memcmp(a, b, al) == 0;
}

int sio_tp_listener_cookie(sio_tp *tp, const uint8_t *buf, size_t len, const struct sockaddr *from,
			   socklen_t fromlen, int keyed)
{
	if (len != SIO_L_PREFIX + SIO_L_COOKIE_BYTES || buf[0] != SIO_L_COOKIE_MARK)
		return 0;
	/* The reply is not authenticated: anyone who saw our connection id
	 * can make one. It is taken only while it can be genuine (our key
	 * exchange with the listener is not complete: once it is, the
	 * listener holds state for us and asks for no cookie) and only from
	 * the address we send to; else a forged one would make us echo a
	 * wrong cookie. */
	if (keyed || memcmp(buf + 1, tp->tx_prefix + 1, SIO_LISTENER_CID_BYTES) != 0)
		return 1; /* dropped */
	if (from && tp->peer_len && !same_addr(from, fromlen, (const struct sockaddr *)&tp->peer, tp->peer_len))
		return 1;
	tp->tx_prefix[SIO_L_PREFIX] = COOKIE_ECHO;
	memcpy(tp->tx_prefix + SIO_L_PREFIX + 1, buf + SIO_L_PREFIX, SIO_L_COOKIE_BYTES);
	tp->tx_prefix_len = SIO_L_PREFIX + 1 + SIO_L_COOKIE_BYTES;
	return 1;
}
