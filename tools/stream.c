/* The receiving data path of `sio listen/connect`: the session message
 * handler (on the library's I/O thread), the output queue, and the writer
 * thread that empties it into stdout. See relay.h for the stream-mode frames.
 * The handler never blocks in stream mode (the flow-control window bounds the
 * queue); in --lines mode it waits for room in a bounded queue. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "relay.h"

void relay_put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static uint64_t get_u64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

void relay_wake(struct relay *r)
{
	char c = 1;
	ssize_t n = write(r->wake[1], &c, 1); /* non-blocking; a full pipe already wakes */
	(void)n;
}

/* Sends one message and waits until it left. Not sio_write_message: when
 * the transport fails under it, that call can wait forever for a packet
 * the dead session never completes; here the wait gives up once the
 * session is closed. */
static int send_wait(struct relay *r, uint32_t type, const uint8_t *f, size_t len)
{
	int err = 0;
	sio_send_info *si = sio_write_message_async(r->s, type, f, len, NULL, NULL, &err);
	if (!si)
		return err ? err : SIO_ENOMEM;
	int rc = sio_send_info_send_now_and_wait(si, 200);
	while (rc == SIO_ETIMEDOUT && sio_session_state(r->s) != SIO_STATE_CLOSED)
		rc = sio_send_info_wait(si, 200);
	if (rc == SIO_ETIMEDOUT)
		rc = SIO_ECLOSED;
	sio_send_info_release(si);
	return rc;
}

int relay_send_frame(struct relay *r, const uint8_t *f, size_t len)
{
	return send_wait(r, r->type, f, len);
}

size_t relay_ack_frame(struct relay *r, uint8_t f[F_ACK_LEN])
{
	f[0] = F_ACK;
	relay_put_u64(f + 1, r->rx_written);
	relay_put_u64(f + 9, r->rx_written_bytes);
	f[17] = (uint8_t)(r->rx_window >> 24);
	f[18] = (uint8_t)(r->rx_window >> 16);
	f[19] = (uint8_t)(r->rx_window >> 8);
	f[20] = (uint8_t)r->rx_window;
	f[21] = 0;
	r->rx_acked_bytes = r->rx_written_bytes;
	r->rx_last_ack_ms = cli_now_ms();
	if (r->rx_have_end && r->rx_written >= r->rx_end) {
		r->rx_final_acked = 1;
		f[21] = F_ACK_FINAL;
	}
	return F_ACK_LEN;
}

int relay_send_ctl(struct relay *r, const uint8_t *f, size_t len)
{
	return send_wait(r, CLI_CTL_CHANNEL, f, len);
}

int relay_send_hello(struct relay *r, int in_handler)
{
	uint8_t f[CLI_HELLO_LEN];
	pthread_mutex_lock(&r->mu);
	struct cli_mode m = r->mode;
	if (r->peer_hello)
		m.flags |= CLI_HF_SEEN;
	if (r->peer_hello && r->peer_saw_ours)
		m.flags |= CLI_HF_READY;
	pthread_mutex_unlock(&r->mu);
	cli_hello_encode(&m, f);
	if (in_handler) /* queued, never waits there */
		return sio_write_message(r->s, CLI_CTL_CHANNEL, f, sizeof f);
	return relay_send_ctl(r, f, sizeof f);
}

int relay_rx_complete(const struct relay *r)
{
	if (r->o->send_only || (r->peer_hello && (r->peer_mode.flags & CLI_HF_NO_SEND)))
		return 1; /* nothing comes this way */
	if (r->o->lines)
		return r->rx_lines_final && r->rx_lines_written >= r->rx_lines;
	return r->rx_have_end && r->rx_written >= r->rx_end;
}

/* Appends to the output queue (mu held). */
static void enqueue(struct relay *r, struct chunk *c)
{
	c->next = NULL;
	if (r->qtail)
		r->qtail->next = c;
	else
		r->qhead = c;
	r->qtail = c;
	r->qbytes += c->len;
	pthread_cond_broadcast(&r->cond);
}

static struct chunk *chunk_new(const uint8_t *data, size_t len, int newline)
{
	struct chunk *c = malloc(sizeof *c + len + 1);
	if (!c)
		return NULL;
	if (len)
		memcpy(c->data, data, len);
	if (newline)
		c->data[len++] = '\n';
	c->len = len;
	c->seq_after = 0;
	return c;
}

/* Frees a received chunk: its bytes are the peer's decrypted data, wiped
 * first (written to stdout or dropped, they are not needed any more). */
static void chunk_free(struct chunk *c)
{
	if (c) {
		explicit_bzero(c->data, c->len);
		free(c);
	}
}

static void mark_lost(struct relay *r)
{
	if (!r->lost) {
		r->lost = 1;
		relay_wake(r);
	}
}

/* Is some chunk known to be missing? (mu held) */
static int gap_open(const struct relay *r)
{
	return r->rx_pending > 0 || r->rx_next < r->rx_peer_next ||
	       (r->rx_have_end && r->rx_next < r->rx_end);
}

static void on_data(struct relay *r, uint64_t seq, const uint8_t *d, size_t len)
{
	if (seq < r->rx_next)
		return; /* the library drops replays; a stale copy changes nothing */
	if (r->rx_have_end && seq >= r->rx_end) {
		mark_lost(r); /* data past the announced end: not a stream we can trust */
		return;
	}
	if (seq - r->rx_next >= RX_SLOTS ||
	    r->qbytes + r->rx_pending_bytes + len > 2 * (uint64_t)r->rx_window + 65536 * 2) {
		mark_lost(r); /* the peer ignored the flow-control window */
		return;
	}
	struct chunk **slot = &r->slot[seq % RX_SLOTS];
	if (*slot)
		return;
	struct chunk *c = chunk_new(d, len, 0);
	if (!c) {
		mark_lost(r);
		return;
	}
	c->seq_after = seq + 1;
	if (seq != r->rx_next) {
		*slot = c;
		r->rx_pending++;
		r->rx_pending_bytes += len;
		if (!r->gap_since)
			r->gap_since = cli_now_ms();
		return;
	}
	enqueue(r, c);
	r->rx_next++;
	while ((c = r->slot[r->rx_next % RX_SLOTS]) != NULL) {
		r->slot[r->rx_next % RX_SLOTS] = NULL;
		r->rx_pending--;
		r->rx_pending_bytes -= c->len;
		enqueue(r, c);
		r->rx_next++;
	}
	/* progress restarts the gap clock */
	r->gap_since = gap_open(r) ? cli_now_ms() : 0;
}

/* The peer announced how many chunks it sent (ACKREQ, END). */
static void on_announce(struct relay *r, uint64_t next)
{
	if (next > r->rx_peer_next)
		r->rx_peer_next = next;
	if (gap_open(r) && !r->gap_since)
		r->gap_since = cli_now_ms();
}

static void on_message(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	struct relay *r = ctx;
	(void)s;
	(void)type;
	pthread_mutex_lock(&r->mu);
	if (!r->peer_hello || r->mismatch || (r->o->send_only && r->o->lines)) {
		/* a sio peer sends data only once it has our HELLO and we have
		 * its own (and no lines to a --send-only side) */
		if (!r->peer_hello && !r->early_data) {
			r->early_data = 1;
			relay_wake(r);
		}
		pthread_mutex_unlock(&r->mu);
		return;
	}
	if (r->o->lines) {
		r->rx_lines++;
		if (r->rx_have_lend)
			r->rx_lines_progress_ms = cli_now_ms();
		while (r->qbytes > LINES_QUEUE_MAX && !r->out_err && !r->writer_stop)
			pthread_cond_wait(&r->cond, &r->mu);
		struct chunk *c = r->out_err ? NULL : chunk_new(d, len, 1);
		if (c)
			enqueue(r, c);
		else if (!r->out_err)
			r->out_err = ENOMEM, relay_wake(r);
		pthread_mutex_unlock(&r->mu);
		return;
	}
	uint8_t ack[F_ACK_LEN];
	size_t acklen = 0;
	int wake = 0;
	switch (len ? d[0] : 0) {
	case F_DATA:
		if (len < F_DATA_HDR)
			goto bad;
		on_data(r, get_u64(d + 1), d + F_DATA_HDR, len - F_DATA_HDR);
		break;
	case F_ACK:
		if (len != F_ACK_LEN)
			goto bad;
		{
			uint64_t next = get_u64(d + 1), bytes = get_u64(d + 9);
			uint32_t win = (uint32_t)d[17] << 24 | (uint32_t)d[18] << 16 |
			               (uint32_t)d[19] << 8 | d[20];
			if (next > r->tx_next || bytes > r->tx_bytes)
				goto bad;
			if (next >= r->tx_acked) {
				for (uint64_t q = r->tx_acked; q < next; q++) {
					free(r->tx_slot[q % RX_SLOTS]);
					r->tx_slot[q % RX_SLOTS] = NULL;
				}
				uint64_t gained = bytes - r->tx_acked_bytes;
				r->tx_acked = next;
				r->tx_acked_bytes = bytes;
				if (r->tx_cwnd < r->tx_ssthresh)
					r->tx_cwnd += gained; /* slow start */
				else if (r->tx_cwnd)
					r->tx_cwnd += gained * 1400 / r->tx_cwnd + 1;
			}
			if (win >= 4096)
				r->tx_window = win;
			if (d[21] & F_ACK_FINAL)
				r->tx_final = 1;
			r->tx_last_ack_ms = cli_now_ms();
			pthread_cond_broadcast(&r->cond);
			wake = 1;
		}
		break;
	case F_ACKREQ:
	case F_END:
		if (len != 9)
			goto bad;
		if (d[0] == F_END) {
			uint64_t total = get_u64(d + 1);
			if (r->rx_have_end && total != r->rx_end)
				goto bad;
			if (total < r->rx_next)
				goto bad;
			r->rx_have_end = 1;
			r->rx_end = total;
		}
		on_announce(r, get_u64(d + 1));
		acklen = relay_ack_frame(r, ack);
		wake = 1;
		break;
	case F_LOST:
		r->peer_lost = 1;
		wake = 1;
		break;
	default:
		goto bad;
	}
	pthread_mutex_unlock(&r->mu);
	if (acklen) /* in a handler: queued, never waits */
		sio_write_message(r->s, r->type, ack, acklen);
	if (wake)
		relay_wake(r);
	return;
bad:
	/* not our framing: both ends must run sio in the same mode */
	mark_lost(r);
	pthread_mutex_unlock(&r->mu);
}

/* Messages of the control channel: HELLO, DONE, LEND, LACK (relay.h). */
static void on_ctl(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	struct relay *r = ctx;
	(void)s;
	(void)type;
	int reply = 0;
	pthread_mutex_lock(&r->mu);
	if (len && d[0] == CLI_HELLO) {
		struct cli_mode m;
		if (cli_hello_decode(d, len, &m) < 0) {
			memset(&m, 0, sizeof m);
			m.version = len > 1 ? d[1] : 0;
			r->mismatch = 1;
		} else if (cli_mode_check(&r->mode, &m) < 0) {
			r->mismatch = 1;
		}
		if (!r->peer_hello || r->mismatch)
			r->peer_mode = m;
		r->peer_hello = 1;
		if (m.flags & CLI_HF_SEEN)
			r->peer_saw_ours = 1;
		/* a side still waiting (no READY) gets an answer saying what we
		 * have; ready sides do not answer each other */
		reply = !(m.flags & CLI_HF_READY);
	} else if (!r->peer_hello || r->mismatch) {
		/* control before the peer's HELLO: not ours */
	} else if (len == 17 && d[0] == C_DONE) {
		uint64_t sent = get_u64(d + 1), written = get_u64(d + 9);
		r->peer_done = 1;
		r->peer_done_written = written;
		/* DONE also stands for the peer's END and its final ACK */
		if (r->o->lines) {
			if (!r->rx_have_lend) {
				r->rx_have_lend = 1;
				r->rx_lend = sent;
			}
			if (!r->tx_have_lack) {
				r->tx_have_lack = 1;
				r->tx_lack = written;
			}
		} else if (!r->rx_have_end && sent >= r->rx_next) {
			r->rx_have_end = 1;
			r->rx_end = sent;
			on_announce(r, sent);
		}
		r->tx_final = 1;
	} else if (len == 9 && d[0] == C_LEND && r->o->lines) {
		if (!r->rx_have_lend) {
			r->rx_have_lend = 1;
			r->rx_lend = get_u64(d + 1);
			r->rx_lines_progress_ms = cli_now_ms();
		}
		r->rx_final_acked = 0; /* answer it (again) */
	} else if (len == 9 && d[0] == C_LACK && r->o->lines) {
		if (!r->tx_have_lack) {
			r->tx_have_lack = 1;
			r->tx_lack = get_u64(d + 1);
		}
		r->tx_final = 1;
	}
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->mu);
	if (reply)
		relay_send_hello(r, 1);
	relay_wake(r);
}

static void *writer_main(void *arg)
{
	struct relay *r = arg;
	pthread_mutex_lock(&r->mu);
	for (;;) {
		while (!r->qhead && !r->writer_stop)
			pthread_cond_wait(&r->cond, &r->mu);
		struct chunk *c = r->qhead;
		if (!c)
			break;
		r->qhead = c->next;
		if (!r->qhead)
			r->qtail = NULL;
		int skip = r->out_err != 0;
		pthread_mutex_unlock(&r->mu);
		int e = skip ? 0 : cli_write_all(STDOUT_FILENO, c->data, c->len);
		pthread_mutex_lock(&r->mu);
		r->qbytes -= c->len;
		if (e && !r->out_err) {
			r->out_err = e;
			relay_wake(r);
		}
		if (!r->out_err) {
			if (r->o->lines)
				r->rx_lines_written++;
			r->out_msgs++;
			r->out_bytes += c->len - (r->o->lines ? 1 : 0);
		}
		size_t acklen = 0;
		uint8_t ack[F_ACK_LEN];
		if (!r->o->lines) {
			r->rx_written = c->seq_after;
			r->rx_written_bytes += c->len;
			int final =
			    r->rx_have_end && r->rx_written >= r->rx_end && !r->rx_final_acked;
			if (!r->out_err &&
			    (final || r->rx_written_bytes - r->rx_acked_bytes >= r->rx_window / 4))
				acklen = relay_ack_frame(r, ack);
			if (final)
				relay_wake(r);
		}
		chunk_free(c);
		pthread_cond_broadcast(&r->cond);
		if (acklen) {
			pthread_mutex_unlock(&r->mu);
			relay_send_frame(r, ack, acklen);
			pthread_mutex_lock(&r->mu);
		}
	}
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

int relay_data_start(struct relay *r)
{
	int rc = sio_set_handler(r->s, r->type, on_message, NULL, r);
	if (rc >= 0)
		rc = sio_set_handler(r->s, CLI_CTL_CHANNEL, on_ctl, NULL, r);
	if (rc < 0)
		return rc;
	if (pthread_create(&r->writer, NULL, writer_main, r) != 0)
		return SIO_ENOMEM;
	r->writer_started = 1;
	return 0;
}

void relay_data_finish(struct relay *r)
{
	if (!r->writer_started)
		return;
	pthread_mutex_lock(&r->mu);
	r->writer_stop = 1;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->mu);
	pthread_join(r->writer, NULL);
	r->writer_started = 0;
}

void relay_data_free(struct relay *r)
{
	for (struct chunk *c = r->qhead, *n; c; c = n) {
		n = c->next;
		chunk_free(c);
	}
	r->qhead = r->qtail = NULL;
	for (size_t i = 0; i < RX_SLOTS; i++) {
		chunk_free(r->slot[i]);
		r->slot[i] = NULL;
		free(r->tx_slot[i]);
		r->tx_slot[i] = NULL;
	}
}
