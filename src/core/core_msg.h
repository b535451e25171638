/* Fragmentation and packet-size negotiation inside the protocol core
 * (issue #4). The engine files call these few hooks; the logic lives in
 * core_msg.c, frag.c and pmtu.c. Spec: docs/PROTOCOL.md §14. */
#ifndef SIO_CORE_MSG_H
#define SIO_CORE_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"
#include "frag.h"
#include "pmtu.h"

typedef struct sio_core_msg {
	uint32_t pkt_size; /* largest packet to fill now (negotiated or configured) */
	int pmtu_on;       /* datagram transport with negotiation enabled */
	sio_pmtu pmtu;
	sio_frag_rx *rx;
	size_t rx_pkt_len; /* wire length of the packet whose frames are parsed */
	/* A fragmented message accepted while the ring could not hold all of
	 * it: its remaining bytes (from message offset ovf_base) wait in ovf
	 * and are queued as packets leave. One at a time; other writes get
	 * SIO_EAGAIN meanwhile, and a close sends CLOSE after it. */
	int tx_active, close_after;
	sio_frag_tx tx;
	uint8_t *ovf;
	size_t ovf_cap;
	uint32_t ovf_base;
	uint64_t tx_token;
	uint32_t next_id;
	/* loss heuristic: a full-size packet sealed, nothing authentic since */
	uint64_t big_sealed_at, last_loss_signal;
	uint64_t quiet_since; /* first send seen after the last receive */
} sio_core_msg;

/* sio_core_new / sio_core_free. */
int sio_core_msg_init(sio_core *c);
void sio_core_msg_free(sio_core *c);
/* An idle session returns its reassembly table, cached buffers and the
 * overflow copy of a fragmented write (core_tx.c, sio_core_tx_trim). */
void sio_core_msg_trim(sio_core *c);
/* Bytes those hold now. */
size_t sio_core_msg_held(const sio_core *c);

/* The session entered NEGOTIATION (keys usable). Starts probing on datagram
 * transports; returns 1 when ESTABLISHED may follow at once. */
int sio_core_msg_negotiate(sio_core *c, uint64_t now);

/* sio_core_write() for a message that does not fit in one packet, or while
 * a fragmented message is still being queued. Same returns as
 * sio_core_write(): the message is accepted whole (0) or not at all. */
int sio_core_msg_write(sio_core *c, uint64_t now, uint32_t type, const uint8_t *data, size_t len,
                       uint64_t token);

/* Queues more of the accepted fragmented message as ring space allows
 * (from sio_core_pending and the tick); sends the deferred CLOSE after it. */
void sio_core_msg_pump(sio_core *c, uint64_t now);

/* Unsent data is cancelled (sio_core_tx_cancel): fails the token of the
 * fragmented message still being queued. */
void sio_core_msg_cancel(sio_core *c, int err);

/* A FRAGMENT, PROBE or PROBE_ACK frame (kind byte already read; LAST is its
 * bit 7) in [P, END) of an authentic packet. LIVE: messages may be
 * delivered. Returns the bytes consumed after the kind byte, 0 = malformed. */
size_t sio_core_msg_frame(sio_core *c, uint64_t now, uint8_t kind, int last, const uint8_t *p,
                          const uint8_t *end, int live);

/* Timers: reassembly timeouts, probes, end of negotiation. */
void sio_core_msg_tick(sio_core *c, uint64_t now);
uint64_t sio_core_msg_deadline(const sio_core *c);

/* core_tx.c: queues fragments of T from t->off on (DATA holds the message
 * from offset BASE on), starting in the room left in the open packet; 0 when
 * the last one is queued (TOKEN then follows its packet), SIO_EAGAIN when
 * the ring is full (progress kept in T), SIO_ELIMIT. */
int sio_core_tx_fragments(sio_core *c, uint64_t now, sio_frag_tx *t, const uint8_t *data,
                          uint32_t base, uint64_t token);

/* core.c: appends the CLOSE frame and arms its retransmission (the tail of
 * sio_core_close, run later when a fragmented message was still queued). */
void sio_core_close_send(sio_core *c, uint64_t now);
/* core_tx.c: seals a packet of exactly SIZE bytes holding a PROBE frame
 * (ID, SIZE) and padding. 0, SIO_EAGAIN, SIO_ESTATE, SIO_EINVAL. */
int sio_core_tx_probe(sio_core *c, uint64_t now, uint32_t id, uint32_t size);

/* Largest packet to fill now. */
uint32_t sio_core_pkt_size(const sio_core *c);

#endif /* SIO_CORE_MSG_H */
