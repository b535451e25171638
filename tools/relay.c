/* `sio listen` / `sio connect`: open the transport, run one session, relay
 * stdin -> session -> stdout until either side ends, map the outcome to the
 * exit codes of the interface. Built on include/secureio.h only. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "relay.h"

#define CLOSE_WAIT_MS     5000  /* graceful close: wait this long for the peer */
#define FINAL_FLUSH_MS    2000  /* closing: wait this long for stdout before the last ACK */
#define LINE_MAX_BYTES    (16u << 20)

static volatile sig_atomic_t g_sig;
static int g_wake_fd = -1;

static volatile sig_atomic_t g_sig_count;

/* The first SIGINT/SIGTERM asks for a graceful close; a third one (the
 * first may arrive twice: from `timeout` and to the process group) ends
 * the program at once. */
static void on_signal(int sig)
{
	if (++g_sig_count >= 3) {
		signal(sig, SIG_DFL);
		raise(sig);
		return;
	}
	if (!g_sig)
		g_sig = sig;
	if (g_wake_fd >= 0) {
		char c = 0;
		ssize_t n = write(g_wake_fd, &c, 1);
		(void)n;
	}
}

static void cb_error(sio_session *s, int err, const char *msg, void *ctx)
{
	struct relay *r = ctx;
	(void)s;
	(void)msg;
	pthread_mutex_lock(&r->mu);
	if (err == SIO_EAUTH || err == SIO_EREFUSED)
		r->saw_auth = 1;
	else if (err != SIO_EDECRYPT && !r->err)
		r->err = err; /* decrypt-failure runs are events, not the end */
	pthread_mutex_unlock(&r->mu);
	relay_wake(r);
}

static void cb_diag(sio_session *s, int level, const char *msg, void *ctx)
{
	struct relay *r = ctx;
	(void)s;
	cli_diag(r->o, level, msg);
}

static void cb_state(sio_session *s, sio_state old_state, sio_state new_state, void *ctx)
{
	struct relay *r = ctx;
	(void)s;
	(void)old_state;
	if (new_state == SIO_STATE_ESTABLISHED) {
		pthread_mutex_lock(&r->mu);
		r->connected = 1;
		pthread_mutex_unlock(&r->mu);
	}
	if (new_state >= SIO_STATE_CLOSING) {
		pthread_mutex_lock(&r->mu);
		r->closing = 1;
		pthread_cond_broadcast(&r->cond);
		pthread_mutex_unlock(&r->mu);
		relay_wake(r);
	}
}

static void cb_connect(sio_session *s, void *ctx)
{
	struct relay *r = ctx;
	(void)s;
	pthread_mutex_lock(&r->mu);
	r->connected = 1;
	pthread_mutex_unlock(&r->mu);
	relay_wake(r);
}

int cli_interrupted(void)
{
	return g_sig != 0;
}

static int session_connected(struct relay *r)
{
	pthread_mutex_lock(&r->mu);
	int c = r->connected;
	pthread_mutex_unlock(&r->mu);
	return c || sio_session_state(r->s) == SIO_STATE_ESTABLISHED;
}

static int cb_remote_identity(sio_session *s, const uint8_t pk[SIO_PUBLIC_KEY_BYTES], void *ctx)
{
	struct relay *r = ctx;
	(void)s;
	if (!r->o->quiet) {
		char line[SIO_PUBKEY_LINE_MAX];
		if (sio_public_key_line(pk, NULL, line, sizeof line) >= 0)
			fprintf(stderr,
			        "sio: remote identity not pinned (-r FILE pins it); it is:\n%s\n",
			        line);
	}
	return 0; /* without -r any identity is accepted */
}

int cli_read_psk(const char *path, uint8_t *buf, size_t cap, size_t *len)
{
	size_t n = 0;
	errno = 0;
	int rc = sio_psk_load(path, buf, cap - 1, &n);
	if (rc == SIO_EPERM) {
		struct stat st;
		unsigned mode = stat(path, &st) == 0 ? (unsigned)(st.st_mode & 07777) : 0;
		cli_err("%s: permissions %04o are too open: a pre-shared key file must not be "
		        "accessible by group or others (fix: chmod 600 %s)",
		        path, mode, path);
		return CLI_ERR;
	}
	if (rc == SIO_ENOTFILE) {
		struct stat st;
		cli_err("%s: %s", path,
		        stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file");
		return CLI_ERR;
	}
	if (rc < 0 && rc != SIO_ETOOBIG) {
		cli_err("%s: %s", path, errno ? strerror(errno) : sio_strerror(rc));
		return CLI_ERR;
	}
	if (rc == SIO_ETOOBIG || n < 16) {
		explicit_bzero(buf, cap);
		cli_err("%s: a pre-shared key file must hold 16 to %zu bytes (it holds %s%zu)",
		        path, cap - 1, rc ? "more than " : "", rc ? cap - 1 : n);
		return CLI_ERR;
	}
	*len = n;
	return 0;
}

/* What may have kept the peer out, for the error line. */
static const char *auth_hint(const struct relay *r)
{
	/* without a PSK of ours, key exchanges dropped before any identity
	 * check (no SIO_EAUTH event) are PSK-wrapped ones we cannot read */
	if (!r->o->psk_file && !r->saw_auth)
		return r->o->remote ? "its identity is not the key pinned with -r, or it uses a "
		                      "--psk-file we do not have"
		                    : "its key exchange could not be read: does the peer use a "
		                      "--psk-file we do not have?";
	if (r->o->remote && r->o->psk_file)
		return "wrong identity (not the key pinned with -r) or wrong PSK";
	if (r->o->remote)
		return "its identity is not the key pinned with -r";
	if (r->o->psk_file)
		return "wrong PSK";
	return "it failed the key exchange";
}

/* Outcome of a session that did not reach "established": exit code 3 with
 * one line saying why (1 only for local failures). */
static int report_no_session(struct relay *r, int err, double timeout_s)
{
	sio_stats st;
	memset(&st, 0, sizeof st);
	sio_session_stats(r->s, &st);
	pthread_mutex_lock(&r->mu);
	int auth = r->saw_auth || st.drop_kx > 0;
	if (!err)
		err = r->err;
	pthread_mutex_unlock(&r->mu);
	switch (err) {
	case SIO_EAUTH:
	case SIO_EREFUSED:
		cli_err("peer not authenticated: %s", auth_hint(r));
		return CLI_NOSESSION;
	case SIO_ETIMEDOUT:
	case SIO_ENOKEYX:
	case 0:
		if (auth)
			cli_err(
			    "peer not authenticated within %g s: its key exchange was refused (%s)",
			    timeout_s, auth_hint(r));
		else
			cli_err("no session established within %g s: no valid key exchange from "
			        "the peer "
			        "(%s)",
			        timeout_s,
			        r->o->psk_file
			            ? "wrong PSK, wrong identity, or no peer"
			            : "no peer, or it refused our identity or needs a PSK");
		return CLI_NOSESSION;
	case SIO_ETRUNCATED:
	case SIO_EPEERDEAD:
	case SIO_EIO:
	case SIO_ECLOSED:
		cli_err("no session established: the peer %s during the key exchange (%s)",
		        err == SIO_EIO ? "went away" : "closed the transport",
		        auth ? auth_hint(r) : "did it refuse our identity or PSK?");
		return CLI_NOSESSION;
	case SIO_EUNREACH:
		cli_err("no session established: nothing answers at the peer's address (port "
		        "unreachable: %s)",
		        auth ? auth_hint(r)
		             : "no peer listening, or it is gone: did it refuse our identity or PSK?");
		return CLI_NOSESSION;
	case SIO_EANSWERS:
	case SIO_ECLOCK:
	case SIO_EPROTO:
	case SIO_EDECRYPT:
		cli_err("no session established: %s", sio_strerror(err));
		return CLI_NOSESSION;
	default:
		cli_err("session failed: %s", sio_strerror(err));
		return CLI_ERR;
	}
}

/* Both directions ended and were confirmed: exit 0, unless --lines over a
 * datagram transport lost lines (counted from LEND/LACK). */
static int report_done(struct relay *r)
{
	pthread_mutex_lock(&r->mu);
	uint64_t rx_lost = 0, tx_lost = 0, sent = r->tx_lines, peer_sent = r->rx_lend;
	if (r->o->lines) {
		if (r->rx_have_lend && r->rx_lend > r->rx_lines_written)
			rx_lost = r->rx_lend - r->rx_lines_written;
		if (r->tx_have_lack && r->tx_lines > r->tx_lack)
			tx_lost = r->tx_lines - r->tx_lack;
	}
	int out_err = r->out_err;
	pthread_mutex_unlock(&r->mu);
	if (out_err) {
		cli_err("stdout: %s", strerror(out_err));
		return CLI_ERR;
	}
	if (tx_lost)
		cli_err("lines lost in transit: %llu of the %llu lines we sent never reached the peer",
		        (unsigned long long)tx_lost, (unsigned long long)sent);
	if (rx_lost)
		cli_err("lines lost in transit: %llu of the %llu lines the peer sent never arrived",
		        (unsigned long long)rx_lost, (unsigned long long)peer_sent);
	return tx_lost || rx_lost ? CLI_ERR : CLI_OK;
}

/* Message after the session ended by itself (peer close or failure). */
static int report_end(struct relay *r, int write_err)
{
	pthread_mutex_lock(&r->mu);
	int err = r->err ? r->err : write_err;
	int lost = r->lost || r->peer_lost;
	int peer_lost = r->peer_lost;
	int rx_complete = relay_rx_complete(r);
	int tx_final = r->tx_final, end_sent = r->tx_end_sent;
	int out_err = r->out_err;
	/* what we sent and the peer never confirmed it wrote (a confirmed
	 * byte is never counted: tx_acked_bytes only grows with its ACKs) */
	uint64_t unconfirmed = r->o->lines ? r->tx_lines : r->tx_bytes - r->tx_acked_bytes;
	pthread_mutex_unlock(&r->mu);
	if (out_err) {
		cli_err("stdout: %s", strerror(out_err));
		return CLI_ERR;
	}
	if (lost) {
		cli_err("data lost in transit%s", peer_lost ? " (reported by the peer)" : "");
		return CLI_ERR;
	}
	if (tx_final && rx_complete)
		return report_done(r); /* both directions ended: how it closed does not matter */
	char why[160];
	if (err == SIO_EPEERDEAD)
		snprintf(why, sizeof why, "the peer stopped answering (nothing heard for %g s: killed, "
		         "or the network is down)", r->o->dead_s);
	else if (err == SIO_EUNREACH)
		snprintf(why, sizeof why, "the peer stopped answering (port unreachable: nothing "
		         "listens at its address any more; killed or crashed?)");
	else if (err == SIO_ETRUNCATED)
		snprintf(why, sizeof why, "session truncated: the peer went away without closing "
		         "the session (killed or crashed?)");
	else if (err && err != SIO_ECLOSED)
		snprintf(why, sizeof why, "session failed: %s", sio_strerror(err));
	else
		snprintf(why, sizeof why, "the peer closed the session");
	char what[256] = "";
	if (!rx_complete)
		snprintf(what, sizeof what, "%s", r->o->lines
		         ? "; its lines may not all have arrived"
		         : "; stream incomplete (what was written is an exact prefix)");
	size_t n = strlen(what);
	if (!tx_final && unconfirmed && r->o->lines)
		snprintf(what + n, sizeof what - n, "; it did not confirm our %llu lines",
		         (unsigned long long)unconfirmed);
	else if (!tx_final && unconfirmed)
		snprintf(what + n, sizeof what - n,
		         "; data lost: it did not confirm %llu bytes of our stdin",
		         (unsigned long long)unconfirmed);
	else if (!tx_final && end_sent)
		snprintf(what + n, sizeof what - n, "; it did not confirm the end of our stream");
	cli_err("%s%s", why, what);
	return CLI_ERR;
}

static void print_stats(struct relay *r, int64_t t0, int64_t t_est, int64_t t_end)
{
	sio_stats st;
	memset(&st, 0, sizeof st);
	sio_session_stats(r->s, &st);
	pthread_mutex_lock(&r->mu);
	uint64_t in_b = r->in_bytes, in_m = r->in_msgs, out_b = r->out_bytes, out_m = r->out_msgs;
	pthread_mutex_unlock(&r->mu);
	double el = (double)(t_end - (t_est ? t_est : t0)) / 1000.0;
	double hs = t_est ? (double)(t_est - t0) / 1000.0 : 0;
	fprintf(
	    stderr,
	    "sio: stats: sent %llu bytes in %llu messages, received %llu bytes in %llu messages\n",
	    (unsigned long long)in_b, (unsigned long long)in_m, (unsigned long long)out_b,
	    (unsigned long long)out_m);
	fprintf(stderr,
	        "sio: stats: packets: %llu out (%llu bytes on the wire), %llu in (%llu bytes)\n",
	        (unsigned long long)st.packets_sent, (unsigned long long)st.wire_bytes_sent,
	        (unsigned long long)st.packets_received,
	        (unsigned long long)st.wire_bytes_received);
	fprintf(
	    stderr,
	    "sio: stats: packets dropped: malformed %llu, decrypt %llu, replay %llu, too old %llu, "
	    "unknown key %llu, key exchange %llu, unknown type %llu, fragments %llu\n",
	    (unsigned long long)st.drop_malformed, (unsigned long long)st.drop_decrypt,
	    (unsigned long long)st.drop_replay, (unsigned long long)st.drop_too_old,
	    (unsigned long long)st.drop_unknown_key, (unsigned long long)st.drop_kx,
	    (unsigned long long)st.drop_unknown_type, (unsigned long long)st.drop_fragments);
	fprintf(stderr,
	        "sio: stats: key renewals %llu, packet size %u, elapsed %.3f s (set-up %.3f s), "
	        "throughput %.2f MB/s\n",
	        (unsigned long long)st.rekeys, st.packet_size, el, hs,
	        el > 0 ? (double)(in_b + out_b) / el / 1e6 : 0.0);
}

static void drain_fd(int fd)
{
	char b[64];
	while (read(fd, b, sizeof b) > 0)
		;
}

/* Sends one stdin chunk in stream mode. */
static int send_chunk(struct relay *r, uint8_t *frame, size_t n)
{
	struct chunk *keep = NULL;
	if (r->datagram) {
		keep = malloc(sizeof *keep + n + F_DATA_HDR);
		if (!keep)
			return SIO_ENOMEM;
	}
	pthread_mutex_lock(&r->mu);
	uint64_t seq = r->tx_next++;
	r->tx_bytes += n;
	r->in_bytes += n;
	r->in_msgs++;
	frame[0] = F_DATA;
	relay_put_u64(frame + 1, seq);
	if (keep) {
		keep->len = n + F_DATA_HDR;
		memcpy(keep->data, frame, keep->len);
		free(r->tx_slot[seq % RX_SLOTS]);
		r->tx_slot[seq % RX_SLOTS] = keep;
	}
	pthread_mutex_unlock(&r->mu);
	if (!r->datagram)
		return relay_send_frame(r, frame, n + F_DATA_HDR);
	/* datagrams: queue without waiting so that the library batches packets;
	 * a loss is repaired from tx_slot, a failure shows in the session state */
	int err = 0;
	sio_send_info *si =
	    sio_write_message_async(r->s, r->type, frame, n + F_DATA_HDR, NULL, NULL, &err);
	if (!si)
		return err ? err : SIO_ENOMEM;
	sio_send_info_release(si);
	return 0;
}

/* Datagram transports: sends the first unacknowledged frames again. */
static int resend_unacked(struct relay *r)
{
	uint8_t *copy[RESEND_BURST];
	size_t len[RESEND_BURST], n = 0;
	pthread_mutex_lock(&r->mu);
	/* a stall means loss: halve the congestion window */
	r->tx_ssthresh = r->tx_cwnd / 2 > CWND_MIN ? r->tx_cwnd / 2 : CWND_MIN;
	r->tx_cwnd = r->tx_ssthresh;
	for (uint64_t q = r->tx_acked; q < r->tx_next && n < RESEND_BURST; q++) {
		struct chunk *c = r->tx_slot[q % RX_SLOTS];
		if (!c || !(copy[n] = malloc(c->len)))
			break;
		memcpy(copy[n], c->data, c->len);
		len[n++] = c->len;
	}
	pthread_mutex_unlock(&r->mu);
	int rc = 0;
	for (size_t i = 0; i < n; i++) {
		if (!rc)
			rc = relay_send_frame(r, copy[i], len[i]);
		free(copy[i]);
	}
	return rc;
}

static int send_u64_frame(struct relay *r, uint8_t kind, uint64_t v)
{
	uint8_t f[9];
	f[0] = kind;
	relay_put_u64(f + 1, v);
	return relay_send_frame(r, f, sizeof f);
}

/* Lines mode: sends every complete line of BUF[0..*LEN) (all of it at EOF). */
static int send_lines(struct relay *r, uint8_t *buf, size_t *len, int eof)
{
	size_t start = 0;
	for (size_t i = 0; i < *len; i++) {
		if (buf[i] != '\n')
			continue;
		int rc = sio_write_message(r->s, r->type, buf + start, i - start);
		if (rc < 0)
			return rc;
		pthread_mutex_lock(&r->mu);
		r->tx_lines++;
		r->in_msgs++;
		r->in_bytes += i - start;
		pthread_mutex_unlock(&r->mu);
		start = i + 1;
	}
	if (eof && start < *len) {
		int rc = sio_write_message(r->s, r->type, buf + start, *len - start);
		if (rc < 0)
			return rc;
		pthread_mutex_lock(&r->mu);
		r->tx_lines++;
		r->in_msgs++;
		r->in_bytes += *len - start;
		pthread_mutex_unlock(&r->mu);
		start = *len;
	}
	memmove(buf, buf + start, *len - start);
	*len -= start;
	return 0;
}

/* Stream mode, before closing the session ourselves: let the writer put
 * what is queued on stdout (up to FINAL_FLUSH_MS), then acknowledge all of
 * it. Without this ACK a peer still sending learnt nothing of the last
 * chunks we wrote (ACKs go out every ACK_DELAY_MS or quarter window) and
 * reported them as lost although they reached our stdout. */
static void final_ack(struct relay *r)
{
	if (r->o->lines)
		return;
	int64_t until = cli_now_ms() + FINAL_FLUSH_MS;
	pthread_mutex_lock(&r->mu);
	while (r->qbytes && !r->out_err && r->writer_started && cli_now_ms() < until) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 20 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&r->cond, &r->mu, &ts);
	}
	uint8_t ack[F_ACK_LEN];
	size_t n = 0;
	if (!r->out_err && r->rx_written_bytes > r->rx_acked_bytes)
		n = relay_ack_frame(r, ack);
	pthread_mutex_unlock(&r->mu);
	if (n)
		relay_send_frame(r, ack, n);
}

/* --progress: bytes each way, rate and elapsed time on stderr. On a
 * terminal one line rewritten in place, elsewhere one line per report;
 * FINAL ends the line. */
static void progress(struct relay *r, int64_t t0, int final)
{
	static int tty = -1;
	if (tty < 0)
		tty = isatty(STDERR_FILENO);
	pthread_mutex_lock(&r->mu);
	uint64_t in = r->in_bytes, out = r->out_bytes;
	pthread_mutex_unlock(&r->mu);
	double el = (double)(cli_now_ms() - t0) / 1000.0;
	fprintf(stderr, "%ssio: progress: sent %.1f MB, received %.1f MB, %.2f MB/s, %02d:%02d%s",
	        tty ? "\r" : "", (double)in / 1e6, (double)out / 1e6,
	        el > 0 ? (double)(in + out) / el / 1e6 : 0.0, (int)el / 60, (int)el % 60,
	        tty && !final ? "" : "\n");
	fflush(stderr);
}

/* Mode mismatch: says what both sides run, makes sure the peer has our
 * HELLO (it says the same on its side), closes. Exit code 2. */
static int report_mismatch(struct relay *r, const char *fmt)
{
	pthread_mutex_lock(&r->mu);
	struct cli_mode ours = r->mode, theirs = r->peer_mode;
	pthread_mutex_unlock(&r->mu);
	char a[128], b[128];
	cli_mode_text(&ours, a, sizeof a);
	if (theirs.version > CLI_HELLO_VERSION && theirs.mode == 0)
		snprintf(b, sizeof b, "a newer sio (announcement version %u)", theirs.version);
	else
		cli_mode_text(&theirs, b, sizeof b);
	cli_err(fmt, a, b);
	relay_send_hello(r, 0);
	sio_close_and_wait(r->s, 1000);
	return CLI_USAGE;
}

/* Mode announcement (docs/SIO.md): our HELLO, repeated until the peer has
 * it, and the peer's. Returns 0 when both have each other's and they match,
 * -1 if the session ended meanwhile, or an exit code (reported). */
static int hello_phase(struct relay *r)
{
	int64_t t0 = cli_now_ms(), last = t0;
	relay_send_hello(r, 0);
	for (;;) {
		int64_t now = cli_now_ms();
		pthread_mutex_lock(&r->mu);
		int mismatch = r->mismatch, early = r->early_data, closing = r->closing;
		int ready = r->peer_hello && r->peer_saw_ours;
		pthread_mutex_unlock(&r->mu);
		if (mismatch)
			return report_mismatch(r, "mode mismatch: we run %s, the peer runs %s");
		if (early) {
			cli_err("mode mismatch: the peer sent data without announcing its mode (an "
			        "older sio, or another program?)");
			sio_close_and_wait(r->s, 1000);
			return CLI_USAGE;
		}
		if (ready)
			return 0;
		if (closing)
			return -1;
		if (g_sig) {
			cli_err("interrupted by %s: session closed", g_sig == SIGINT ? "SIGINT" : "SIGTERM");
			sio_close_and_wait(r->s, CLOSE_WAIT_MS);
			return CLI_ERR;
		}
		if (now - t0 > HELLO_WAIT_MS) {
			cli_err("mode check failed: the peer announced no mode within %d s (an older "
			        "sio, or another program?)", HELLO_WAIT_MS / 1000);
			sio_close_and_wait(r->s, 1000);
			return CLI_USAGE;
		}
		if (now - last >= CTL_REPEAT_MS) {
			last = now;
			relay_send_hello(r, 0);
		}
		struct pollfd p = {.fd = r->wake[0], .events = POLLIN};
		if (poll(&p, 1, 50) > 0)
			drain_fd(r->wake[0]);
	}
}

static int send_ctl_u64(struct relay *r, uint8_t kind, uint64_t v)
{
	uint8_t f[9];
	f[0] = kind;
	relay_put_u64(f + 1, v);
	return relay_send_ctl(r, f, sizeof f);
}

/* The relay loop once the session is established. Each direction ends on
 * its own (half-close): stdin's end sends END (LEND), the peer's final ACK
 * (LACK) confirms it; the session closes once both directions ended and
 * both sides said DONE. Returns the exit code. */
static int relay_loop(struct relay *r, size_t chunk)
{
	const int lines = r->o->lines;
	int rc = hello_phase(r);
	if (rc > 0)
		return rc;
	if (rc == 0)
		rc = -1;
	size_t cap = lines ? 65536 : chunk + F_DATA_HDR;
	size_t used = 0;
	uint8_t *buf = malloc(cap);
	if (!buf) {
		cli_err("out of memory");
		return CLI_ERR;
	}
	int eof = 0, end_sent = 0, interrupted = 0, write_err = 0, done_sent = 0;
	pthread_mutex_lock(&r->mu);
	if (r->o->recv_only || (r->peer_mode.flags & CLI_HF_NO_RECV)) {
		/* nothing to send, or nobody to read it: this direction is over */
		eof = end_sent = 1;
		r->tx_final = 1;
	}
	size_t acklen = 0;
	uint8_t ack[F_ACK_LEN];
	if (!lines && !r->o->send_only)
		acklen = relay_ack_frame(r, ack); /* announce our receive window at once */
	pthread_mutex_unlock(&r->mu);
	if (acklen)
		relay_send_frame(r, ack, acklen);
	int64_t last_req = cli_now_ms(), last_done = 0, t_start = last_req, last_progress = last_req;
	while (rc < 0) {
		int64_t now = cli_now_ms();
		pthread_mutex_lock(&r->mu);
		int closing = r->closing, lost = r->lost, peer_lost = r->peer_lost;
		int out_err = r->out_err;
		int gap_dead = r->gap_since && now - r->gap_since > GAP_TIMEOUT_MS;
		uint64_t win = r->tx_window;
		if (r->datagram && r->tx_cwnd < win)
			win = r->tx_cwnd;
		int room = lines || (r->tx_bytes - r->tx_acked_bytes < win &&
		                     r->tx_next - r->tx_acked < RX_SLOTS);
		int all_acked = r->tx_acked >= r->tx_next;
		acklen = 0;
		if (!lines && r->rx_written_bytes > r->rx_acked_bytes &&
		    now - r->rx_last_ack_ms >= ACK_DELAY_MS)
			acklen = relay_ack_frame(r, ack);
		int lack = 0;
		uint64_t lack_v = 0;
		if (lines && r->rx_have_lend && !r->rx_lines_final &&
		    (r->rx_lines >= r->rx_lend ||
		     (r->datagram && now - r->rx_lines_progress_ms > LINES_GRACE_MS)))
			r->rx_lines_final = 1; /* everything that will come came */
		if (lines && r->rx_lines_final && r->rx_lines_written >= r->rx_lines &&
		    !r->rx_final_acked) {
			lack = 1;
			lack_v = r->rx_lines_written;
			r->rx_final_acked = 1;
		}
		int tx_final = r->tx_final, peer_done = r->peer_done;
		int rx_done = relay_rx_complete(r);
		uint64_t sent_total = lines ? r->tx_lines : r->tx_next;
		uint64_t written_total = lines ? r->rx_lines_written : r->rx_written;
		int64_t last_ack = r->tx_last_ack_ms;
		uint64_t tx_next = r->tx_next;
		pthread_mutex_unlock(&r->mu);
		if (acklen)
			relay_send_frame(r, ack, acklen);
		if (lack)
			send_ctl_u64(r, C_LACK, lack_v);
		int stalled =
		    !all_acked && now - (last_ack > last_req ? last_ack : last_req) > STALL_MS;
		if (r->o->progress && now - last_progress >= 1000) {
			last_progress = now;
			progress(r, t_start, 0);
		}

		if (out_err) {
			cli_err("stdout: %s", strerror(out_err));
			sio_close_and_wait(r->s, CLOSE_WAIT_MS);
			rc = CLI_ERR;
			break;
		}
		if (lost || gap_dead) {
			if (!peer_lost)
				send_u64_frame(r, F_LOST, 0);
			rc = -2; /* reported below, after stdout got everything before the gap */
			break;
		}
		if (tx_final && rx_done) {
			/* both directions ended: say so until the peer says it too */
			if (!done_sent || (!peer_done && now - last_done >= CTL_REPEAT_MS)) {
				uint8_t f[17];
				f[0] = C_DONE;
				relay_put_u64(f + 1, sent_total);
				relay_put_u64(f + 9, written_total);
				relay_send_ctl(r, f, sizeof f);
				done_sent = 1;
				last_done = now;
			}
			if (peer_done) {
				sio_close_and_wait(r->s, CLOSE_WAIT_MS);
				relay_data_finish(r);
				rc = report_done(r);
				break;
			}
		}
		if (closing || write_err)
			break;
		if (g_sig && !interrupted) {
			/* no END: the stream did not end, it was cut; the peer sees
			 * the close without it and says so */
			interrupted = 1;
			final_ack(r);
			sio_close_and_wait(r->s, CLOSE_WAIT_MS);
			rc = CLI_ERR;
			break;
		}
		if (eof && !tx_final) {
			if (!end_sent || now - last_req > STALL_MS) {
				end_sent = 1;
				pthread_mutex_lock(&r->mu);
				r->tx_end_sent = 1;
				pthread_mutex_unlock(&r->mu);
				last_req = now;
				if (!lines && r->datagram && stalled)
					write_err = resend_unacked(r);
				if (!write_err)
					write_err = lines ? send_ctl_u64(r, C_LEND, sent_total)
					                  : send_u64_frame(r, F_END, tx_next);
			}
		} else if (!eof && !lines && stalled && (!room || r->datagram)) {
			last_req = now;
			if (r->datagram)
				write_err = resend_unacked(r);
			if (!write_err)
				write_err = send_u64_frame(r, F_ACKREQ, tx_next);
		}

		struct pollfd p[2] = {{.fd = r->wake[0], .events = POLLIN},
		                      {.fd = STDIN_FILENO, .events = POLLIN}};
		int nfds = (!eof && room) ? 2 : 1;
		int pr = poll(p, (nfds_t)nfds, 100);
		if (pr < 0 && errno != EINTR) {
			cli_err("poll: %s", strerror(errno));
			rc = CLI_ERR;
			break;
		}
		if (pr > 0 && (p[0].revents & POLLIN))
			drain_fd(r->wake[0]);
		if (pr <= 0 || nfds < 2 || !(p[1].revents & (POLLIN | POLLHUP | POLLERR)))
			continue;
		ssize_t n;
		if (lines) {
			if (used == cap) {
				/* room for the longest line and its newline */
				if (cap >= LINE_MAX_BYTES + 1) {
					cli_err("stdin: a line is longer than %u bytes",
					        LINE_MAX_BYTES);
					sio_close_and_wait(r->s, CLOSE_WAIT_MS);
					rc = CLI_ERR;
					break;
				}
				size_t ncap = cap * 2 < LINE_MAX_BYTES + 1 ? cap * 2 : LINE_MAX_BYTES + 1;
				uint8_t *nb = realloc(buf, ncap);
				if (!nb) {
					cli_err("out of memory");
					rc = CLI_ERR;
					break;
				}
				buf = nb;
				cap = ncap;
			}
			n = read(STDIN_FILENO, buf + used, cap - used);
		} else {
			n = read(STDIN_FILENO, buf + F_DATA_HDR, chunk);
		}
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n < 0 && errno != EBADF) {
			cli_err("stdin: %s", strerror(errno));
			final_ack(r);
			sio_close_and_wait(r->s, CLOSE_WAIT_MS);
			rc = CLI_ERR;
			break;
		}
		if (n <= 0) {
			eof = 1;
			if (lines)
				write_err = send_lines(r, buf, &used, 1);
			continue;
		}
		if (lines) {
			used += (size_t)n;
			write_err = send_lines(r, buf, &used, 0);
		} else {
			write_err = send_chunk(r, buf, (size_t)n);
		}
	}
	free(buf);
	if (r->o->progress)
		progress(r, t_start, 1);
	if (rc == -1) {
		/* the session ended by itself: wait for it, then write what arrived */
		sio_session_wait_state(r->s, SIO_STATE_CLOSED, CLOSE_WAIT_MS);
		relay_data_finish(r);
		return report_end(r, write_err);
	}
	if (rc == -2) {
		sio_close_and_wait(r->s, CLOSE_WAIT_MS);
		relay_data_finish(r);
		pthread_mutex_lock(&r->mu);
		int peer_lost = r->peer_lost;
		pthread_mutex_unlock(&r->mu);
		cli_err("data lost in transit%s", peer_lost ? " (reported by the peer)" : "");
		return CLI_ERR;
	}
	relay_data_finish(r);
	if (interrupted)
		cli_err("interrupted by %s: session closed (the stream was cut, not ended)",
		        g_sig == SIGINT ? "SIGINT" : "SIGTERM");
	pthread_mutex_lock(&r->mu);
	int out_err = r->out_err;
	pthread_mutex_unlock(&r->mu);
	if (out_err && rc == CLI_OK) {
		cli_err("stdout: %s", strerror(out_err));
		rc = CLI_ERR;
	}
	return rc;
}


static size_t window_for(const struct cli_conn *c)
{
	if (!c->datagram)
		return 8u << 20;
	int v = 0;
	socklen_t l = sizeof v;
	if (getsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &v, &l) != 0 || v <= 0)
		return 65536;
	size_t w = (size_t)v / 4; /* the kernel reports twice the buffer; keep headroom */
	return w < 65536 ? 65536 : w > (8u << 20) ? 8u << 20 : w;
}

int cli_session(struct cli_opts *o)
{
	const int listening = strcmp(o->cmd, "listen") == 0;
	struct cli_addr addr;
	char err[512];
	if (cli_addr_parse(o->address, listening, &addr, err, sizeof err))
		return cli_usage_error(o->cmd, "bad ADDRESS '%s': %s", o->address, err);
	int rc = sio_init();
	if (rc < 0) {
		cli_err("cannot initialise the library: %s", sio_strerror(rc));
		return CLI_ERR;
	}
	int64_t t0 = cli_now_ms();
	int64_t deadline = o->timeout_s > 0 ? t0 + (int64_t)(o->timeout_s * 1000) : 0;
	int code = CLI_ERR;
	sio_identity *id = NULL;
	sio_remote *remote = NULL;
	uint8_t psk[1025];
	size_t psk_len = 0;
	struct cli_conn conn = {.fd = -1};
	struct relay r;
	memset(&r, 0, sizeof r);
	r.o = o;
	r.wake[0] = r.wake[1] = -1;
	r.sig = &g_sig;
	r.type = o->have_channel ? o->channel : SIO_TYPE_READWRITE;
	r.tx_window = TX_INITIAL_WINDOW;
	r.tx_cwnd = CWND_INITIAL;
	r.tx_ssthresh = UINT64_MAX;
	cli_mode_of(o, 0, &r.mode);
	pthread_mutex_init(&r.mu, NULL);
	pthread_cond_init(&r.cond, NULL);

	if (cli_load_identity(o, &id))
		goto out;
	if (o->remote && cli_load_remote(o->remote, &remote))
		goto out;
	if (o->psk_file && cli_read_psk(o->psk_file, psk, sizeof psk, &psk_len))
		goto out;

	if (pipe2(r.wake, O_CLOEXEC | O_NONBLOCK) != 0) {
		cli_err("pipe: %s", strerror(errno));
		goto out;
	}
	g_wake_fd = r.wake[1];
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (o->kept && o->kept->fd >= 0) {
		/* -k over a datagram socket: the same socket serves the next peer,
		 * so a peer that connects while the last session ends (or lingers)
		 * never meets a closed socket */
		conn = *o->kept;
		o->kept->fd = -1;
		code = 0;
	} else {
		code = cli_open(&addr, listening, deadline, &g_sig, &conn, err, sizeof err);
	}
	if (code) {
		if (!(o->keep_open && g_sig)) /* -k: a signal is the normal way to stop */
			cli_err("%s", err);
		goto out;
	}
	r.datagram = conn.datagram;
	r.rx_window = (uint32_t)window_for(&conn);

	sio_transport t;
	sio_transport_fd(&t, conn.fd, conn.fd);
	t.kind = conn.datagram ? SIO_TRANSPORT_DATAGRAM : SIO_TRANSPORT_STREAM;
	t.peer_len =
	    0; /* connected, or (listening datagram) learned from the first authentic packet */
	t.close_fds = 0;

	sio_options opts;
	memset(&opts, 0, sizeof opts);
	cli_set_rekey(&opts, o->rekey_s);
	opts.listener_peer = o->multi && !listening; /* connect --multi: a sio listen --multi hub */
	if (o->dead_s > 0) {
		/* a silent peer is given up after --dead; keepalives while idle
		 * keep a live one from looking silent */
		opts.dead_peer_ns = (int64_t)(o->dead_s * 1e9);
		opts.keepalive_ns = opts.dead_peer_ns / 4;
	} else {
		opts.dead_peer_ns = -1;
	}
	if (deadline) {
		int64_t left = deadline - cli_now_ms();
		opts.kx_timeout_ns = (left < 1000 ? 1000 : left) * 1000000LL + 1000000000LL;
	} else {
		opts.kx_timeout_ns = INT64_MAX / 4; /* --timeout 0: wait for a peer forever */
	}
	if (psk_len) {
		opts.psk = psk;
		opts.psk_len = psk_len;
	}
	sio_callbacks cbs;
	memset(&cbs, 0, sizeof cbs);
	cbs.ctx = &r;
	cbs.on_error = cb_error;
	cbs.on_state = cb_state;
	cbs.on_connect = cb_connect;
	cbs.on_remote_identity = cb_remote_identity;
	cbs.on_diag = cb_diag;
	cbs.diag_level = cli_diag_level(o);

	code = CLI_ERR;
	rc = sio_session_new(&r.s, id, remote, &t, &opts, &cbs);
	if (rc < 0) {
		cli_err("cannot create the session: %s", sio_strerror(rc));
		goto out;
	}
	rc = relay_data_start(&r);
	if (rc >= 0)
		rc = sio_session_start(r.s);
	if (rc < 0) {
		cli_err("cannot start the session: %s", sio_strerror(rc));
		goto out;
	}
	for (;;) {
		rc = sio_session_wait_state(r.s, SIO_STATE_ESTABLISHED, 100);
		if (rc != SIO_ETIMEDOUT)
			break;
		if (g_sig) {
			if (!o->keep_open) /* -k: the normal way to stop */
				cli_err("interrupted while establishing the session");
			goto out;
		}
		if (deadline && cli_now_ms() >= deadline)
			break;
	}
	if (!session_connected(&r) && rc != 0) {
		code = report_no_session(&r, rc == SIO_ETIMEDOUT ? 0 : rc, o->timeout_s);
		goto out;
	}
	int64_t t_est = cli_now_ms();
	o->established = 1;
	if (!o->quiet) {
		uint8_t pk[SIO_PUBLIC_KEY_BYTES];
		char fp[SIO_FINGERPRINT_MAX] = "?";
		if (sio_session_remote_key(r.s, pk) >= 0)
			sio_fingerprint(pk, fp, sizeof fp);
		fprintf(stderr, "sio: session established with %s%s\n", fp,
		        remote ? " (pinned)" : "");
	}
	sio_stats st;
	sio_session_stats(r.s, &st);
	size_t chunk = st.packet_size > 1024 ? st.packet_size - 160 : 1024;
	if (chunk > 65536 - F_DATA_HDR)
		chunk = 65536 - F_DATA_HDR;
	code = relay_loop(&r, chunk);
	if (o->stats)
		print_stats(&r, t0, t_est, cli_now_ms());
out:
	if (r.s) {
		relay_data_finish(&r);
		sio_session_free(r.s);
	}
	relay_data_free(&r);
	if (o->kept && listening && conn.datagram && conn.fd >= 0 && !g_sig)
		*o->kept = conn; /* -k: kept for the next peer (main.c closes it) */
	else
		cli_conn_close(&conn);
	g_wake_fd = -1;
	if (r.wake[0] >= 0) {
		close(r.wake[0]);
		close(r.wake[1]);
	}
	explicit_bzero(psk, sizeof psk);
	sio_remote_free(remote);
	sio_identity_free(id);
	pthread_mutex_destroy(&r.mu);
	pthread_cond_destroy(&r.cond);
	return code;
}
