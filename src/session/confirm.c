/* sio_confirm_identity(): the Go library's "mutual confirmation of
 * identity" helper. A temporary session over the caller's transport proves
 * both identities (signed key exchange, pinned remote), then each side sends
 * 32 fresh random bytes through it; the key is
 *
 *   BLAKE2b-256(key = none, "secureio confirm-identity v1" ||
 *               min(pk_a, pk_b) || max(pk_a, pk_b) ||
 *               min(r_a, r_b) || max(r_a, r_b))
 *
 * (min/max: byte-wise order, so both sides compute the same bytes). The
 * random contributions travel only inside the authenticated, encrypted
 * session, so the key is known to the two proven peers alone and is fresh
 * even when the same identities confirm again. The side with the smaller
 * public key then closes and the other acknowledges; each stops reading at the close
 * (stream records are read one at a time, never ahead), and the transport is
 * handed back: descriptors open, their flags restored. */
#include <sodium.h>
#include <string.h>

#include "session_int.h"

#define CONFIRM_TYPE 0u
static const char confirm_domain[] = "secureio confirm-identity v1";

static void ordered(crypto_generichash_state *st, const uint8_t *a, const uint8_t *b, size_t n)
{
	int lo = memcmp(a, b, n) <= 0;
	crypto_generichash_update(st, lo ? a : b, n);
	crypto_generichash_update(st, lo ? b : a, n);
}

int sio_confirm_identity(const sio_identity *id, const sio_remote *remote, const sio_transport *t,
			 const sio_options *opts, uint8_t key[32], int timeout_ms)
{
	if (!id || !remote || !t || !key)
		return SIO_EINVAL;
	sio_transport tc = *t;
	tc.close_fds = 0; /* the transport goes back to the caller */
	sio_session *s;
	int r = sio_session_new(&s, id, remote, &tc, opts, NULL);
	if (r)
		return r;
	s->confirm = 1;
	s->tp.exact = 1;
	sio_messenger *m = NULL;
	uint8_t mine[32], theirs[32], pk_l[32], pk_r[32];
	randombytes_buf(mine, sizeof mine);
	r = sio_messenger_open(s, CONFIRM_TYPE, &m);
	if (!r)
		r = sio_session_start(s);
	if (!r)
		r = sio_session_wait_state(s, SIO_STATE_ESTABLISHED, timeout_ms);
	if (!r)
		r = sio_write_message(s, CONFIRM_TYPE, mine, sizeof mine);
	if (!r) {
		size_t full = 0;
		ssize_t n = sio_messenger_read(m, theirs, sizeof theirs, &full, timeout_ms);
		if (n < 0)
			r = (int)n;
		else if (n != (ssize_t)sizeof theirs || full != sizeof theirs)
			r = n == 0 ? SIO_ECLOSED : SIO_EPROTO;
	}
	if (!r)
		r = sio_session_remote_key(s, pk_r);
	if (!r) {
		crypto_generichash_state st;
		sio_identity_public_key(id, pk_l);
		crypto_generichash_init(&st, NULL, 0, 32);
		crypto_generichash_update(&st, (const uint8_t *)confirm_domain, sizeof confirm_domain - 1);
		ordered(&st, pk_l, pk_r, 32);
		ordered(&st, mine, theirs, 32);
		crypto_generichash_final(&st, key, 32);
		sodium_memzero(&st, sizeof st);
		/* One side closes, the other acknowledges: on a stream exactly
		 * "close" and "acknowledgement" end the two directions, so neither
		 * side leaves a record of ours behind for the program to read
		 * (two crossing closes would each be acknowledged, and the late
		 * acknowledgement would stay on the stream). */
		int c;
		if (memcmp(pk_l, pk_r, 32) < 0)
			c = sio_close_and_wait(s, timeout_ms);
		else
			c = sio_session_wait_state(s, SIO_STATE_CLOSED, timeout_ms);
		if (c == 0 && sio_session_state(s) != SIO_STATE_CLOSED)
			c = SIO_ETIMEDOUT;
		if (c)
			r = c;
	}
	if (r)
		sodium_memzero(key, 32);
	sodium_memzero(mine, sizeof mine);
	sodium_memzero(theirs, sizeof theirs);
	sio_messenger_close(m);
	sio_session_free(s);
	return r;
}
