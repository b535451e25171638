/* libFuzzer target: what a sio_listener does with a datagram from anyone
 * before any session exists (src/listener/listener_kx.c): the envelope parser, the
 * admission checks of an unknown connection id (with and without an allowed
 * set, under load or not, with cookies) and the client's cookie-reply
 * parser. Properties: no crash, no read past the datagram (ASan), the inner
 * packet lies inside the datagram, admission never leaves the counters
 * unchanged when it refuses, a cookie computed for an address is accepted
 * for it, an admitted first message under another connection id is refused
 * as a replay, and a reply to a client whose key exchange is complete, or
 * from another address, never changes what the client sends. */
#include <netinet/in.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "listener_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t total(const sio_listener_stats *s)
{
	return s->cookies_sent + s->drop_malformed + s->drop_unknown + s->drop_unauthorized +
	       s->drop_half_open + s->drop_sessions + s->drop_cookie + s->drop_memory + s->drop_replay;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct sio_listener l;
	static int init;
	if (!init) {
		if (sodium_init() < 0)
			abort();
		init = 1;
	}
	if (size < 2)
		return 0;
	uint8_t flags = data[0];
	data++;
	size--;
	memset(&l.st, 0, sizeof(l.st));
	/* a small replay record, emptied for every input (reproducible runs) */
	static struct lseen seen[16];
	memset(seen, 0, sizeof(seen));
	l.seen = seen;
	l.nseen = 16;
	l.seen_ttl_ns = 20000000000ull;
	memset(l.seen_key, 3, sizeof(l.seen_key));
	/* memory: plenty, or none left when the half-open count is 7 */
	l.peer_half = 1u << 20;
	l.mem_budget = 1ull << 40;
	l.mem_used = (flags >> 4 & 7) == 7 ? l.mem_budget : 0;
	l.fd = -1; /* cookie replies go nowhere */
	l.lo.max_half_open = 8;
	l.lo.max_sessions = 16;
	l.lo.cookie_threshold = (flags & 1) ? 1 : -1;
	l.nhalf = flags >> 4 & 7;
	l.nsessions = (flags & 2) ? 16 : 0;
	memset(l.secret, 7, sizeof(l.secret));
	memset(l.prev_secret, 9, sizeof(l.prev_secret));
	l.secret_at = 0;
	sio_remote *allowed = NULL;
	if (flags & 4) {
		uint8_t pk[32];
		memset(pk, 0x42, 32);
		if (sio_remote_from_public_key(&allowed, pk) != 0)
			abort();
	}
	l.allowed = allowed;
	/* bit 7: the listener has a PSK (the one of fuzz_pair.h, so the seed
	 * corpus's wrapped messages open) and admission unwraps */
	static sio_psk_keys psk_keys;
	if (!psk_keys.have) {
		static const uint8_t psk[32] = "fuzzing pre-shared key, 32 byte";
		sio_psk_derive(&psk_keys, psk, sizeof psk);
	}
	memset(&l.psk, 0, sizeof(l.psk));
	if (flags & 0x80)
		l.psk = psk_keys;

	uint8_t *buf = malloc(size);
	memcpy(buf, data, size);
	struct sockaddr_in from;
	memset(&from, 0, sizeof(from));
	from.sin_family = AF_INET;
	from.sin_port = htons(4242);
	from.sin_addr.s_addr = htonl(0x7f000001);
	const uint8_t *cid, *pkt, *cookie;
	size_t plen;
	if (sio_l_parse(buf, size, &cid, &pkt, &plen, &cookie) == 0) {
		if (pkt < buf || pkt + plen > buf + size || plen == 0)
			abort();
		uint8_t good[SIO_L_COOKIE_BYTES];
		sio_l_cookie(&l, l.secret, cid, (struct sockaddr *)&from, sizeof(from), good);
		if (flags & 8)
			cookie = good;
		int validated;
		int r = sio_l_admit(&l, cid, pkt, plen, cookie, (struct sockaddr *)&from, sizeof(from), 1,
				    &validated);
		if (r != 0 && total(&l.st) == 0)
			abort(); /* every refusal is counted */
		if (r == 0 && validated != (cookie == good))
			abort(); /* validated exactly by a valid cookie */
		if (r == 0) {
			/* the same message under another connection id */
			buf[1] ^= 1;
			uint64_t before = l.st.drop_replay;
			r = sio_l_admit(&l, cid, pkt, plen, NULL, (struct sockaddr *)&from, sizeof(from), 2,
					&validated);
			if (r == 0 || (r < 0 && l.st.drop_replay == before && !(flags & 1)))
				abort();
			buf[1] ^= 1;
		}
	}
	/* the client side: a cookie reply */
	sio_tp tp;
	memset(&tp, 0, sizeof(tp));
	tp.tx_prefix[0] = SIO_LISTENER_MARK;
	if (size > 1 + SIO_LISTENER_CID_BYTES)
		memcpy(tp.tx_prefix + 1, buf + 1, SIO_LISTENER_CID_BYTES);
	tp.tx_prefix_len = SIO_L_PREFIX;
	memcpy(&tp.peer, &from, sizeof(from));
	tp.peer_len = sizeof(from);
	int keyed = (flags & 0x40) != 0;
	struct sockaddr_in other = from;
	other.sin_port = htons(4243);
	const struct sockaddr_in *src = (flags & 0x20) ? &other : &from;
	(void)sio_tp_listener_cookie(&tp, buf, size, (const struct sockaddr *)src, sizeof(*src),
				     keyed);
	if (tp.tx_prefix_len > sizeof(tp.tx_prefix))
		abort();
	if ((keyed || src == &other) && tp.tx_prefix_len != SIO_L_PREFIX)
		abort(); /* a reply that cannot be genuine changed what we send */
	free(buf);
	sio_remote_free(allowed);
	l.allowed = NULL;
	return 0;
}
