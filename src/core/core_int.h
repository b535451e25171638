/* Internal state of the protocol core, shared by core.c (state machine, key
 * exchange, timers), core_tx.c (queues, framing, merging, sealing) and
 * core_rx.c (opening, replay, frame parsing). docs/PROTOCOL.md is the spec.
 * Messages, fragments and packet-size probes live in core_msg.c (on top of
 * frag.c and pmtu.c); their frames are parsed in sio_core_rx_frames(). */
#ifndef SIO_CORE_INT_H
#define SIO_CORE_INT_H

#include "aead.h"
#include "core.h"
#include "core_msg.h"
#include "kx.h"
#include "replay.h"

#define SIO_HDR_LEN 5   /* first byte + 32-bit packet number */
#define SIO_TAG_LEN 16
#define SIO_OVERHEAD (SIO_HDR_LEN + SIO_TAG_LEN)
#define SIO_SLACK 8     /* free room before the header in packet buffers */
#define SIO_PN_LIMIT 0xffffffffull /* packet numbers are < this (32 bits) */
#define SIO_KEY_SLOTS 4
#define SIO_KX_QUEUE 4
#define SIO_CTRL_QUEUE 8
#define SIO_CTRL_BYTES 64 /* stream control packets: a few frames */
#define SIO_TOKENS 4096    /* most pending tokens (the ring grows up to this) */
#define SIO_TOKENS_FIRST 64 /* token ring size when a session first needs one */
#define SIO_RING_BYTES (1u << 20)
/* Packet buffers are allocated in chunks of up to about this many bytes
 * when a queue needs them (core_tx.c, "Memory of an idle session" in
 * docs/ARCHITECTURE.md), and every queue buffer, the token ring and the
 * AEAD contexts are returned once the session sent and received nothing
 * for SIO_TRIM_NS with its queues empty. */
#define SIO_PQ_CHUNK_BYTES 8192u
#define SIO_TRIM_NS 1000000000ull
/* Signature checks per second and session, and the burst: about 1-2 % of a
 * core at most (a check costs 45-85 us here), and a flood must exceed 256
 * junk messages a second before an honest one can find the bucket empty. */
#define SIO_KX_VERIFY_RATE 256
#define SIO_KX_VERIFY_BURST 64

/* First byte of a data packet: 0 1 R R R R K K (R reserved zero, K key id). */
#define SIO_PKT_DATA 0x40
#define SIO_PKT_DATA_MASK 0xfc

/* Frame kinds (low 7 bits of the frame's first byte; bit 7 = "last frame,
 * no length field, runs to the end of the packet"). */
enum {
	SIO_FR_PAD = 0x00,       /* rest of the packet is padding */
	SIO_FR_DATA_RW = 0x01,   /* [len] payload: message of SIO_TYPE_READWRITE */
	SIO_FR_DATA = 0x02,      /* type [len] payload: message of TYPE */
	SIO_FR_ANSWER = 0x03,    /* "I hold the key of this packet" */
	SIO_FR_KEEPALIVE = 0x04, /* nothing */
	SIO_FR_CLOSE = 0x05,     /* graceful close */
	SIO_FR_CLOSE_ACK = 0x06, /* close acknowledged */
	SIO_FR_FRAGMENT = 0x07,  /* reserved: fragment (issue #4) */
	SIO_FR_PROBE = 0x08,     /* reserved: packet-size probe */
	SIO_FR_PROBE_ACK = 0x09, /* reserved: probe acknowledgement */
	SIO_FR_EXT_MIN = 0x40,   /* 0x40-0x7f: [len] body, skipped if unknown */
};
#define SIO_FR_LAST 0x80

enum { PKT_FREE = 0, PKT_FILL, PKT_READY, PKT_SEALED };

typedef struct sio_pkt {
	uint8_t *buf;     /* SIO_SLACK + capacity bytes */
	uint32_t cap;     /* largest packet this buffer holds */
	uint32_t off;     /* sealed: start of the packet in buf */
	uint32_t end;     /* filling: end of plaintext; sealed: end of packet */
	uint8_t state;
	uint8_t key;      /* ctrl packets: key slot to seal with */
	uint64_t seq;     /* seal order across ctrl and data queues */
	uint64_t deadline; /* filling: merge deadline */
	uint64_t id;      /* data ring: allocation number (tokens) */
	uint32_t nframes;
	/* Last data frame, for dropping its length field at seal time. */
	uint32_t lf_kind, lf_lenpos, lf_payload, lf_plen;
	uint8_t lf_lensz;
	uint32_t lim;     /* data ring: packet size limit when it was opened */
	/* data ring: largest watermark token (odd, see sio_core_write) of the
	 * messages it holds, reported once when the packet leaves */
	uint64_t wm;
} sio_pkt;

/* A ring of at most MAX packets (BUFCAP bytes of packet each) that exists
 * only while the session is busy: the first push allocates a few slots, a
 * full ring doubles them up to MAX (order is kept: positions stay), and
 * buffers are carved out of chunks that grow from one buffer to about
 * SIO_PQ_CHUNK_BYTES as pushes need them. sio_core_tx_trim() wipes and
 * frees all of it once the queue is empty and quiet (core_tx.c). */
typedef struct sio_pq {
	sio_pkt *p;      /* CAP slots; NULL while idle */
	uint8_t **chunk; /* NCHUNKS blocks of buffers (room for CHUNK_CAP) */
	uint8_t *carve;  /* CARVE_LEFT buffers not given to a slot yet */
	uint32_t cap, head, count, max;
	uint32_t bufcap, stride, nchunks, chunk_cap, carve_left, next_bufs;
	size_t buf_bytes; /* in chunks */
} sio_pq;

typedef struct sio_keyslot {
	int live;
	uint32_t gen;
	int confirmed; /* the peer holds this key (a packet under it arrived) */
	sio_aead tx, rx;
	uint64_t tx_pn;
	sio_replay rp;
} sio_keyslot;

typedef struct sio_token {
	uint64_t token, pkt_id;
} sio_token;

/* Drop reasons of the diagnostics' summaries (core_diag.c). */
enum {
	SIO_DG_MALFORMED,
	SIO_DG_DECRYPT,
	SIO_DG_REPLAY,
	SIO_DG_UNKNOWN_KEY,
	SIO_DG_IDENTITY,
	SIO_DG_KX_LIMITED,
	SIO_DG_KX,
	SIO_DG_FRAGMENTS,
	SIO_DG_UNKNOWN_TYPE,
	SIO_DG_REASONS
};
#define SIO_DG_REFUSED_KEYS 16 /* refused identities remembered (reported once each) */

/* Diagnostics state: only used when cb.diag is set. */
typedef struct sio_diag_state {
	uint64_t seen[SIO_DG_REASONS];        /* drops already reported, per reason */
	uint64_t quiet_until[SIO_DG_REASONS]; /* no line for that reason before this */
	uint64_t next;                        /* earliest pending summary, UINT64_MAX none */
	uint8_t refused[SIO_DG_REFUSED_KEYS][32];
	uint32_t nrefused;    /* identities reported so far (the table is a ring) */
	uint64_t verify_tat;  /* signature checks of refused identities (own budget) */
	uint32_t packet_size; /* last packet size reported */
	uint64_t now;         /* time of the latest recv or tick */
	uint64_t warn_tat;    /* non-fatal error lines (rate-limited) */
	uint64_t warn_hidden; /* of those, not shown since the last one shown */
} sio_diag_state;

typedef struct sio_handed {
	uint8_t q; /* 0 kx, 1 ctrl, 2 data */
} sio_handed;

struct sio_core {
	sio_core_cbs cb;
	sio_options o;
	int datagram;
	const uint8_t *sk;  /* NULL when signing through sign() */
	int (*sign)(void *ctx, uint8_t sig[64], const uint8_t *msg, size_t len);
	void *sign_ctx;
	uint8_t idpk[32];
	int (*admit)(void *ctx, const uint8_t pk[32]);
	const sio_remote *remote;
	sio_state state;
	int err; /* error that closed the session, 0 = graceful */
	uint64_t wall0, mono0;
	uint8_t sid[SIO_SID_BYTES];
	sio_psk_keys psk;

	/* peer */
	int have_peer_sid, have_peer_id, have_peer_epub, peer_proven, local_is_lo;
	int reply_only; /* sio_core_set_reply_only(): no timer retries until proven */
	uint8_t peer_sid[SIO_SID_BYTES], peer_id[32], peer_epub[32];
	uint64_t peer_created;

	/* current key-exchange round */
	uint32_t gen;
	int have_local, have_remote, derived, established_once;
	uint8_t local_msg[SIO_KX_MSG_LEN], remote_msg[SIO_KX_MSG_LEN];
	uint8_t local_wire[SIO_KX_WIRE_MAX];
	size_t local_wire_len;
	uint8_t e_sk[32];
	uint64_t local_created;
	uint64_t round_start, next_retry, next_rekey, dup_answered;
	int any_valid_kx;
	int exclusive; /* the transport reaches only the peer (sio_core_set_exclusive) */
	uint64_t auth_refused;
	uint64_t verify_tat; /* signature-check rationing (core.c) */
	uint64_t verifies;   /* signature checks made (tests, benchmarks) */

	sio_keyslot keys[SIO_KEY_SLOTS];
	int tx_slot; /* key slot used to send data, -1 = none yet */
	/* A replay bitmap ready for the next installed key: allocated with the
	 * core (next to it, not amid a handshake's short-lived buffers), then
	 * the one a retired key leaves. */
	uint64_t *replay_spare;

	/* output queues */
	sio_pq kxq, ctrlq, data;
	uint64_t seal_seq, pkt_ids;
	uint32_t data_sealed; /* sealed packets form a prefix of the data ring */
	int hold_seal;        /* sio_core_hold_seal: a batch of writes is coming */
	sio_handed *handed;
	size_t nhanded, handed_cap;
	sio_token *tokens; /* NULL while idle; tok_cap (a power of two) entries */
	uint32_t tok_head, tok_count, tok_cap;
	uint64_t tx_last; /* last packet queued (idle buffers are trimmed after it) */

	/* liveness, close */
	uint64_t last_send, last_recv;
	uint64_t unreach_first;  /* first refusal of the current run */
	uint32_t unreach_count;  /* refusals since the last authenticated packet */
	uint64_t unreach_probe;  /* when the last liveness probe went out (0 = none) */
	uint32_t fail_run;
	int close_sent, close_acked;
	uint64_t close_retry, close_deadline;
	uint64_t linger_start, linger_until; /* answering repeated CLOSEs (core.c) */

	sio_stats st;
	int diag_level;    /* most detailed level passed to cb.diag */
	sio_diag_state dg; /* diagnostics (core_diag.c) */
	sio_core_msg msg; /* fragmentation, packet-size negotiation (core_msg.c) */
};

/* core.c */
void sio_core_set_state(sio_core *c, sio_state st);
void sio_core_fail(sio_core *c, int err, const char *msg);
/* Counts and hands one received user message to the program; detaches the
 * session after options.detach_on_messages of them (core_rx.c). */
void sio_core_deliver(sio_core *c, uint32_t type, const uint8_t *data, size_t len);
void sio_core_error(sio_core *c, int err, const char *msg);
int sio_core_kx_recv(sio_core *c, uint64_t now, const uint8_t *pkt, size_t len);
void sio_core_key_confirmed(sio_core *c, uint64_t now, sio_keyslot *ks);
void sio_core_close_received(sio_core *c, uint64_t now, int ack);
/* Parses and delivers the frames of one authenticated, decrypted packet
 * payload [P, END) (core_rx.c; exposed for fuzz/fuzz_framing.c). */
void sio_core_rx_frames(sio_core *c, uint64_t now, const uint8_t *p, const uint8_t *end);
int sio_core_can_send(const sio_core *c);

/* core_tx.c */
int sio_core_queues_new(sio_core *c);
void sio_core_queues_free(sio_core *c);
/* Queues a kx message (copied). */
void sio_core_queue_kx(sio_core *c, uint64_t now, const uint8_t *msg, size_t len);
/* Room for one more token (grows the ring up to SIO_TOKENS): 1, or 0 when
 * the ring is full or cannot grow. */
int sio_core_tok_room(sio_core *c);
/* Returns the buffers of an idle session (empty queues, nothing queued,
 * sent or received for SIO_TRIM_NS): packet buffers, token ring, AEAD
 * contexts, the reassembly table. */
void sio_core_tx_trim(sio_core *c, uint64_t now);
/* When sio_core_tx_trim() has something to do, UINT64_MAX if never. */
uint64_t sio_core_tx_trim_deadline(const sio_core *c);
/* Bytes the core holds now in its on-demand buffers (tests, benchmarks). */
size_t sio_core_held_bytes(const sio_core *c);
/* Builds and seals a packet of its own under key SLOT holding FRAMES. 0 or
 * SIO_EAGAIN / SIO_ELIMIT / SIO_ETOOBIG. */
int sio_core_ctrl_packet(sio_core *c, uint64_t now, int slot, const uint8_t *frames, size_t len);
/* Like sio_core_ctrl_packet, padded with a PAD frame to exactly SIZE bytes
 * on the wire (0 = no padding): packet-size probes. Datagram cores hold
 * control packets up to the largest packet, stream cores SIO_CTRL_BYTES. */
int sio_core_ctrl_packet_sized(sio_core *c, uint64_t now, int slot, const uint8_t *frames,
			       size_t len, size_t size);
/* Appends a frame (header bytes HDR then BODY) to the data stream. */
int sio_core_tx_frame(sio_core *c, uint64_t now, const uint8_t *hdr, size_t hlen,
		      const uint8_t *body, size_t blen, int close_packet);
/* Closes the packet being filled (it will be sealed as soon as possible). */
void sio_core_tx_close_open(sio_core *c);
/* Seals every ready data packet (and due open ones) when a key allows. */
void sio_core_tx_seal(sio_core *c, uint64_t now);
/* Drops unsealed data packets, failing their tokens with ERR. */
void sio_core_tx_cancel(sio_core *c, int err);
/* Fails with ERR the tokens of sealed packets not yet reported sent (the
 * transport is gone, or the core is freed); a later sio_core_sent() reports
 * them no more. */
void sio_core_tx_abandon(sio_core *c, int err);
/* Next merge deadline of the open packet, UINT64_MAX if none. */
uint64_t sio_core_tx_deadline(const sio_core *c);

/* core_diag.c. Every call site tests SIO_DIAG_ON() (or cb.diag) first: with
 * no callback, diagnostics cost one branch and nothing is formatted. */
#define SIO_DIAG_ON(c, lvl) ((c)->cb.diag && (lvl) <= (c)->diag_level)
void sio_core_diag(sio_core *c, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Reports the drops counted since the last report, at most one line per
 * reason and second (what a second holds is said in the next line). */
void sio_core_diag_drops(sio_core *c, uint64_t now);
/* A key exchange from identity PK (in the message M) was not accepted:
 * reported once per identity, only if M's signature holds (checked from a
 * budget of its own, not the key exchange's). */
void sio_core_diag_refused(sio_core *c, uint64_t now, const uint8_t m[SIO_KX_MSG_LEN],
			   const uint8_t pk[32], int pinned);
/* A non-fatal error event MSG as a WARN line, at most 4 in a burst then one
 * a second (anyone may cause some: a junk run breaks decryption). */
void sio_core_diag_warn(sio_core *c, const char *msg);
/* "SHA256:..." of PK into OUT (SIO_FINGERPRINT_MAX bytes). */
void sio_core_diag_fp(const uint8_t pk[32], char *out);

/* core_rx.c */
int sio_core_data_recv(sio_core *c, uint64_t now, uint8_t *pkt, size_t len);

#endif
