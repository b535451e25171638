/* Session layer, I/O part (layer 3): the transport side of a session,
 * what the I/O thread and sio_session_process() do with it: sending due
 * packets, reading input, the step of everything due, the I/O thread's
 * loop, event-loop mode. See session_int.h for the locking rules. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "session_int.h"

static void lock(sio_session *s)
{
	pthread_mutex_lock(&s->sh->mu);
}

static void unlock(sio_session *s)
{
	pthread_mutex_unlock(&s->sh->mu);
}


static int diag_on(const sio_session *s, int level)
{
	return s->cbs.on_diag && level <= (s->cbs.diag_level > 0 ? s->cbs.diag_level : SIO_DIAG_INFO);
}

static void diag(sio_session *s, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void diag(sio_session *s, int level, const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	sio_diag_push(s, level, buf);
}

/* A peer address as text: "127.0.0.1:5000", "[::1]:5000", a UNIX socket's
 * path (bytes outside printable ASCII as '?': one line, whatever the peer
 * named its socket) or "an unnamed UNIX socket". */
static void addr_text(const struct sockaddr *sa, socklen_t len, char *out, size_t cap)
{
	char host[INET6_ADDRSTRLEN];
	if (sa->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
		const struct sockaddr_in *in = (const void *)sa;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
		snprintf(out, cap, "%s:%u", host, (unsigned)ntohs(in->sin_port));
	} else if (sa->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *in6 = (const void *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
		snprintf(out, cap, "[%s]:%u", host, (unsigned)ntohs(in6->sin6_port));
	} else if (sa->sa_family == AF_UNIX && len > offsetof(struct sockaddr_un, sun_path)) {
		const struct sockaddr_un *un = (const void *)sa;
		size_t n = len - offsetof(struct sockaddr_un, sun_path), o = 0;
		int abstract = un->sun_path[0] == 0;
		if (abstract && cap > 1)
			out[o++] = '@';
		for (size_t i = abstract ? 1 : 0; i < n && un->sun_path[i] && o + 1 < cap; i++) {
			unsigned char ch = (unsigned char)un->sun_path[i];
			out[o++] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
		}
		out[o] = 0;
		if (o == 0)
			snprintf(out, cap, "an unnamed UNIX socket");
	} else {
		snprintf(out, cap, "an address of family %d", (int)sa->sa_family);
	}
}
/* ---- I/O ---------------------------------------------------------------- */

static void transport_ended(sio_session *s, uint64_t now, int err)
{
	if (s->tp_dead)
		return;
	s->tp_dead = 1;
	sio_core_transport_closed(s->core, now, err);
}

/* Port-unreachable reports the transport counted since the last look (SEEN:
 * the count already passed on) go to the core, which decides whether they
 * end the session (sio_core_unreachable). */
static void pass_refusals(sio_session *s, uint64_t now, uint64_t count, uint64_t *seen)
{
	for (; *seen < count && !s->tp_dead; (*seen)++)
		sio_core_unreachable(s->core, now);
	*seen = count;
}

/* Hands due packets to the transport. On connected descriptor transports
 * the system call runs without the session lock (the core keeps the packet
 * buffers unchanged until sio_core_sent()), so writers and the receiving side
 * go on meanwhile; one thread sends at a time. Lock held on entry and exit. */
void sio_flush_out(sio_session *s, uint64_t now)
{
	if (s->sending || s->tp_dead)
		return;
	/* (with a listener prefix, which the receiving side may change, the
	 * send stays under the lock) */
	int unlocked = !s->tp.custom && s->tp.peer_mode == SIO_TP_PEER_CONNECTED && !s->tp.tx_prefix_len;
	struct iovec iov[SIO_TP_BATCH];
	s->sending = 1;
	if (s->tx_blocked) {
		if (unlocked)
			unlock(s);
		int r = sio_tp_flush(&s->tp);
		if (unlocked)
			lock(s);
		if (r < 0)
			transport_ended(s, now, r);
		s->tx_blocked = r == 0;
		if (r <= 0)
			goto out;
	}
	s->out_more = 0;
	for (int iter = 0; !s->tp_dead; iter++) {
		size_t n = sio_core_pending(s->core, now, iov, SIO_TP_BATCH);
		if (n == 0)
			break;
		if (iter == 64) {
			s->out_more = 1; /* fairness: the I/O thread comes back at once */
			break;
		}
		if (unlocked)
			unlock(s);
		int r = sio_tp_send(&s->tp, iov, n);
		int blocked = s->tp.wblocked;
		if (unlocked)
			lock(s);
		s->tx_blocked = blocked;
		if (s->tp.refused_tx != s->refused_tx_seen)
			pass_refusals(s, now, s->tp.refused_tx, &s->refused_tx_seen);
		if (r < 0) {
			sio_core_sent(s->core, n, r);
			transport_ended(s, now, r);
			break;
		}
		if (r > 0) {
			sio_core_sent(s->core, (size_t)r, 0);
			sio_signal(s); /* writers waiting for room in the core */
			if (s->wq_full)
				sio_wq_drain(s, now); /* whoever sends refills the core */
		}
		if ((size_t)r < n && blocked)
			break; /* the I/O thread waits for POLLOUT */
	}
out:
	s->sending = 0;
	if (atomic_load(&s->state) == SIO_STATE_CLOSED)
		sio_wq_fail_rest(s);
	sio_si_broadcast(s->sh);
}

struct rx_ctx {
	sio_session *s;
	uint64_t now;
};

static void on_packet(void *ctx, uint8_t *buf, size_t len, const struct sockaddr *from, socklen_t fl)
{
	struct rx_ctx *rx = ctx;
	sio_session *s = rx->s;
	if (s->tp_dead)
		return;
	if (s->tp.tx_prefix_len &&
	    sio_tp_listener_cookie(&s->tp, buf, len, from, fl,
				   atomic_load(&s->state) >= SIO_STATE_NEGOTIATION))
		return; /* a listener under load asks us to echo a cookie */
	s->cur_pkt = buf;
	s->cur_len = len;
	s->cur_from = from;
	s->cur_fromlen = fl;
	int auth = sio_core_recv(s->core, rx->now, buf, len);
	s->cur_pkt = NULL;
	s->cur_from = NULL;
	if (s->pkt_hook)
		s->pkt_hook(s->hook_ctx, buf, auth);
	if (auth != SIO_CORE_RX_DROP && s->tp.tx_prefix_len > 1 + SIO_LISTENER_CID_BYTES)
		s->tp.tx_prefix_len = 1 + SIO_LISTENER_CID_BYTES; /* the listener knows us now */
	if (from) {
		/* learn mode: only fresh authenticated data moves a validated
		 * peer address; key exchanges may only point a tentative one */
		static const int seen[] = {
			[SIO_CORE_RX_DROP] = SIO_TP_SEEN_NOTHING,
			[SIO_CORE_RX_KX] = SIO_TP_SEEN_KX,
			[SIO_CORE_RX_DATA] = SIO_TP_SEEN_DATA,
			[SIO_CORE_RX_KX_REPEAT] = SIO_TP_SEEN_REPEAT,
			[SIO_CORE_RX_DATA_OLD] = SIO_TP_SEEN_NOTHING,
		};
		if (auth >= 0 && (size_t)auth < sizeof seen / sizeof seen[0]) {
			int was_valid = s->tp.peer_valid;
			int moved = sio_tp_learn_peer(&s->tp, from, fl, len, seen[auth]);
			if ((moved || s->tp.peer_valid != was_valid) && diag_on(s, SIO_DIAG_INFO)) {
				char a[128];
				addr_text(from, fl, a, sizeof a);
				if (!s->tp.peer_valid)
					diag(s, SIO_DIAG_INFO, "peer address %s (tentative: a key exchange came from it)", a);
				else if (!was_valid)
					diag(s, SIO_DIAG_INFO, "peer address %s validated (authenticated data came from it)", a);
				else
					diag(s, SIO_DIAG_INFO, "peer moved to %s (authenticated data came from it)", a);
			}
		}
	}
}

/* Closed after acknowledging the peer's CLOSE on a datagram transport: the
 * acknowledgement may be lost, so the peer's repeated CLOSEs are still read
 * and answered until the core's linger ends (core.h). */
int sio_lingering(const sio_session *s, uint64_t now)
{
	return s->tp.datagram && !s->tp.custom && !s->confirm && !s->tp_dead && !s->free_on_exit &&
	       atomic_load(&s->state) == SIO_STATE_CLOSED && now < sio_core_linger_until(s->core);
}

/* One batch of input. Deliveries in place stay valid until the next batch,
 * so the caller dispatches before reading again. Returns packets read. */
static int read_input(sio_session *s, uint64_t now)
{
	/* nothing is read after the end (but during a linger): what follows on
	 * the transport belongs to the program (sio_confirm_identity hands the
	 * descriptor back) */
	if (s->tp_dead || s->dispatching || s->evn > 0 || s->free_on_exit ||
	    (atomic_load(&s->state) == SIO_STATE_CLOSED && !sio_lingering(s, now)))
		return 0;
	struct rx_ctx rx = {s, now};
	int r = sio_tp_recv(&s->tp, on_packet, &rx);
	sio_rx_signal(s); /* once for the batch, not per message */
	if (s->tp.refused_rx != s->refused_rx_seen)
		pass_refusals(s, now, s->tp.refused_rx, &s->refused_rx_seen);
	if (r == SIO_TP_EOF || r < 0) {
		transport_ended(s, now, r == SIO_TP_EOF ? 0 : r);
		return 0;
	}
	return r;
}

void sio_reader_wait(sio_session *s, uint64_t deadline)
{
	int fd = -1;
	if (s->mode == MODE_THREAD && !s->reader_polling && !s->tp_dead && !s->input_stalled &&
	    !s->dispatching && s->evn == 0 && !s->core_busy &&
	    atomic_load(&s->state) != SIO_STATE_CLOSED)
		fd = sio_tp_read_fd(&s->tp);
	if (fd < 0) {
		sio_wait_cond(s, &s->cond, &s->waiters, deadline);
		return;
	}
	/* Poll the transport from this thread: when the peer's answer comes,
	 * this thread decrypts it and returns, instead of the I/O thread
	 * decrypting it and waking this one. The I/O thread may wake too; it
	 * then finds nothing to read. Handler events found here are left to
	 * the I/O thread. */
	int to = -1;
	if (deadline != UINT64_MAX) {
		uint64_t now = sio_now_ns();
		to = deadline <= now ? 0 : (int)((deadline - now + 999999u) / 1000000u);
	}
	struct pollfd pf[2] = {{fd, POLLIN, 0}, {s->rwake_fd, POLLIN, 0}};
	s->reader_polling = 1;
	unlock(s);
	int r = poll(pf, 2, to);
	lock(s);
	s->reader_polling = 0;
	if (r > 0 && (pf[1].revents & POLLIN)) {
		uint64_t v;
		ssize_t n = read(s->rwake_fd, &v, sizeof(v));
		(void)n;
		s->rwake_pending = 0;
	}
	if (r > 0 && (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) && !s->dispatching &&
	    s->evn == 0 && !s->core_busy && !s->tp_dead) {
		uint64_t now = sio_now_ns();
		read_input(s, now);
		if (s->evn == 0)
			sio_tp_rx_release(&s->tp); /* all of it copied out already */
		sio_flush_out(s, now);
		sio_kick(s);
	}
}

/* Moves the write queue into the core and sends what is due, while the
 * queue has records and the core takes them. Records found now mean the
 * writers are busy: the next look is due one merge delay later (queued
 * records wait at most that long, as a message in an open packet does).
 * Lock held. */
static void wq_step(sio_session *s, uint64_t now)
{
	for (int i = 0; i < 8; i++) {
		size_t n = sio_wq_drain(s, now);
		if (n == 0)
			break;
		sio_flush_out(s, now);
		if (!sio_wq_pending(s) || s->tx_blocked || s->tp_dead)
			break;
	}
}

/* When the queue wants the consumer back: now if records wait and writers
 * were idle, the end of the merge delay while they are busy. */
static uint64_t wq_deadline(const sio_session *s, uint64_t now)
{
	if (now < s->wq_idle_at)
		return s->wq_idle_at;
	if (!sio_wq_pending(s) || s->tx_blocked)
		return UINT64_MAX;
	/* the core's ring is full: whoever sends refills it (sio_flush_out);
	 * look again soon in case that was another thread */
	return s->wq_full ? now + 1000000u : now;
}

/* Everything due: requested close, timers, output, one round of input,
 * events. Lock held. */
static void step(sio_session *s, int allow_input)
{
	uint64_t now = sio_now_ns();
	wq_step(s, now);
	if (s->close_requested && !sio_wq_pending(s)) {
		/* (after everything written before it) */
		s->close_requested = 0;
		s->local_close = 1;
		sio_core_close(s->core, now);
	}
	if (sio_core_deadline(s->core) <= now)
		sio_core_tick(s->core, now);
	sio_flush_out(s, now);
	sio_dispatch(s);
	for (int round = 0; allow_input && round < 8 && !s->free_on_exit; round++) {
		if (!sio_input_ok(s)) {
			s->input_stalled = 1;
			break;
		}
		s->input_stalled = 0;
		int n = read_input(s, now);
		sio_flush_out(s, now); /* answers, acknowledgements */
		sio_dispatch(s);
		wq_step(s, now); /* what handlers wrote */
		if (n <= 0)
			break;
		now = sio_now_ns();
	}
	if (s->free_on_exit)
		return; /* freed by a handler: nothing more is sent */
	if (sio_core_deadline(s->core) <= now) {
		sio_core_tick(s->core, now);
		sio_flush_out(s, now);
		sio_dispatch(s);
	}
	sio_si_broadcast(s->sh);
}

static uint64_t next_deadline(const sio_session *s, uint64_t now)
{
	uint64_t d = sio_core_deadline(s->core), w = wq_deadline(s, now);
	return w < d ? w : d;
}

static int timeout_ms_locked(const sio_session *s, uint64_t now)
{
	uint64_t d = next_deadline(s, now);
	if (s->evn > 0 || s->close_requested || (s->out_more && !s->tx_blocked))
		return 0;
	if (s->tp.custom && !s->tp_dead && (s->tp.cb_poll_fd < 0 || s->tx_blocked)) {
		/* no descriptor tells us when a callback transport has data or
		 * room: look again every few milliseconds */
		uint64_t t = now + 5000000u;
		if (t < d)
			d = t;
	}
	if (sio_lingering(s, now) && sio_core_linger_until(s->core) < d)
		d = sio_core_linger_until(s->core); /* then stop reading */
	if (d == UINT64_MAX)
		return -1;
	if (d <= now)
		return 0;
	uint64_t ms = (d - now + 999999u) / 1000000u;
	return ms > 3600000u ? 3600000 : (int)ms;
}

/* Queued bytes worth waking the consumer for while it waits out a merge
 * delay: a full packet. */
static uint64_t wq_wake_bytes(const sio_session *s)
{
	uint64_t b = sio_core_max_packet(s->core);
	return b < SIO_WQ_BYTES / 4 ? b : SIO_WQ_BYTES / 4;
}

/* ---- driven sessions (MODE_DRIVEN) -------------------------------------- */

uint64_t sio_session_run(sio_session *s)
{
	if (s->core_busy || s->core_start_deferred) {
		/* its first signature is being made (deferred_start): that
		 * thread hands it back when done; never wait for it here */
		s->drv_deadline = UINT64_MAX;
		return UINT64_MAX;
	}
	sio_wq_disarm(s);
	/* (the driver hands most packets over as they come: the transport is
	 * read only when some had to wait) */
	step(s, s->drv_backlog);
	return sio_session_settle(s);
}

uint64_t sio_session_settle(sio_session *s)
{
	if (s->free_on_exit)
		return UINT64_MAX;
	uint64_t now = sio_now_ns();
	uint64_t d = next_deadline(s, now);
	if (s->evn > 0 || s->close_requested || (s->out_more && !s->tx_blocked))
		d = now;
	else if (s->tx_blocked && d > now + 1000000u)
		d = now + 1000000u; /* no descriptor says when the socket has room */
	if (d > now) {
		/* as the I/O thread before it sleeps: writers wake the driver
		 * for a record while the queue is idle, for a packet's worth
		 * while it is busy */
		uint64_t ahead = now < s->wq_idle_at ? wq_wake_bytes(s) : 1;
		if (ahead == 1)
			sio_wq_wipe(s);
		if (!s->wq_full && sio_wq_arm(s, ahead)) {
			sio_wq_disarm(s);
			d = now;
		}
	}
	s->drv_deadline = d;
	return d;
}

int sio_session_can_input(const sio_session *s)
{
	return !s->core_busy && !s->core_start_deferred && !s->tp_dead && !s->dispatching && s->evn == 0 &&
	       !s->free_on_exit &&
	       !s->input_stalled && sio_input_ok(s) && atomic_load(&s->state) != SIO_STATE_CLOSED;
}

void sio_session_input(sio_session *s, uint8_t *pkt, size_t len)
{
	uint64_t now = sio_now_ns();
	struct rx_ctx rx = {s, now};
	on_packet(&rx, pkt, len, NULL, 0);
	sio_rx_signal(s);
	sio_flush_out(s, now); /* answers, acknowledgements */
	sio_dispatch(s);
	wq_step(s, now); /* what handlers wrote */
}

void sio_session_cutoff(sio_session *s)
{
	transport_ended(s, sio_now_ns(), 0);
	sio_dispatch(s);
}

static void drain_wake(sio_session *s)
{
	uint64_t v;
	ssize_t r = read(s->wake_fd, &v, sizeof(v));
	(void)r;
	s->wake_pending = 0;
}

void *sio_io_thread(void *arg)
{
	sio_session *s = arg;
	uint64_t opened_seen = 0, opened_at = sio_now_ns();
	lock(s);
	if (s->core_start_deferred) {
		s->core_start_deferred = 0;
		(void)sio_core_start(s->core, sio_now_ns()); /* a failure closes it */
	}
	while (!s->stop) {
		step(s, 1);
		if (s->stop)
			break;
		uint64_t now = sio_now_ns();
		int to = timeout_ms_locked(s, now);
		struct pollfd p[3];
		int np = 0;
		p[np++] = (struct pollfd){s->wake_fd, POLLIN, 0};
		int rfd = s->tp_dead || s->input_stalled ||
					  (atomic_load(&s->state) == SIO_STATE_CLOSED && !sio_lingering(s, now))
				  ? -1
				  : sio_tp_read_fd(&s->tp);
		int bfd = s->tp_dead || !s->tx_blocked || s->tp.custom ? -1 : s->tp.wfd;
		if (rfd >= 0 && rfd == bfd) {
			p[np++] = (struct pollfd){rfd, POLLIN | POLLOUT, 0};
		} else {
			if (rfd >= 0)
				p[np++] = (struct pollfd){rfd, POLLIN, 0};
			if (bfd >= 0)
				p[np++] = (struct pollfd){bfd, POLLOUT, 0};
		}
		uint64_t d = next_deadline(s, now);
		s->io_sleep_until = to == 0 ? 0 : (to < 0 ? UINT64_MAX : d);
		if (to == 0) {
			/* A writer sending without the lock (s->sending) must
			 * take it back before anything due can go: looping with
			 * the lock held (a close requested while its record is
			 * pending) would starve it for good. */
			if (s->sending) {
				unlock(s);
				sched_yield();
				lock(s);
			}
			continue;
		}
		/* Writers wake us for a queued record only while the queue is
		 * idle; while it is busy, for a packet's worth (we come back
		 * at the end of the merge delay anyway). */
		uint64_t ahead = now < s->wq_idle_at ? wq_wake_bytes(s) : 1;
		if (ahead == 1)
			sio_wq_wipe(s); /* the queue went idle */
		if (!s->wq_full && sio_wq_arm(s, ahead)) {
			sio_wq_disarm(s);
			s->io_sleep_until = 0;
			continue;
		}
		/* Sleep to the deadline itself, not to the next millisecond: the
		 * merge delay (50 us by default) is what a packet waits for, and
		 * a 1 ms poll() turned it into 1 ms. But while writers on the
		 * locked way (messages over a quarter of a packet) open
		 * packets faster than one per merge delay, they close them
		 * themselves and waking at each delay only costs wake-ups
		 * (measured on 1300-byte messages): then sleep as poll() would;
		 * their kicks still wake us. Not while the write queue is busy:
		 * its records wait for us. */
		uint64_t opened = sio_core_opened(s->core);
		int streaming = s->send_delay_ns > 0 && ahead == 1 && opened - opened_seen > 1 &&
				(now - opened_at) / (opened - opened_seen) < s->send_delay_ns;
		opened_seen = opened;
		opened_at = now;
		struct timespec ts, *tsp = NULL;
		if (to > 0 && streaming) {
			ts.tv_sec = to / 1000;
			ts.tv_nsec = (long)(to % 1000) * 1000000L;
			tsp = &ts;
		} else if (to > 0) {
			uint64_t ns = d > now && d - now < (uint64_t)to * 1000000u ? d - now
										       : (uint64_t)to * 1000000u;
			ts.tv_sec = (time_t)(ns / 1000000000u);
			ts.tv_nsec = (long)(ns % 1000000000u);
			tsp = &ts;
		}
		s->now_cache = 0; /* time passes while asleep */
		unlock(s);
		int r = ppoll(p, (nfds_t)np, tsp, NULL);
		lock(s);
		sio_wq_disarm(s);
		s->io_sleep_until = 0;
		if (r > 0 && (p[0].revents & POLLIN))
			drain_wake(s);
	}
	int self_free = s->free_on_exit;
	unlock(s);
	if (self_free) {
		pthread_detach(pthread_self());
		sio_session_destroy(s);
	}
	return NULL;
}
int sio_session_fd(const sio_session *s)
{
	return s && s->mode == MODE_LOOP ? s->epfd : -1;
}

/* Event-loop mode: keep the epoll set in line with what the session waits
 * for (input unless stalled or ended, output room when blocked). */
static void loop_update_fds(sio_session *s)
{
	int rfd = s->ep_rfd;
	int bfd = s->tp_dead || !s->tx_blocked || s->tp.custom ? -1 : s->tp.wfd;
	int want_out = bfd >= 0;
	if ((s->tp_dead || atomic_load(&s->state) == SIO_STATE_CLOSED) && rfd >= 0) {
		/* an ended descriptor stays readable: stop watching it */
		(void)epoll_ctl(s->epfd, EPOLL_CTL_DEL, rfd, NULL);
		if (s->ep_out && s->tp.wfd != rfd)
			(void)epoll_ctl(s->epfd, EPOLL_CTL_DEL, s->tp.wfd, NULL);
		s->ep_rfd = -1;
		s->ep_out = 0;
		return;
	}
	if (rfd < 0)
		return;
	if (want_out == s->ep_out || s->tp.custom)
		return;
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.fd = bfd};
	if (want_out) {
		if (bfd == rfd)
			(void)epoll_ctl(s->epfd, EPOLL_CTL_MOD, bfd, &ev);
		else {
			ev.events = EPOLLOUT;
			(void)epoll_ctl(s->epfd, EPOLL_CTL_ADD, bfd, &ev);
		}
	} else {
		int wfd = s->tp.wfd;
		if (wfd == rfd) {
			ev.events = EPOLLIN;
			ev.data.fd = wfd;
			(void)epoll_ctl(s->epfd, EPOLL_CTL_MOD, wfd, &ev);
		} else {
			(void)epoll_ctl(s->epfd, EPOLL_CTL_DEL, wfd, NULL);
		}
	}
	s->ep_out = want_out;
}

int sio_session_process(sio_session *s)
{
	if (s && s->mode == MODE_DRIVEN && s->drv->loop) {
		/* a listener's peer in event-loop style: sio_listener_process()
		 * drives it; running it here too does no harm */
		return s->drv->process(s->drv, s);
	}
	if (!s || s->mode != MODE_LOOP)
		return SIO_ESTATE;
	lock(s);
	drain_wake(s);
	if (sio_core_enter(s) == 0)
		step(s, 1);
	if (s->free_on_exit) {
		/* a handler freed the session during this call */
		unlock(s);
		sio_session_destroy(s);
		return SIO_ECLOSED;
	}
	loop_update_fds(s);
	/* writes made before the next call wake the loop's poll when the
	 * queue needs it (sio_session_timeout_ms() covers the rest) */
	uint64_t now = sio_now_ns();
	if (now >= s->wq_idle_at)
		sio_wq_wipe(s);
	if (sio_wq_arm(s, now < s->wq_idle_at ? wq_wake_bytes(s) : 1))
		sio_wake(s);
	int st = atomic_load(&s->state);
	int r = st == SIO_STATE_CLOSED ? sio_closed_err(s) : 0;
	unlock(s);
	return r;
}

int sio_session_timeout_ms(const sio_session *s)
{
	if (!s || s->mode != MODE_LOOP)
		return -1;
	sio_session *m = (sio_session *)s;
	lock(m);
	int r = timeout_ms_locked(s, sio_now_ns());
	unlock(m);
	return r;
}
