/*
 * Fragmentation and reassembly of messages larger than one packet
 * (docs/PROTOCOL.md §14.2). Pure module: no clock, no I/O; the caller
 * passes the current time. Not thread-safe (the core serialises calls).
 *
 * Sender: sio_frag_tx_* cuts a message into FRAGMENT frames that fill the
 * room left in each packet.
 * Receiver: sio_frag_rx_* reassembles them with a hard memory bound per
 * session: at most `budget` bytes of message buffers (live + cached) and at
 * most `max_partials` messages in progress; overlapping fragments must carry
 * identical bytes (else the partial message is discarded); finished or
 * abandoned message ids are remembered in a window of `id_window` ids so
 * late duplicates never start a new message.
 */
#ifndef SIO_FRAG_H
#define SIO_FRAG_H

#include <stddef.h>
#include <stdint.h>

/* Frame kind byte of a fragment (matches SIO_FR_FRAGMENT of core_int.h);
 * bit 7 set = "last frame of the packet, no length field". */
#define SIO_FRAG_KIND 0x07
#define SIO_FRAG_LAST 0x80
/* Longest fragment header: kind + 5 varints of at most 5 bytes. */
#define SIO_FRAG_HDR_MAX 26
/* Disjoint byte ranges tracked per partial message. A fragment that would
 * need more is dropped (counted): a sender cutting in order never needs
 * more than one range per reordering gap. */
#define SIO_FRAG_RANGES 32
/* Smallest payload the sender puts in a fragment that does not end the
 * message: below that it starts a new packet instead. */
#define SIO_FRAG_MIN_PAYLOAD 32

typedef struct sio_frag_hdr {
	uint32_t type;  /* SIO_TYPE_READWRITE or a user channel 0..SIO_CHANNEL_MAX */
	uint32_t id;    /* message id, per sender, +1 per fragmented message */
	uint32_t total; /* full message length, >= 1 */
	uint32_t off;   /* offset of this fragment's payload in the message */
	uint32_t len;   /* payload length, >= 1, off + len <= total */
} sio_frag_hdr;

/* Bytes the header of H takes, kind byte included; LAST = no length field. */
size_t sio_frag_hdr_len(const sio_frag_hdr *h, int last);

/* Writes the frame header (kind byte first) at P and returns its length. */
size_t sio_frag_hdr_put(uint8_t *p, const sio_frag_hdr *h, int last);

/* Parses a fragment frame header. P points just after the kind byte, END is
 * the end of the packet's frames, LAST is the kind byte's bit 7 (then the
 * payload runs to END). Returns the number of header bytes read after the
 * kind byte (the payload follows them), or 0 when malformed: truncated,
 * overlong (not the shortest encoding) or too large varints, bad type code,
 * zero-length payload, payload past END, or off + len > total. */
size_t sio_frag_hdr_get(const uint8_t *p, const uint8_t *end, int last, sio_frag_hdr *h);

/* ---- sender -------------------------------------------------------------- */

typedef struct sio_frag_tx {
	uint32_t type, id, total, off;
} sio_frag_tx;

void sio_frag_tx_begin(sio_frag_tx *t, uint32_t type, uint32_t id, uint32_t total);

/* Plans the next fragment for a packet with ROOM bytes of frame space left.
 * Returns the payload length (0: the room is too small, start a new packet)
 * and fills *H (with off = t->off) and *LAST (1: the frame fills the packet,
 * written without a length; the packet must be closed after it). Does not
 * advance: call sio_frag_tx_advance() once the frame is queued. */
uint32_t sio_frag_tx_plan(const sio_frag_tx *t, size_t room, sio_frag_hdr *h, int *last);
void sio_frag_tx_advance(sio_frag_tx *t, uint32_t len);
static inline int sio_frag_tx_done(const sio_frag_tx *t)
{
	return t->off >= t->total;
}

/* ---- receiver ------------------------------------------------------------ */

typedef struct sio_frag_cfg {
	uint32_t max_message;  /* announced totals above this are refused */
	uint32_t budget;       /* bytes of reassembly buffers, live + cached */
	uint32_t max_partials; /* messages in progress at once */
	uint32_t id_window;    /* ids remembered behind the newest (MaxChainIDDiff) */
	uint64_t timeout_ns;   /* a partial without a new fragment for this long is dropped */
} sio_frag_cfg;

/* Defaults not in sio_options. */
#define SIO_FRAG_DEFAULT_ID_WINDOW  1024u
#define SIO_FRAG_DEFAULT_TIMEOUT_NS 3000000000ull

typedef struct sio_frag_stats {
	uint64_t delivered;     /* messages completed */
	uint64_t fragments;     /* fragments accepted (stored) */
	uint64_t dup_fragments; /* fragments whose bytes were all already held (same bytes) */
	uint64_t dropped;       /* fragments dropped for any reason below, or held by a
	                           discarded partial */
	uint64_t timeouts;      /* partial messages timed out */
	uint64_t conflicts;     /* partial messages discarded: overlapping bytes differ, or
	                           type/total differ between fragments */
	uint64_t too_big;       /* fragments announcing total > max_message */
	uint64_t evicted;       /* partial messages evicted for a newer one (bound) */
	uint64_t refused;       /* new partial messages refused (bound, no older to evict) */
	uint64_t stale;         /* fragments of finished/abandoned or too old ids */
	uint64_t scattered;     /* fragments dropped: too many disjoint ranges */
	uint64_t nomem;         /* malloc failures */
	uint64_t bytes;         /* current bytes of buffers held (live + cached) */
	uint64_t peak_bytes;    /* highest value of bytes */
} sio_frag_stats;

typedef struct sio_frag_rx sio_frag_rx;

typedef void (*sio_frag_deliver_fn)(void *ctx, uint32_t type, const uint8_t *data, size_t len);

/* Fields of CFG that are 0 take the defaults (16 MiB, 4 MiB, 64, 1024, 3 s).
 * The budget is raised to max_message when smaller (so that one message of
 * the largest allowed size can always be reassembled). Allocates the
 * partial-message table once; buffers are allocated per message (never per
 * fragment) and a few are kept for reuse, all within the budget. */
int sio_frag_rx_new(sio_frag_rx **out, const sio_frag_cfg *cfg);
void sio_frag_rx_free(sio_frag_rx *r);

/* Offers one fragment (header parsed by sio_frag_hdr_get, PAYLOAD of
 * h->len bytes). Returns 1 if it completed a message (delivered through FN
 * before returning), 0 if stored, or a negative SIO_E... code when it was
 * dropped (SIO_ETOOBIG, SIO_EPROTO conflict, SIO_EAGAIN bound/refused,
 * SIO_ELOST stale or duplicate id, SIO_ENOMEM). Every drop is counted. */
int sio_frag_rx_add(sio_frag_rx *r, uint64_t now, const sio_frag_hdr *h, const uint8_t *payload,
                    sio_frag_deliver_fn fn, void *ctx);

/* Drops partial messages idle for timeout_ns at NOW. Returns how many. */
int sio_frag_rx_tick(sio_frag_rx *r, uint64_t now);

/* Time at which the oldest partial times out, UINT64_MAX if none. */
uint64_t sio_frag_rx_deadline(const sio_frag_rx *r);

/* Messages in progress, and counters. */
uint32_t sio_frag_rx_partials(const sio_frag_rx *r);
/* With no message in progress: frees the table of partial messages and the
 * cached buffers (both come back with the next fragment). */
void sio_frag_rx_trim(sio_frag_rx *r);
/* Bytes held now: the table of partial messages and the buffers. */
size_t sio_frag_rx_held(const sio_frag_rx *r);
void sio_frag_rx_stats(const sio_frag_rx *r, sio_frag_stats *st);

#endif /* SIO_FRAG_H */
