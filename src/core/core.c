/* Protocol core: creation, state machine, key exchange and timers.
 * Spec: docs/PROTOCOL.md. Framing and queues: core_tx.c; receiving: core_rx.c. */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "core_int.h"
#include "options.h"
#include "wire.h"

static void rnd(sio_core *c, uint8_t *buf, size_t len)
{
	if (c->cb.random)
		c->cb.random(c->cb.ctx, buf, len);
	else
		randombytes_buf(buf, len);
}

static uint64_t wall(const sio_core *c, uint64_t now)
{
	return c->wall0 + (now - c->mono0);
}

static int mode(const sio_core *c)
{
	return (int)c->o.answers_mode;
}

static void report(sio_core *c, int err, const char *msg, int level)
{
	if (SIO_DIAG_ON(c, level)) {
		if (level == SIO_DIAG_WARN)
			sio_core_diag_warn(c, msg ? msg : sio_strerror(err));
		else
			sio_core_diag(c, level, "%s", msg ? msg : sio_strerror(err));
	}
	if (c->cb.error)
		c->cb.error(c->cb.ctx, err, msg);
}

void sio_core_error(sio_core *c, int err, const char *msg)
{
	report(c, err, msg, SIO_DIAG_WARN);
}

void sio_core_set_state(sio_core *c, sio_state st)
{
	sio_state old = c->state;
	if (st <= old)
		return;
	c->state = st;
	if (st == SIO_STATE_CLOSED)
		sio_core_tx_cancel(c, SIO_ECANCELED);
	if (c->cb.state)
		c->cb.state(c->cb.ctx, old, st);
}

void sio_core_fail(sio_core *c, int err, const char *msg)
{
	if (c->state == SIO_STATE_CLOSED)
		return;
	c->err = err;
	report(c, err, msg, SIO_DIAG_ERROR);
	sio_core_set_state(c, SIO_STATE_CLOSED);
	/* a failed session sends no more data: writers waiting for sealed
	 * packets learn it now, not when the session is freed */
	sio_core_tx_abandon(c, err);
}

int sio_core_can_send(const sio_core *c)
{
	return c->tx_slot >= 0 &&
	       (c->state == SIO_STATE_ESTABLISHED || c->state == SIO_STATE_CLOSING ||
		c->state == SIO_STATE_NEGOTIATION); /* probes, and what was queued */
}

int sio_core_new(sio_core **out, const sio_core_config *cfg, const sio_core_cbs *cbs)
{
	sio_core *c;
	int r;
	*out = NULL;
	if (!cfg || (!cfg->ed25519_sk && !(cfg->sign && cfg->ed25519_pk)))
		return SIO_EINVAL;
	c = calloc(1, sizeof *c);
	if (!c)
		return SIO_ENOMEM;
	if (cbs)
		c->cb = *cbs;
	c->datagram = cfg->datagram ? 1 : 0;
	r = sio_options_resolve(&cfg->opts, c->datagram, &c->o);
	if (r) {
		free(c);
		return r;
	}
	c->o.psk = NULL; /* only the derived keys are kept */
	c->sk = cfg->sign ? NULL : cfg->ed25519_sk;
	c->sign = cfg->sign;
	c->sign_ctx = cfg->sign_ctx;
	c->admit = cfg->admit;
	memcpy(c->idpk, cfg->sign ? cfg->ed25519_pk : cfg->ed25519_sk + 32, 32);
	c->remote = cfg->remote;
	c->wall0 = cfg->wallclock_ns;
	c->tx_slot = -1;
	c->st.packet_size = c->o.max_packet_size;
	c->diag_level = cfg->diag_level > 0 ? cfg->diag_level : SIO_DIAG_INFO;
	c->dg.next = UINT64_MAX;
	if (cfg->opts.psk_len)
		sio_psk_derive(&c->psk, cfg->opts.psk, cfg->opts.psk_len);

	/* replay bitmaps come with the keys (derive), one per live slot */
	size_t words = sio_replay_words(c->o.replay_window);
	if (words && !(c->replay_spare = calloc(words, sizeof(uint64_t)))) {
		sio_core_free(c);
		return SIO_ENOMEM;
	}
	for (int i = 0; i < SIO_KEY_SLOTS; i++) {
		sio_replay_init(&c->keys[i].rp, c->o.replay_window, NULL);
		if ((r = sio_aead_init(&c->keys[i].tx, 1)) || (r = sio_aead_init(&c->keys[i].rx, 0))) {
			sio_core_free(c);
			return r;
		}
	}
	if ((r = sio_core_queues_new(c)) || (r = sio_core_msg_init(c))) {
		sio_core_free(c);
		return r;
	}
	c->dg.packet_size = c->st.packet_size; /* changes from here on are reported */
	/* Session id: creation time (ns) || 64 random bits. */
	sio_put_le64(c->sid, cfg->wallclock_ns);
	rnd(c, c->sid + 8, 8);
	*out = c;
	return 0;
}

static void wipe_slot(sio_core *c, sio_keyslot *ks)
{
	sio_aead_wipe(&ks->tx);
	sio_aead_wipe(&ks->rx);
	ks->live = 0;
	ks->confirmed = 0;
	ks->tx_pn = 0;
	sio_replay_reset(&ks->rp); /* zeroed: packet numbers, not secrets */
	if (!c->replay_spare)
		c->replay_spare = ks->rp.bits;
	else
		free(ks->rp.bits);
	ks->rp.bits = NULL;
}

void sio_core_discard(sio_core *c, int err)
{
	sio_core_tx_cancel(c, err);
	sio_core_tx_abandon(c, err);
}

void sio_core_free(sio_core *c)
{
	if (!c)
		return;
	sio_core_tx_cancel(c, SIO_ECANCELED);
	sio_core_tx_abandon(c, SIO_ECANCELED);
	sio_core_queues_free(c);
	sio_core_msg_free(c);
	for (int i = 0; i < SIO_KEY_SLOTS; i++) {
		sio_aead_free(&c->keys[i].tx);
		sio_aead_free(&c->keys[i].rx);
	}
	for (int i = 0; i < SIO_KEY_SLOTS; i++)
		free(c->keys[i].rp.bits);
	free(c->replay_spare);
	sodium_memzero(c, sizeof *c);
	free(c);
}

/* ---- key exchange ------------------------------------------------------- */

/* Starts key-exchange round GEN. Returns 0, or -1 when signing our message
 * failed (an external signer: agent gone, key removed, refused): the
 * session is then closed with SIO_ESIGN and the caller stops. */
static int new_round(sio_core *c, uint64_t now, uint32_t gen)
{
	sio_kx_fields f;
	memset(&f, 0, sizeof f);
	sodium_memzero(c->e_sk, sizeof c->e_sk);
	rnd(c, c->e_sk, 32);
	crypto_scalarmult_base(f.epub, c->e_sk);
	memcpy(f.sid_sender, c->sid, 16);
	if (c->have_peer_sid)
		memcpy(f.sid_receiver, c->peer_sid, 16);
	f.gen = gen;
	f.flags = (uint8_t)mode(c);
	/* Our own creation times never go backwards either. */
	uint64_t w = wall(c, now);
	f.created_ns = w > c->local_created ? w : c->local_created + 1;
	c->local_created = f.created_ns;
	memcpy(f.idpk, c->idpk, 32);
	if (c->sign) {
		if (sio_kx_build_sign(c->local_msg, &f, c->sign, c->sign_ctx) != 0) {
			sodium_memzero(c->e_sk, sizeof c->e_sk);
			sio_core_fail(c, SIO_ESIGN,
			              "the identity's signer failed to sign the key exchange");
			return -1;
		}
	} else {
		sio_kx_build(c->local_msg, &f, c->sk);
	}
	if (c->psk.have) {
		uint8_t nonce[24];
		rnd(c, nonce, sizeof nonce);
		c->local_wire_len = sio_kx_wrap(c->local_wire, c->local_msg, c->psk.kx_key, nonce);
	} else {
		memcpy(c->local_wire, c->local_msg, SIO_KX_MSG_LEN);
		c->local_wire_len = SIO_KX_MSG_LEN;
	}
	c->gen = gen;
	c->have_local = 1;
	c->have_remote = 0;
	c->dup_answered = 0;
	c->derived = 0;
	c->round_start = now;
	c->next_retry = now + (uint64_t)c->o.kx_retry_ns;
	sio_core_queue_kx(c, now, c->local_wire, c->local_wire_len);
	if (SIO_DIAG_ON(c, SIO_DIAG_DEBUG))
		sio_core_diag(c, SIO_DIAG_DEBUG, "key exchange: sent generation %u", gen);
	return 0;
}

static int round_complete(const sio_core *c)
{
	return c->derived && c->keys[c->gen & 3].live && c->keys[c->gen & 3].confirmed;
}

static void promote(sio_core *c, uint64_t now, int slot)
{
	if (c->tx_slot == slot)
		return;
	c->tx_slot = slot;
	if (c->established_once)
		c->st.rekeys++;
	if (SIO_DIAG_ON(c, SIO_DIAG_INFO)) {
		char fp[SIO_FINGERPRINT_MAX];
		if (c->established_once) {
			sio_core_diag(c, SIO_DIAG_INFO, "keys renewed (generation %u)", c->keys[slot].gen);
		} else {
			sio_core_diag_fp(c->peer_id, fp);
			sio_core_diag(c, SIO_DIAG_INFO, "established with %s (key generation %u)", fp,
				      c->keys[slot].gen);
		}
	}
	if (c->state == SIO_STATE_KEY_EXCHANGING) {
		c->established_once = 1;
		c->last_recv = now;
		c->last_send = now;
		sio_core_set_state(c, SIO_STATE_NEGOTIATION);
		/* Packet-size negotiation (core_msg.c) on datagram transports. */
		if (sio_core_msg_negotiate(c, now))
			sio_core_set_state(c, SIO_STATE_ESTABLISHED);
	}
	sio_core_tx_seal(c, now);
}

/* Queue our key-exchange message of the current round again and restart
 * its retry timer. */
static void resend_local(sio_core *c, uint64_t now)
{
	if (!c->have_local || c->state == SIO_STATE_CLOSED)
		return;
	sio_core_queue_kx(c, now, c->local_wire, c->local_wire_len);
	c->next_retry = now + (uint64_t)c->o.kx_retry_ns;
	if (SIO_DIAG_ON(c, SIO_DIAG_DEBUG))
		sio_core_diag(c, SIO_DIAG_DEBUG, "key exchange: sent generation %u again", c->gen);
}

static void answer(sio_core *c, uint64_t now, int slot)
{
	uint8_t fr = SIO_FR_ANSWER;
	if (mode(c) == SIO_ANSWERS_DISABLE)
		fr = SIO_FR_KEEPALIVE;
	sio_core_ctrl_packet(c, now, slot, &fr, 1);
}

static int derive(sio_core *c, uint64_t now)
{
	uint8_t th[32], klo[32], khi[32];
	const uint8_t *lo = c->local_is_lo ? c->local_msg : c->remote_msg;
	const uint8_t *hi = c->local_is_lo ? c->remote_msg : c->local_msg;
	sio_kx_transcript(th, lo, hi);
	if (sio_kx_keys(klo, khi, c->e_sk, c->remote_msg + 47, th,
			c->psk.have ? c->psk.kdf_key : NULL) != 0)
		return -1;
	int slot = (int)(c->gen & 3);
	sio_keyslot *ks = &c->keys[slot];
	if (ks->live)
		wipe_slot(c, ks);
	int r = 0;
	if (ks->rp.nblocks) {
		ks->rp.bits = c->replay_spare ? c->replay_spare
					      : calloc(ks->rp.nblocks, sizeof(uint64_t));
		c->replay_spare = NULL;
		if (!ks->rp.bits)
			r = SIO_ENOMEM; /* the exchange is retried, as after a crypto failure */
	}
	if (!r)
		r = sio_aead_setkey(&ks->tx, c->local_is_lo ? klo : khi, c->sid);
	if (!r)
		r = sio_aead_setkey(&ks->rx, c->local_is_lo ? khi : klo, c->peer_sid);
	sodium_memzero(klo, sizeof klo);
	sodium_memzero(khi, sizeof khi);
	sodium_memzero(c->e_sk, sizeof c->e_sk);
	if (r) {
		wipe_slot(c, ks);
		return -1;
	}
	ks->live = 1;
	ks->gen = c->gen;
	c->derived = 1;
	c->next_rekey = now + (uint64_t)c->o.kx_interval_ns;
	/* Keep current, previous and next only: retire older keys. */
	for (int i = 0; i < SIO_KEY_SLOTS; i++) {
		sio_keyslot *o = &c->keys[i];
		if (o->live && i != c->tx_slot && o->gen + 2 <= c->gen)
			wipe_slot(c, o);
	}
	if (mode(c) != SIO_ANSWERS_ANSWER_AND_WAIT)
		promote(c, now, slot);
	answer(c, now, slot);
	return 0;
}

void sio_core_key_confirmed(sio_core *c, uint64_t now, sio_keyslot *ks)
{
	ks->confirmed = 1;
	c->peer_proven = 1;
	if (c->derived && ks->gen == c->gen &&
	    (c->tx_slot < 0 || c->keys[c->tx_slot].gen < ks->gen))
		promote(c, now, (int)(ks - c->keys));
	/* The previous send key is retired once the next one is in use. */
	for (int i = 0; i < SIO_KEY_SLOTS; i++) {
		sio_keyslot *o = &c->keys[i];
		if (o->live && i != c->tx_slot && o->gen + 2 <= c->gen)
			wipe_slot(c, o);
	}
}

static void reset_peer_session(sio_core *c)
{
	for (int i = 0; i < SIO_KEY_SLOTS; i++)
		if (c->keys[i].live)
			wipe_slot(c, &c->keys[i]);
	c->tx_slot = -1;
	c->have_peer_sid = 0;
	c->have_peer_epub = 0;
	c->peer_created = 0;
	c->have_remote = 0;
	c->derived = 0;
}

/* Signature checks are rationed per session: a bucket of
 * SIO_KX_VERIFY_BURST checks refilled at SIO_KX_VERIFY_RATE per second (a
 * generic cell-rate algorithm: verify_tat is when the bucket is full again).
 * An honest peer needs one or two per key renewal. */
static int verify_allowed(sio_core *c, uint64_t now)
{
	const uint64_t per = 1000000000ull / SIO_KX_VERIFY_RATE;
	uint64_t tat = c->verify_tat > now ? c->verify_tat : now;
	if (tat - now > (SIO_KX_VERIFY_BURST - 1) * per)
		return 0;
	c->verify_tat = tat + per;
	return 1;
}

static int drop_kx(sio_core *c)
{
	c->st.drop_kx++;
	return SIO_CORE_RX_DROP;
}

int sio_core_kx_recv(sio_core *c, uint64_t now, const uint8_t *pkt, size_t len)
{
	uint8_t m[SIO_KX_MSG_LEN];
	sio_kx_fields f;
	if (c->psk.have) {
		if (sio_kx_unwrap(m, pkt, len, c->psk.kx_key) != 0)
			return drop_kx(c);
	} else {
		if (len != SIO_KX_MSG_LEN || pkt[0] != SIO_PKT_KX)
			return drop_kx(c);
		memcpy(m, pkt, SIO_KX_MSG_LEN);
	}
	if (sio_kx_parse(m, &f) != 0)
		return drop_kx(c);
	if (c->state == SIO_STATE_CLOSED || c->state == SIO_STATE_CLOSING)
		return drop_kx(c);
	/* Our own message reflected back, or one meant for another session. */
	if (sodium_memcmp(f.sid_sender, c->sid, 16) == 0)
		return drop_kx(c);
	if (!sodium_is_zero(f.sid_receiver, 16)) {
		if (sodium_memcmp(f.sid_receiver, c->sid, 16) != 0)
			return drop_kx(c);
	} else if (f.gen != 1) {
		return drop_kx(c);
	}
	/* Identity, before any signature work. Once the session has a peer,
	 * every later key exchange must carry exactly that identity, in every
	 * mode: being in the pinned set is not enough, or any key of a
	 * multi-key set could take over another key's session. Before that,
	 * a pinned session takes only identities of its set. */
	if (c->have_peer_id) {
		if (sodium_memcmp(c->peer_id, f.idpk, 32) != 0)
			return drop_kx(c);
	} else if (c->remote && !(c->admit ? c->admit(c->cb.ctx, f.idpk)
	                                    : sio_remote_contains(c->remote, f.idpk))) {
		c->auth_refused++;
		if (c->cb.diag)
			sio_core_diag_refused(c, now, m, f.idpk, sio_remote_contains(c->remote, f.idpk));
		/* On a transport that reaches only the peer (a stream, a connected
		 * socket), a well-signed message from an identity we do not accept
		 * means the peer is not the one we want: fail now rather than at
		 * the key-exchange timeout. The signature is checked first so that
		 * a corrupted message is dropped, not taken for a wrong peer. */
		if (c->exclusive && !c->any_valid_kx && verify_allowed(c, now)) {
			c->verifies++;
			if (sio_kx_verify(m) == 0) {
				c->st.drop_kx++;
				sio_core_fail(c, SIO_EAUTH,
					      "the peer's identity is not authorised (not in the pinned set)");
				return 0;
			}
		}
		return drop_kx(c);
	}
	/* A retransmission of the message we hold: the peer still lacks our
	 * message or an answer under the new key. */
	if (c->have_remote && f.gen == c->gen && memcmp(m, c->remote_msg, SIO_KX_MSG_LEN) == 0) {
		/* Not a sign of life (anyone can replay it), and answered at most
		 * once per quarter retry period (a replay flood gets no more). */
		if (c->derived && (c->dup_answered == 0 ||
				   now >= c->dup_answered + (uint64_t)c->o.kx_retry_ns / 4)) {
			c->dup_answered = now ? now : 1;
			answer(c, now, (int)(c->gen & 3));
			/* ... and it may lack ours too, unless it proved otherwise. */
			if (sodium_is_zero(f.sid_receiver, 16) && !c->keys[c->gen & 3].confirmed)
				resend_local(c, now);
		}
		return SIO_CORE_RX_KX_REPEAT;
	}
	/* Every check that can only drop runs before the signature: a verify
	 * costs some 45 us, these a few ns, so junk naming the right identity
	 * is no dearer than junk naming a stranger. */
	int other_session = c->have_peer_sid && memcmp(f.sid_sender, c->peer_sid, 16) != 0;
	if (other_session) {
		/* Another session of the peer (it restarted, or a replay): only
		 * its first generation, newer than the one we know, and only while
		 * the current one has not proven itself. */
		if (f.gen != 1 || sio_get_le64(f.sid_sender) <= sio_get_le64(c->peer_sid) ||
		    c->peer_proven)
			return drop_kx(c);
	} else {
		if (f.gen < c->gen) {
			c->st.drop_replay++;
			return 0;
		}
		/* Only the current or the next generation, and one message each. */
		if (f.gen > c->gen + 1 || (f.gen == c->gen && c->have_remote))
			return drop_kx(c);
	}
	if (!verify_allowed(c, now)) {
		c->st.drop_kx_limited++;
		return drop_kx(c);
	}
	c->verifies++;
	if (sio_kx_verify(m) != 0)
		return drop_kx(c);

	if (other_session) {
		reset_peer_session(c);
		memcpy(c->peer_sid, f.sid_sender, 16);
		c->have_peer_sid = 1;
		if (new_round(c, now, 1))
			return 1;
	}
	if ((f.flags & 3) != mode(c)) {
		/* Let the peer learn it too: our own message carries our mode.
		 * A side that could not send before (an unconnected socket learns
		 * its peer's address from this message) would otherwise leave the
		 * peer retrying until its timeout. One message for one received:
		 * within any amplification budget. */
		if (c->have_local)
			sio_core_queue_kx(c, now, c->local_wire, c->local_wire_len);
		sio_core_fail(c, SIO_EANSWERS, "the peer uses another key-exchange answers mode");
		return SIO_CORE_RX_KX;
	}
	if (c->o.max_time_diff_ns > 0) {
		uint64_t w = wall(c, now);
		uint64_t d = f.created_ns > w ? f.created_ns - w : w - f.created_ns;
		if (d > (uint64_t)c->o.max_time_diff_ns) {
			sio_core_error(c, SIO_ECLOCK, "remote key-exchange timestamp too far from local clock");
			return drop_kx(c);
		}
	}
	if (sio_kx_low_order(f.epub)) {
		sio_core_error(c, SIO_EPROTO, "peer sent a low-order key-exchange key");
		return drop_kx(c);
	}
	if (c->have_peer_epub) {
		if (sodium_memcmp(f.epub, c->peer_epub, 32) == 0) {
			sio_core_error(c, SIO_EPROTO, "peer reused its key-exchange key");
			return drop_kx(c);
		}
		if (f.created_ns < c->peer_created) {
			sio_core_error(c, SIO_ECLOCK, "peer key creation time went backwards");
			return drop_kx(c);
		}
	}
	if (!c->remote && !c->have_peer_id) {
		if (c->cb.remote_identity && c->cb.remote_identity(c->cb.ctx, f.idpk) != 0) {
			sio_core_fail(c, SIO_EREFUSED, "remote identity refused by the program");
			return 0;
		}
	}
	if (!c->have_peer_id) {
		memcpy(c->peer_id, f.idpk, 32);
		c->have_peer_id = 1;
	}
	if (!c->have_peer_sid) {
		memcpy(c->peer_sid, f.sid_sender, 16);
		c->have_peer_sid = 1;
	}
	c->local_is_lo = memcmp(c->sid, c->peer_sid, 16) < 0;
	if (f.gen == c->gen + 1) {
		/* The peer started the next round: it holds the current key. */
		if (c->derived && c->keys[c->gen & 3].live && !c->keys[c->gen & 3].confirmed)
			sio_core_key_confirmed(c, now, &c->keys[c->gen & 3]);
		if (new_round(c, now, f.gen))
			return 1;
	}
	memcpy(c->remote_msg, m, SIO_KX_MSG_LEN);
	if (derive(c, now) != 0) {
		sio_core_fail(c, SIO_ECRYPTO, "key derivation failed");
		return SIO_CORE_RX_KX;
	}
	c->have_remote = 1;
	c->any_valid_kx = 1;
	c->have_peer_epub = 1;
	memcpy(c->peer_epub, f.epub, 32);
	c->peer_created = f.created_ns;
	c->last_recv = now;
	c->unreach_count = 0;
	/* The peer has not seen our message (it names no receiver): it started
	 * after our earlier sends, or they went nowhere (a UDP listener learns
	 * its peer's address only now). Send ours at once instead of at the
	 * next retry, so a late peer is not kept waiting up to a retry period. */
	if (SIO_DIAG_ON(c, SIO_DIAG_DEBUG)) {
		char fp[SIO_FINGERPRINT_MAX];
		sio_core_diag_fp(f.idpk, fp);
		sio_core_diag(c, SIO_DIAG_DEBUG, "key exchange: received generation %u from %s", f.gen, fp);
	}
	if (sodium_is_zero(f.sid_receiver, 16) && c->round_start != now)
		resend_local(c, now);
	return SIO_CORE_RX_KX;
}

/* ---- public calls --------------------------------------------------------- */

void sio_core_set_reply_only(sio_core *c, int on)
{
	c->reply_only = on ? 1 : 0;
}

int sio_core_start(sio_core *c, uint64_t now)
{
	if (c->state != SIO_STATE_NEW)
		return SIO_ESTATE;
	c->mono0 = now;
	sio_core_set_state(c, SIO_STATE_INITIALIZATION);
	sio_core_set_state(c, SIO_STATE_KEY_EXCHANGING);
	return new_round(c, now, 1) ? SIO_ESIGN : 0;
}

/* A closing side repeats its CLOSE this often until acknowledged. */
static uint64_t close_interval(const sio_core *c)
{
	uint64_t i = (uint64_t)c->o.kx_retry_ns / 8;
	return i < 1000000u ? 1000000u : i;
}

void sio_core_close_received(sio_core *c, uint64_t now, int ack)
{
	uint8_t fr = SIO_FR_CLOSE_ACK;
	if (ack) {
		if (c->state == SIO_STATE_CLOSING) {
			c->close_acked = 1;
			sio_core_set_state(c, SIO_STATE_CLOSED);
		}
		return;
	}
	if (c->state == SIO_STATE_ESTABLISHED || c->state == SIO_STATE_NEGOTIATION) {
		sio_core_set_state(c, SIO_STATE_CLOSING);
		sio_core_tx_close_open(c);
		sio_core_tx_seal(c, now);
	}
	if (c->state >= SIO_STATE_CLOSING && c->tx_slot >= 0) {
		sio_core_ctrl_packet(c, now, c->tx_slot, &fr, 1);
		c->close_acked = 1;
		/* A datagram may lose our acknowledgement: keep answering the
		 * peer's repeated CLOSE (one per close_interval) for a while, each
		 * answer extending the linger, within a hard bound. */
		if (c->datagram) {
			uint64_t first = c->linger_start ? c->linger_start : now;
			uint64_t until = now + 5 * close_interval(c) / 2;
			uint64_t cap = first + 20 * close_interval(c);
			c->linger_start = first;
			c->linger_until = until < cap ? until : cap;
		}
		sio_core_set_state(c, SIO_STATE_CLOSED);
	}
}

uint64_t sio_core_linger_until(const sio_core *c)
{
	return c->linger_until;
}

int sio_core_close(sio_core *c, uint64_t now)
{
	if (c->state >= SIO_STATE_CLOSING)
		return 0;
	if (c->state != SIO_STATE_ESTABLISHED && c->state != SIO_STATE_NEGOTIATION) {
		sio_core_set_state(c, SIO_STATE_CLOSING);
		sio_core_set_state(c, SIO_STATE_CLOSED);
		return 0;
	}
	sio_core_set_state(c, SIO_STATE_CLOSING);
	if (c->msg.tx_active) {
		c->msg.close_after = 1; /* after the fragmented message (core_msg.c) */
		return 0;
	}
	sio_core_close_send(c, now);
	return 0;
}

void sio_core_close_send(sio_core *c, uint64_t now)
{
	uint8_t fr = SIO_FR_CLOSE;
	if (sio_core_tx_frame(c, now, &fr, 1, NULL, 0, 1) != 0) {
		sio_core_set_state(c, SIO_STATE_CLOSED);
		return;
	}
	sio_core_tx_seal(c, now);
	c->close_sent = 1;
	c->close_retry = now + close_interval(c);
	c->close_deadline = now + 10 * (uint64_t)c->o.kx_retry_ns;
}

void sio_core_transport_closed(sio_core *c, uint64_t now, int err)
{
	(void)now;
	if (c->state != SIO_STATE_CLOSED) {
		if (err == 0 || err == SIO_ETRUNCATED)
			sio_core_fail(c, SIO_ETRUNCATED, "transport ended without a graceful close");
		else if (err == SIO_EUNREACH)
			sio_core_fail(c, err, "the peer's socket is gone (connection refused)");
		else
			sio_core_fail(c, err < 0 ? err : SIO_EIO, "transport failed");
	}
	/* what was sealed but not handed over will never leave now */
	sio_core_tx_abandon(c, c->err ? c->err : SIO_ECANCELED);
}

void sio_core_unreachable(sio_core *c, uint64_t now)
{
	if (c->state == SIO_STATE_NEW || c->state == SIO_STATE_CLOSED)
		return;
	if (c->unreach_count++ == 0)
		c->unreach_first = now;
	if (c->unreach_count >= SIO_UNREACH_COUNT && now - c->unreach_first >= SIO_UNREACH_NS) {
		sio_core_fail(c, SIO_EUNREACH,
			      "the peer's port is unreachable (ICMP port unreachable for over a "
			      "second, nothing authenticated from the peer meanwhile)");
		return;
	}
	/* Ask a live peer to prove it: it answers a packet-size probe with id 0
	 * at once (an authenticated packet, which ends the run), however idle
	 * it is. At most one every SIO_UNREACH_NS / 4. */
	if (c->state >= SIO_STATE_NEGOTIATION && c->state <= SIO_STATE_ESTABLISHED &&
	    (c->unreach_probe == 0 || now >= c->unreach_probe + SIO_UNREACH_NS / 4) &&
	    sio_core_tx_probe(c, now, 0, SIO_OVERHEAD + 11) == 0)
		c->unreach_probe = now;
}

static int kx_active(const sio_core *c)
{
	return c->state >= SIO_STATE_KEY_EXCHANGING && c->state <= SIO_STATE_ESTABLISHED &&
	       c->have_local;
}

/* Our retry timer may resend our key-exchange message: not on a reply-only
 * core whose peer never proved it received what we sent (§4.5). */
static int timer_retries(const sio_core *c)
{
	return !c->reply_only || c->peer_proven;
}

void sio_core_tick(sio_core *c, uint64_t now)
{
	if (c->state == SIO_STATE_NEW || c->state == SIO_STATE_CLOSED)
		return;
	if (c->cb.diag) {
		c->dg.now = now;
		if (now >= c->dg.next)
			sio_core_diag_drops(c, now); /* what the last second held */
	}
	if (kx_active(c) && !round_complete(c)) {
		if (now >= c->round_start + (uint64_t)c->o.kx_timeout_ns) {
			if (!c->any_valid_kx)
				sio_core_fail(c, c->auth_refused ? SIO_EAUTH : SIO_ENOKEYX,
					      c->auth_refused
						      ? "key exchange timed out: the peer's identity is not authorised"
						      : "key exchange timed out without any valid message (wrong PSK, identity or no peer)");
			else
				sio_core_fail(c, SIO_ETIMEDOUT, "key exchange timed out");
			return;
		}
		if (now >= c->next_retry && timer_retries(c))
			resend_local(c, now);
	}
	/* Messages first: packet-size negotiation may end here, and an
	 * ESTABLISHED session's timers below must then run in this same tick. */
	sio_core_msg_tick(c, now);
	if (c->state == SIO_STATE_ESTABLISHED) {
		if (round_complete(c) && c->tx_slot == (int)(c->gen & 3) &&
		    (now >= c->next_rekey || c->keys[c->tx_slot].tx_pn >= c->o.kx_rekey_packets) &&
		    new_round(c, now, c->gen + 1))
			return;
		if (c->o.dead_peer_ns > 0 && now >= c->last_recv + (uint64_t)c->o.dead_peer_ns) {
			sio_core_fail(c, SIO_EPEERDEAD, "no packet from the peer within the dead-peer timeout");
			return;
		}
		if (c->o.keepalive_ns > 0 && now >= c->last_send + (uint64_t)c->o.keepalive_ns) {
			uint8_t fr = SIO_FR_KEEPALIVE;
			sio_core_tx_frame(c, now, &fr, 1, NULL, 0, 1);
			c->last_send = now; /* even if the ring was full: retry later */
		}
	}
	if (c->state == SIO_STATE_CLOSING && c->close_sent && !c->close_acked) {
		if (now >= c->close_deadline) {
			sio_core_error(c, SIO_ETIMEDOUT, "graceful close was not acknowledged");
			sio_core_set_state(c, SIO_STATE_CLOSED);
			return;
		}
		if (now >= c->close_retry && c->tx_slot >= 0) {
			uint8_t fr = SIO_FR_CLOSE;
			sio_core_ctrl_packet(c, now, c->tx_slot, &fr, 1);
			c->close_retry = now + close_interval(c);
		}
	}
	sio_core_tx_seal(c, now);
	sio_core_tx_trim(c, now);
}

static uint64_t min64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

uint64_t sio_core_deadline(const sio_core *c)
{
	uint64_t d = UINT64_MAX;
	if (c->state == SIO_STATE_NEW || c->state == SIO_STATE_CLOSED)
		return d;
	if (kx_active(c) && !round_complete(c)) {
		d = min64(d, c->round_start + (uint64_t)c->o.kx_timeout_ns);
		if (timer_retries(c))
			d = min64(d, c->next_retry);
	}
	if (c->state == SIO_STATE_ESTABLISHED) {
		if (round_complete(c) && c->tx_slot == (int)(c->gen & 3)) {
			d = min64(d, c->next_rekey);
			if (c->keys[c->tx_slot].tx_pn >= c->o.kx_rekey_packets)
				d = 0; /* renewal by packet count is due now */
		}
		if (c->o.dead_peer_ns > 0)
			d = min64(d, c->last_recv + (uint64_t)c->o.dead_peer_ns);
		if (c->o.keepalive_ns > 0)
			d = min64(d, c->last_send + (uint64_t)c->o.keepalive_ns);
	}
	if (c->state == SIO_STATE_CLOSING && c->close_sent && !c->close_acked)
		d = min64(d, min64(c->close_deadline, c->close_retry));
	d = min64(d, sio_core_msg_deadline(c));
	if (c->cb.diag)
		d = min64(d, c->dg.next);
	if (sio_core_can_send(c) && c->keys[c->tx_slot].tx_pn < SIO_PN_LIMIT)
		d = min64(d, sio_core_tx_deadline(c));
	return min64(d, sio_core_tx_trim_deadline(c));
}

void sio_core_set_exclusive(sio_core *c)
{
	c->exclusive = 1;
}

sio_state sio_core_state(const sio_core *c)
{
	return c->state;
}

void sio_core_stats(const sio_core *c, sio_stats *st)
{
	*st = c->st;
}

size_t sio_core_max_packet(const sio_core *c)
{
	return c->o.max_packet_size;
}

int sio_core_remote_key(const sio_core *c, uint8_t pk[32])
{
	if (!c->have_peer_id)
		return SIO_ESTATE;
	memcpy(pk, c->peer_id, 32);
	return 0;
}
