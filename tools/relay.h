/* State shared by the relay of `sio listen/connect` (relay.c) and its data
 * path (stream.c): the output queue and writer thread, and the stream-mode
 * framing (sequence numbers, reordering, flow control, loss detection).
 *
 * Stream mode frames, one per session message of the chosen type:
 *   DATA   [1][seq u64] bytes          chunk SEQ of stdin (seq from 0)
 *   ACK    [2][next u64][bytes u64][window u32][flags u8]
 *                                       all chunks < NEXT (BYTES bytes) were
 *                                       written to stdout; WINDOW = bytes the
 *                                       sender may have unacknowledged;
 *                                       flags bit 0: END seen and all written
 *   ACKREQ [3][next u64]                sender stalled; NEXT = chunks sent so far
 *   END    [4][total u64]               no chunk >= TOTAL will follow
 *   LOST   [5]                          the receiver detected a lost chunk
 * Integers are big-endian. Over stream transports the library delivers in
 * order; the same frames give flow control so that the session's I/O thread
 * never blocks on a slow stdout. Over datagram transports they also put
 * reordered chunks back in order and turn a chunk lost for good into
 * "data lost in transit" instead of a silently damaged stream.
 * Over datagram transports the sender keeps the unacknowledged frames (at
 * most one window) and, when no ACK progress came for STALL_MS, sends the
 * first RESEND_BURST of them again; the receiver ignores copies it has.
 * A congestion window (slow start, then additive increase; halved at each
 * stall) keeps a fast sender from flooding a slower path.
 *
 * Control channel (CLI_CTL_CHANNEL, both modes): HELLO (cli.h), and
 *   DONE   [0x11][sent u64][written u64] both directions ended here: SENT
 *                                       chunks (lines) sent and confirmed,
 *                                       WRITTEN of the peer's written out
 *   LEND   [0x12][count u64]            --lines: COUNT lines sent, no more
 *   LACK   [0x13][count u64]            --lines: the peer's LEND seen, COUNT
 *                                       of its lines written to stdout
 * Each direction ends on its own (half-close): END (LEND) when stdin ends,
 * confirmed by the final ACK (LACK); a side whose two directions ended sends
 * DONE (repeated), and closes the session once it has the peer's DONE. */
#ifndef SIO_CLI_RELAY_H
#define SIO_CLI_RELAY_H

#include <pthread.h>

#include "cli.h"

enum { F_DATA = 1, F_ACK = 2, F_ACKREQ = 3, F_END = 4, F_LOST = 5 };
#define F_DATA_HDR        9
#define F_ACK_LEN         22
#define F_ACK_FINAL       1 /* ACK flags: the END was seen and everything written */
#define CTL_REPEAT_MS     300  /* END, LEND, DONE, HELLO repeated this often */
#define HELLO_WAIT_MS     5000 /* no HELLO from the peer this long: not a sio peer */
#define LINES_GRACE_MS    1000 /* --lines over datagrams: lines still in flight after LEND */
#define RX_SLOTS          4096  /* chunks the sender may have in flight */
#define TX_INITIAL_WINDOW 65536 /* bytes before the receiver's first ACK */
#define GAP_TIMEOUT_MS    5000  /* a gap unfilled this long is a loss */
#define STALL_MS          300   /* window full this long: ask for an ACK */
#define LINES_QUEUE_MAX   (8u << 20)
#define RESEND_BURST      32
#define CWND_MIN          (16u << 10)
#define CWND_INITIAL      (256u << 10)
#define ACK_DELAY_MS      100 /* written data is acknowledged at least this often */

struct chunk {
	struct chunk *next;
	size_t len;
	uint64_t seq_after; /* stream mode: chunks written once this one is */
	uint8_t data[];
};

struct relay {
	struct cli_opts *o;
	sio_session *s;
	uint32_t type;
	int datagram;
	int wake[2]; /* anything -> main loop */
	volatile sig_atomic_t *sig;

	pthread_mutex_t mu;
	pthread_cond_t cond; /* queue, acks, writer progress */

	/* session events (under mu) */
	int err;       /* most relevant error reported by the session */
	int saw_auth;  /* a key exchange from a wrong identity was refused */
	int closing;   /* state reached CLOSING or CLOSED */
	int connected; /* the first key exchange succeeded */

	/* mode announcement (under mu) */
	struct cli_mode mode, peer_mode;
	int peer_hello;    /* the peer's HELLO arrived */
	int peer_saw_ours; /* a HELLO of the peer said it has ours */
	int hello_reply;   /* answer a HELLO without SEEN at once */
	int mismatch;      /* modes that cannot work together */
	int early_data;    /* data before the peer's HELLO: not a sio peer */

	/* half-close (under mu) */
	int tx_final;        /* our END (LEND) was confirmed by the peer */
	int tx_end_sent;     /* our END (LEND) went out */
	int peer_done;       /* the peer's DONE arrived */
	uint64_t peer_done_written; /* what its DONE says it wrote of ours */
	/* --lines */
	uint64_t tx_lines;   /* lines sent */
	int rx_have_lend;    /* the peer's LEND arrived */
	uint64_t rx_lend;    /* lines it sent */
	uint64_t rx_lines, rx_lines_written;
	int64_t rx_lines_progress_ms; /* last line received after LEND */
	int rx_lines_final;  /* our LACK is final (everything that will come came) */
	int tx_have_lack;
	uint64_t tx_lack;    /* lines of ours the peer wrote */

	/* output queue and writer thread (under mu) */
	pthread_t writer;
	int writer_started, writer_stop;
	struct chunk *qhead, *qtail;
	size_t qbytes;
	int out_err; /* errno of a failed stdout write */
	uint64_t out_bytes, out_msgs;

	/* stream mode, receiving side (under mu) */
	uint32_t rx_window;
	uint64_t rx_next; /* next chunk expected */
	struct chunk *slot[RX_SLOTS];
	size_t rx_pending, rx_pending_bytes;
	uint64_t rx_peer_next; /* chunks the peer said it sent */
	int rx_have_end;
	uint64_t rx_end;
	uint64_t rx_written, rx_written_bytes; /* chunks/bytes written to stdout */
	uint64_t rx_acked_bytes;
	int rx_final_acked;
	int64_t gap_since; /* ms; 0 = no gap */
	int lost;          /* a chunk was lost (or the peer broke the window) */
	int peer_lost;     /* the peer reported a loss */

	/* stream mode, sending side (under mu) */
	uint64_t tx_next, tx_bytes;
	uint64_t tx_acked, tx_acked_bytes;
	uint64_t tx_window;
	int64_t tx_last_ack_ms;
	uint64_t tx_cwnd, tx_ssthresh;   /* datagram: congestion window (AIMD), bytes */
	struct chunk *tx_slot[RX_SLOTS]; /* datagram: unacknowledged DATA frames, for resending */
	int64_t rx_last_ack_ms;          /* when we last sent an ACK */
	uint64_t in_bytes, in_msgs;      /* stdin data sent */
};

void relay_wake(struct relay *r);
/* Installs the message handler for the relay's type. */
int relay_data_start(struct relay *r);
/* Stops the writer after it wrote everything queued; joins it. */
void relay_data_finish(struct relay *r);
/* Frees what the data path holds. */
void relay_data_free(struct relay *r);
/* Stream mode: sends a frame and waits until it left, or the session
 * closed (main thread or writer; never from a session handler). */
int relay_send_frame(struct relay *r, const uint8_t *f, size_t len);
void relay_put_u64(uint8_t *p, uint64_t v);
/* Stream mode: ACK frame of what was written so far (call with mu held). */
size_t relay_ack_frame(struct relay *r, uint8_t f[F_ACK_LEN]);
/* Sends a frame on the control channel. */
int relay_send_ctl(struct relay *r, const uint8_t *f, size_t len);
/* Sends our HELLO (SEEN set once we have the peer's; IN_HANDLER: from a
 * session handler, where it is only queued). */
int relay_send_hello(struct relay *r, int in_handler);
/* Is our receiving direction complete (the peer's end seen, all written)? (mu held) */
int relay_rx_complete(const struct relay *r);

#endif
