/*
 * Protocol core (layer 1 of docs/ARCHITECTURE.md): the I/O-free engine.
 *
 * Bytes and the current time go in; packets to send, delivered messages,
 * events and the next deadline come out. The core never reads a clock,
 * sleeps, touches a socket, starts a thread, or calls malloc per packet or
 * message: buffers come when an idle session gets busy and go when it is
 * idle again (sio_core_new). It is not thread-safe: the caller (session.c) serialises
 * every call with its own lock.
 *
 * Time is a monotonic count of nanoseconds supplied by the caller. Wall-clock
 * time (for session ids and the remote-timestamp sanity check) is also
 * supplied by the caller, through sio_core_config.wallclock_ns at creation
 * and the `wall` arguments where needed, so simulations stay deterministic.
 */
#ifndef SIO_CORE_H
#define SIO_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "secureio.h"

typedef struct sio_core sio_core;

/* Events are reported through callbacks invoked synchronously from inside the
 * core call that caused them. Callbacks must not call back into the same core
 * (the session layer defers anything that would). */
typedef struct sio_core_cbs {
	void *ctx;
	/* A message was delivered; DATA is valid during the call only. */
	void (*deliver)(void *ctx, uint32_t type, const uint8_t *data, size_t len);
	void (*state)(void *ctx, sio_state old_state, sio_state new_state);
	/* Error event (ERR is an SIO_E... code, MSG a static or short string). */
	void (*error)(void *ctx, int err, const char *msg);
	/* Remote identity learned (no pinned set): return 0 to accept. */
	int (*remote_identity)(void *ctx, const uint8_t pk[32]);
	/* A message queued with a nonzero token left in a packet (err 0), or
	 * failed (err < 0, e.g. SIO_ECANCELED at close). */
	void (*sent)(void *ctx, uint64_t token, int err);
	/* Randomness: NULL means libsodium's randombytes_buf. Simulations pass a
	 * seeded generator. */
	void (*random)(void *ctx, uint8_t *buf, size_t len);
	/* Diagnostics (sio_callbacks.on_diag): LEVEL is an SIO_DIAG_ value, MSG
	 * one line without a secret, valid during the call only. NULL: nothing
	 * is formatted or counted for it (core_diag.c). */
	void (*diag)(void *ctx, int level, const char *msg);
	/* The session went idle and the core returned its buffers (core_tx.c):
	 * the I/O layer may return its own (sio_tp_trim). NULL: not told. */
	void (*trimmed)(void *ctx);
} sio_core_cbs;

typedef struct sio_core_config {
	const uint8_t *ed25519_sk; /* 64 bytes, libsodium layout; referenced */
	/* Or (when SIGN is set; ED25519_SK may then be NULL): the identity's
	 * public key and the function signing our key-exchange messages, which
	 * may block (an ssh-agent) or fail; a failure ends the session with
	 * SIO_ESIGN. */
	const uint8_t *ed25519_pk;
	int (*sign)(void *ctx, uint8_t sig[64], const uint8_t *msg, size_t len);
	void *sign_ctx;
	/* Optional: decides whether a key of REMOTE may be accepted (from="..."
	 * address restrictions); called with the callbacks' ctx. NULL: being in
	 * REMOTE is enough. */
	int (*admit)(void *ctx, const uint8_t pk[32]);
	const sio_remote *remote;  /* NULL = learn; referenced */
	int datagram;              /* 1 = datagram transport, 0 = stream records */
	sio_options opts;          /* copied; zero fields mean defaults */
	uint64_t wallclock_ns;     /* wall-clock time at creation (session id) */
	int diag_level;            /* most detailed SIO_DIAG_ level for cbs.diag; 0 = INFO */
} sio_core_config;

/* Allocates the core's fixed state. The buffers of a busy session (packet
 * rings, token ring, AEAD contexts, reassembly table) are allocated when
 * traffic first needs them and returned once the session is idle again
 * (nothing queued, sent or received for SIO_TRIM_NS, core_int.h): never per
 * packet or per message. */
int sio_core_new(sio_core **out, const sio_core_config *cfg, const sio_core_cbs *cbs);

/* Wipes all keys and frees. Pending tokens are failed with SIO_ECANCELED. */
void sio_core_free(sio_core *c);

/* ON = 1: this side may not know where its peer is (an unconnected datagram
 * socket that learns the peer's address from what arrives). Until the peer
 * has proven that it holds our key-exchange message (a data packet under the
 * resulting key authenticated), our message is never retransmitted on the
 * retry timer, only in reply to the peer's own messages (docs/PROTOCOL.md
 * §4.5): the initiator drives retries, and nothing is sent unprompted to an
 * address that never answered. Call before sio_core_start(). */
void sio_core_set_reply_only(sio_core *c, int on);

/* Begins the key exchange (state INITIALIZATION -> KEY_EXCHANGING). */
int sio_core_start(sio_core *c, uint64_t now);

/* What sio_core_recv() made of a packet. The I/O layer learns the peer
 * address of an unconnected datagram socket from these (docs/TRANSPORT.md,
 * docs/PROTOCOL.md §4.5): only SIO_CORE_RX_DATA proves that the sender holds
 * keys agreed with us, so only it validates an address or moves a validated
 * one; a key-exchange message (new, or an exact copy of the peer's message
 * already held: a retransmission, or anyone's replay) may only point a not
 * yet validated address at its source. */
#define SIO_CORE_RX_DROP 0      /* dropped (counted), nothing learned */
#define SIO_CORE_RX_KX 1        /* a valid key-exchange message, newly accepted */
/* A data packet that decrypted, passed the replay window, and is numbered
 * above every packet authenticated so far under the newest receive key
 * that has any: a copy of a packet that was lost on the way (replayed from
 * elsewhere) or a late one never is. */
#define SIO_CORE_RX_DATA 2
#define SIO_CORE_RX_KX_REPEAT 3 /* a copy of the peer's key-exchange message we hold */
/* Authenticated and delivered, but not the highest-numbered so far under
 * the newest key (reordered, under an older key, or, with replay protection
 * off, possibly a replay): it proves nothing about where the peer is now. */
#define SIO_CORE_RX_DATA_OLD 4

/* One received packet (a datagram, or one de-framed stream record). The
 * buffer may be modified (decryption is in place). Bad packets are counted
 * and dropped; nothing is ever sent in reply to a bad packet. Returns one of
 * the SIO_CORE_RX_ values above. */
int sio_core_recv(sio_core *c, uint64_t now, uint8_t *pkt, size_t len);

/* Queues one message (copied once, straight into the packet being built).
 * Returns 0, SIO_EAGAIN when the send ring is full (retry after packets were
 * sent), SIO_ETOOBIG, SIO_ECLOSED, SIO_ELIMIT. A nonzero TOKEN is reported
 * through cbs.sent when the packet that completes the message is handed out
 * by sio_core_pending() and acknowledged by sio_core_sent().
 * A message larger than one packet is fragmented (SIO_ETOOBIG only when
 * fragmentation is off or LEN > max_message_size). A message is accepted
 * whole or not at all: when the ring fills in the middle of one, the core
 * keeps a copy of the rest (one buffer, reused) and queues it as packets
 * leave; until then every other write gets SIO_EAGAIN (order is kept) and
 * a close sends its CLOSE after it. */
int sio_core_write(sio_core *c, uint64_t now, uint32_t type, const uint8_t *data, size_t len,
		   uint64_t token);

/* Fails every message queued so far (their tokens reported with ERR): for
 * a session closed before it was ever started. */
void sio_core_discard(sio_core *c, int err);

/* What sio_core_write() would answer now for a message of TYPE and LEN
 * whatever room the ring has: 0, SIO_ECLOSED, SIO_EINVAL or SIO_ETOOBIG
 * (the session checks before it queues a message, so that these errors
 * reach the writer at once rather than its completion object). */
int sio_core_write_check(const sio_core *c, uint32_t type, size_t len);

/* A TOKEN with SIO_CORE_TOKEN_WM set is a watermark: it is not kept per
 * message but per packet (the largest one in the packet), and reported once
 * through cbs.sent when that packet leaves, after the per-message tokens of
 * the packet; watermarks must grow with every write. The session layer's
 * write queue numbers its messages this way: completion per packet. */

/* ON = 1: a batch of writes follows; packets whose merge deadline passed
 * are not sealed (nor closed) between them, so the batch fills them first.
 * ON = 0 seals what is due at NOW. */
void sio_core_hold_seal(sio_core *c, uint64_t now, int on);
#define SIO_CORE_TOKEN_WM (UINT64_C(1) << 63)

/* Closes the packet being built now instead of waiting for the send delay. */
void sio_core_flush(sio_core *c, uint64_t now);

/* Fills IOV with up to MAX packets that are due now (sealed, ready for the
 * wire), oldest first, and returns their count. The buffers belong to the
 * core and stay valid and unchanged until sio_core_sent(); other core calls
 * (write, recv) may run in between. */
size_t sio_core_pending(sio_core *c, uint64_t now, struct iovec *iov, size_t max);

/* The first N packets returned by sio_core_pending() were handed to the
 * transport (ERR 0) or failed (ERR < 0). Releases their buffers and reports
 * their tokens. */
void sio_core_sent(sio_core *c, size_t n, int err);

/* Runs timers due at NOW (retransmits, rekey, keepalive, timeouts, merging). */
void sio_core_tick(sio_core *c, uint64_t now);

/* Absolute time of the next timer, UINT64_MAX if none. */
uint64_t sio_core_deadline(const sio_core *c);
/* Data packets opened so far (grows while writers fill packets). */
uint64_t sio_core_opened(const sio_core *c);

/* Graceful close: sends what is queued, then a close message. */
int sio_core_close(sio_core *c, uint64_t now);

/* The transport ended (ERR 0 = end of file) or failed (ERR < 0). */
void sio_core_transport_closed(sio_core *c, uint64_t now, int err);

/* Port unreachable on a connected UDP socket (docs/TRANSPORT.md, "Port
 * unreachable"): ICMP is not authenticated, so a refusal alone proves
 * nothing. The session fails with SIO_EUNREACH only once at least
 * SIO_UNREACH_COUNT refusals were reported over at least SIO_UNREACH_NS with
 * no authenticated packet from the peer in between (a valid key exchange or
 * data packet starts the count again). */
#define SIO_UNREACH_COUNT 3
#define SIO_UNREACH_NS 1000000000ull
void sio_core_unreachable(sio_core *c, uint64_t now);

/* The transport reaches only the peer (a stream, a pipe, a connected UNIX
 * socket: the kernel vouches for the sender; not UDP): before
 * any key exchange was accepted, a well-signed one from an identity outside
 * the pinned set ends the session at once with SIO_EAUTH (a shared or
 * unconnected socket keeps waiting for the right peer instead). */
void sio_core_set_exclusive(sio_core *c);

/* After acknowledging the peer's CLOSE on a datagram transport, the core
 * still answers repeated CLOSEs (its acknowledgement may be lost) until this
 * time: the I/O layer keeps reading until then. 0 = no linger. */
uint64_t sio_core_linger_until(const sio_core *c);

sio_state sio_core_state(const sio_core *c);
void sio_core_stats(const sio_core *c, sio_stats *st);
/* Largest packet the core may hand out now (negotiated or configured). */
size_t sio_core_max_packet(const sio_core *c);
/* Remote public key once known: 0, or SIO_ESTATE if not yet known. */
int sio_core_remote_key(const sio_core *c, uint8_t pk[32]);

#endif /* SIO_CORE_H */
