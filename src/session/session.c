/* Public session API, lifecycle part (layer 3): creation, the I/O thread,
 * event-loop mode, core events and their dispatch, states, close, free.
 * See session_int.h for the locking rules. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stddef.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "options.h"
#include "session_int.h"

uint64_t sio_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t sio_now_cached(sio_session *s)
{
	if (s->now_cache == 0 || ++s->now_uses >= 16) {
		s->now_cache = sio_now_ns();
		s->now_uses = 0;
	}
	return s->now_cache;
}

static uint64_t wall_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int sio_is_io_thread(const sio_session *s)
{
	return s->mode == MODE_THREAD && s->thread_started && pthread_equal(pthread_self(), s->thread);
}

static void lock(sio_session *s)
{
	pthread_mutex_lock(&s->sh->mu);
}

static void unlock(sio_session *s)
{
	pthread_mutex_unlock(&s->sh->mu);
}

void sio_signal(sio_session *s)
{
	if (s->waiters)
		pthread_cond_broadcast(&s->cond);
	if (s->reader_polling && !s->rwake_pending) {
		uint64_t one = 1;
		s->rwake_pending = 1;
		ssize_t r = write(s->rwake_fd, &one, sizeof(one));
		(void)r;
	}
}

/* Waits on C (with the session lock) until signalled or DEADLINE (absolute
 * monotonic ns; UINT64_MAX = none). */
void sio_wait_cond(sio_session *s, pthread_cond_t *c, int *waiters, uint64_t deadline)
{
	(*waiters)++;
	if (deadline == UINT64_MAX) {
		pthread_cond_wait(c, &s->sh->mu);
	} else {
		struct timespec ts = {(time_t)(deadline / 1000000000u), (long)(deadline % 1000000000u)};
		pthread_cond_timedwait(c, &s->sh->mu, &ts);
	}
	(*waiters)--;
}

int sio_core_enter(sio_session *s)
{
	while (s->core_busy) {
		if (pthread_equal(s->core_busy_thread, pthread_self()))
			return SIO_ESTATE;
		sio_wait_cond(s, &s->cond, &s->waiters, UINT64_MAX);
	}
	return 0;
}

void sio_wake(sio_session *s)
{
	if (s->wake_pending || s->wake_fd < 0)
		return;
	uint64_t one = 1;
	s->wake_pending = 1;
	ssize_t r = write(s->wake_fd, &one, sizeof(one));
	(void)r;
}

void sio_kick(sio_session *s)
{
	if (s->mode == MODE_NEW || sio_is_io_thread(s))
		return;
	if (s->mode == MODE_LOOP) {
		/* the loop recomputes its timeout after sio_session_process();
		 * another thread's write must wake the loop's poll */
		if (!s->dispatching)
			sio_wake(s);
		return;
	}
	if (s->wake_pending)
		return;
	/* a write can only add a deadline of now + send delay or later (a
	 * packet opened now), so while the I/O thread sleeps no longer than
	 * that, there is no need to look */
	if (s->evn > 0 || s->tx_blocked || s->close_requested ||
	    (s->io_sleep_until != 0 &&
	     (s->now_cache == 0 || s->io_sleep_until > s->now_cache + s->send_delay_ns) &&
	     sio_core_deadline(s->core) < s->io_sleep_until) ||
	    (s->input_stalled && sio_input_ok(s)))
		sio_wake(s);
}

int sio_closed_err(const sio_session *s)
{
	return s->close_err ? s->close_err : SIO_ECLOSED;
}

int sio_input_ok(const sio_session *s)
{
	if (s->rd.len >= s->rd_limit)
		return 0;
	for (size_t i = 0; i < s->nh; i++)
		if (s->h[i].m && s->h[i].m->q.len >= s->rd_limit)
			return 0;
	return 1;
}

/* ---- deferred events ---------------------------------------------------- */

static struct sio_ev *ev_push(sio_session *s, int kind)
{
	if (s->evn == s->evcap) {
		size_t nc = s->evcap ? 2 * s->evcap : 64;
		struct sio_ev *n = realloc(s->evq, nc * sizeof(*n));
		if (!n)
			return NULL;
		s->evq = n;
		s->evcap = nc;
	}
	struct sio_ev *e = &s->evq[s->evn++];
	memset(e, 0, sizeof(*e));
	e->kind = (uint8_t)kind;
	return e;
}

/* Runs queued events with the lock released, a batch at a time: the queue
 * is swapped with a spare one so that other threads may queue events (and
 * the lock is dropped once per batch, not per event). Deliveries in place in
 * the receive buffer stay valid: no input is read while dispatching. Once
 * every event ran, the plaintext they saw is wiped: the arena's copies and
 * the packets opened in place in the transport (sio_tp_rx_release). Lock
 * held on entry and exit. */
static void dispatch(sio_session *s)
{
	if (s->dispatching)
		return;
	if (s->evn == 0) {
		/* nothing refers to the last input in place any more */
		sio_tp_rx_release(&s->tp);
		return;
	}
	s->dispatching = 1;
	while (s->evn > 0) {
		struct sio_ev *q = s->evq;
		size_t n = s->evn, cap = s->evcap;
		struct sio_bq ar = s->arena;
		s->evq = s->evq2;
		s->evcap = s->evcap2;
		s->evn = 0;
		s->arena = s->arena2;
		s->arena.head = s->arena.len = 0;
		unlock(s);
		for (size_t i = 0; i < n; i++) {
			struct sio_ev *e = &q[i];
			/* a handler freed the session (same thread, so this
			 * unlocked read is ours): only completions still run */
			if (s->free_on_exit && e->kind != EV_SENT)
				continue;
			switch (e->kind) {
			case EV_MSG:
				e->u.fn(s, e->type, e->in_arena ? ar.buf + e->off : e->ptr, e->len, e->ctx);
				break;
			case EV_STATE:
				if (s->cbs.on_state)
					s->cbs.on_state(s, (sio_state)e->a, (sio_state)e->b, s->cbs.ctx);
				break;
			case EV_CONNECT:
				if (s->cbs.on_connect)
					s->cbs.on_connect(s, s->cbs.ctx);
				break;
			case EV_ERROR:
				if (s->cbs.on_error)
					s->cbs.on_error(s, e->a, (const char *)ar.buf + e->off, s->cbs.ctx);
				break;
			case EV_HERR:
				e->u.efn(s, e->type, e->a, e->ctx);
				break;
			case EV_DIAG:
				s->cbs.on_diag(s, e->a, (const char *)ar.buf + e->off, s->cbs.ctx);
				break;
			case EV_SENT:
				e->u.si->fn(e->u.si, e->u.si->err, e->u.si->ctx);
				break;
			}
		}
		lock(s);
		for (size_t i = 0; i < n; i++)
			if (q[i].kind == EV_SENT)
				sio_si_after_callback(q[i].u.si);
		sio_bq_wipe_all(&ar); /* the handlers had the messages: wipe them */
		s->evq2 = q;
		s->evcap2 = cap;
		s->arena2 = ar;
	}
	s->dispatching = 0;
	/* the messages delivered in place in the transport's receive
	 * buffer were handled too */
	sio_tp_rx_release(&s->tp);
}

/* ---- core callbacks (called inside core calls, lock held) -------------- */

static void cb_deliver(void *ctx, uint32_t type, const uint8_t *data, size_t len)
{
	sio_session *s = ctx;
	struct sio_handler *h = sio_find_handler(s, type);
	if (h && h->m) {
		sio_messenger_push(h->m, data, len);
		sio_signal(s);
		return;
	}
	sio_message_fn fn = h ? h->fn : NULL;
	void *fctx = h ? h->ctx : NULL;
	if (!fn && type == SIO_TYPE_READWRITE) {
		if (sio_bq_put(&s->rd, data, len, NULL, 0) == 0)
			sio_signal(s);
		return;
	}
	if (!fn) {
		fn = s->def_fn;
		fctx = s->def_ctx;
	}
	if (!fn) {
		s->drop_unknown_type++;
		return;
	}
	struct sio_ev *e = ev_push(s, EV_MSG);
	if (!e)
		return;
	e->type = type;
	e->u.fn = fn;
	e->ctx = fctx;
	e->len = len;
	if (s->cur_pkt && data >= s->cur_pkt && data + len <= s->cur_pkt + s->cur_len) {
		e->ptr = data; /* in place: valid until the next transport read */
	} else {
		size_t off = s->arena.len;
		if (sio_bq_put(&s->arena, data, len, NULL, 0) < 0) {
			s->evn--;
			return;
		}
		e->in_arena = 1;
		e->off = off;
	}
}

/* The session ended: queued messages not sent by now never will be. */
static void wq_fail_rest(sio_session *s)
{
	sio_wq_fail_all(s, s->close_err ? s->close_err : s->wq_err ? s->wq_err : SIO_ECANCELED);
}

static void cb_state(void *ctx, sio_state old_state, sio_state new_state)
{
	sio_session *s = ctx;
	atomic_store(&s->state, (int)new_state);
	s->reached |= 1u << new_state;
	if (new_state >= SIO_STATE_CLOSING && !s->close_err && !s->local_close)
		s->close_err = s->last_err;
	struct sio_ev *e = ev_push(s, EV_STATE);
	if (e) {
		e->a = (int)old_state;
		e->b = (int)new_state;
	}
	if (!s->connected && new_state > SIO_STATE_KEY_EXCHANGING && new_state < SIO_STATE_CLOSING) {
		s->connected = 1;
		ev_push(s, EV_CONNECT);
	}
	if (new_state >= SIO_STATE_CLOSING) {
		/* handlers' error callbacks learn that their flow ended */
		for (size_t i = 0; i < s->nh && new_state == SIO_STATE_CLOSED; i++) {
			if (!s->h[i].efn)
				continue;
			struct sio_ev *he = ev_push(s, EV_HERR);
			if (he) {
				he->type = s->h[i].type;
				he->u.efn = s->h[i].efn;
				he->ctx = s->h[i].ctx;
				he->a = sio_closed_err(s);
			}
		}
	}
	sio_signal(s); /* also wakes a reader polling the transport */
	s->sh->si_completed = 1;
	/* nothing queued will leave now (a send in flight reports its packets
	 * first: sio_flush_out fails the rest after it) */
	if (new_state == SIO_STATE_CLOSED && !s->sending)
		wq_fail_rest(s);
	sio_si_broadcast(s->sh);
}

static void cb_error(void *ctx, int err, const char *msg)
{
	sio_session *s = ctx;
	if (err != SIO_EDECRYPT)
		s->last_err = err;
	struct sio_ev *e = ev_push(s, EV_ERROR);
	if (e) {
		e->a = err;
		/* the text is copied (NUL included): the core's may be short-lived */
		const char *t = msg ? msg : sio_strerror(err);
		size_t off = s->arena.len;
		if (sio_bq_put(&s->arena, t, strlen(t) + 1, NULL, 0) == 0) {
			e->in_arena = 1;
			e->off = off;
		} else {
			s->evn--;
		}
	}
}

/* A diagnostics line (core_diag.c, or the session's own: diag() below). */
static void cb_diag(void *ctx, int level, const char *msg)
{
	sio_session *s = ctx;
	struct sio_ev *e = ev_push(s, EV_DIAG);
	if (!e)
		return;
	e->a = level;
	size_t off = s->arena.len;
	if (sio_bq_put(&s->arena, msg, strlen(msg) + 1, NULL, 0) == 0) {
		e->in_arena = 1;
		e->off = off;
	} else {
		s->evn--;
	}
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
	cb_diag(s, level, buf);
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

static int cb_remote_identity(void *ctx, const uint8_t pk[32])
{
	sio_session *s = ctx;
	if (!s->cbs.on_remote_identity)
		return 0;
	s->core_busy = 1;
	s->core_busy_thread = pthread_self();
	unlock(s);
	int r = s->cbs.on_remote_identity(s, pk, s->cbs.ctx);
	lock(s);
	s->core_busy = 0;
	sio_signal(s);
	if (r != 0)
		s->last_err = SIO_EREFUSED;
	return r;
}

static void cb_sent(void *ctx, uint64_t token, int err)
{
	sio_session *s = ctx;
	if (token & SIO_CORE_TOKEN_WM) {
		/* a packet of queued messages left: every message numbered up
		 * to this one was sent (completion per packet) */
		struct sio_shared *sh = s->sh;
		uint64_t seq = token & ~SIO_CORE_TOKEN_WM;
		if (err == 0 && seq > atomic_load_explicit(&sh->done_seq, memory_order_relaxed) &&
		    seq < atomic_load_explicit(&sh->fail_from, memory_order_relaxed)) {
			atomic_store_explicit(&sh->done_seq, seq, memory_order_release);
			sh->si_completed = 1;
		} else if (err < 0 && !s->wq_err) {
			s->wq_err = err; /* what the rest fails with (sio_wq_fail_all) */
		}
		return;
	}
	sio_send_info *si = (sio_send_info *)(uintptr_t)token;
	/* (without a callback the object may be back in the pool, even in
	 * another writer's hands, once this returns: not touched again) */
	if (sio_si_complete(si, err)) {
		struct sio_ev *e = ev_push(s, EV_SENT);
		if (e) {
			e->u.si = si;
		} else {
			si->cb_pending = 0;
			sio_si_unref_locked(si);
		}
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
		wq_fail_rest(s);
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
static int lingering(const sio_session *s, uint64_t now)
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
	    (atomic_load(&s->state) == SIO_STATE_CLOSED && !lingering(s, now)))
		return 0;
	struct rx_ctx rx = {s, now};
	int r = sio_tp_recv(&s->tp, on_packet, &rx);
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
	dispatch(s);
	for (int round = 0; allow_input && round < 8 && !s->free_on_exit; round++) {
		if (!sio_input_ok(s)) {
			s->input_stalled = 1;
			break;
		}
		s->input_stalled = 0;
		int n = read_input(s, now);
		sio_flush_out(s, now); /* answers, acknowledgements */
		dispatch(s);
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
		dispatch(s);
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
	if (lingering(s, now) && sio_core_linger_until(s->core) < d)
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

static void drain_wake(sio_session *s)
{
	uint64_t v;
	ssize_t r = read(s->wake_fd, &v, sizeof(v));
	(void)r;
	s->wake_pending = 0;
}

static void session_destroy(sio_session *s);

static void *io_thread(void *arg)
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
					  (atomic_load(&s->state) == SIO_STATE_CLOSED && !lingering(s, now))
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
		if (to == 0)
			continue;
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
		 * locked path (messages over a quarter of a packet) open
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
		session_destroy(s);
	}
	return NULL;
}

/* ---- lifecycle ---------------------------------------------------------- */

static struct sio_shared *shared_new(void)
{
	struct sio_shared *sh = calloc(1, sizeof(*sh));
	if (!sh)
		return NULL;
	pthread_mutex_init(&sh->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&sh->si_cond, &ca);
	pthread_condattr_destroy(&ca);
	atomic_store(&sh->fail_from, UINT64_MAX);
	atomic_store(&sh->wq_want, UINT64_MAX);
	sh->wake_fd = -1;
	return sh;
}

/* from="..." in the pinned set: the key is accepted only from an allowed
 * address: the source of the packet being processed, else the transport's
 * peer (a connected socket or stream: getpeername). */
static int session_admit(void *ctx, const uint8_t pk[32])
{
	sio_session *s = ctx;
	if (!sio_remote_has_rules(s->remote))
		return sio_remote_contains(s->remote, pk);
	if (s->cur_from && s->cur_fromlen)
		return sio_remote_allows(s->remote, pk, s->cur_from, s->cur_fromlen);
	struct sockaddr_storage ss;
	socklen_t l = sizeof ss;
	int fd = sio_tp_read_fd(&s->tp);
	if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &l) != 0)
		l = 0;
	return sio_remote_allows(s->remote, pk, l ? (struct sockaddr *)&ss : NULL, l);
}

/* The core signs our key-exchange messages through the identity (a local
 * key, or an external signer that may block or fail). */
static int session_sign(void *ctx, uint8_t sig[64], const uint8_t *msg, size_t len)
{
	return sio_identity_sign(ctx, sig, msg, len);
}

int sio_session_new(sio_session **out, const sio_identity *id, const sio_remote *remote,
		    const sio_transport *t, const sio_options *opts, const sio_callbacks *cbs)
{
	if (!out || !id || !t)
		return SIO_EINVAL;
	*out = NULL;
	int datagram = sio_tp_detect(t);
	if (datagram < 0)
		return datagram;
	sio_session *s = calloc(1, sizeof(*s));
	if (!s)
		return SIO_ENOMEM;
	s->wake_fd = -1;
	s->rwake_fd = -1;
	s->epfd = -1;
	s->sh = shared_new();
	if (!s->sh) {
		free(s);
		return SIO_ENOMEM;
	}
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cond, &ca);
	pthread_condattr_destroy(&ca);
	s->id = sio_identity_ref(id);
	s->remote = sio_remote_ref(remote);
	s->rd_limit = SIO_RD_LIMIT;
	if (cbs)
		s->cbs = *cbs;
	atomic_store(&s->state, SIO_STATE_NEW);
	s->reached = 1u << SIO_STATE_NEW;

	sio_core_config cfg;
	memset(&cfg, 0, sizeof(cfg));
	uint8_t idpk[SIO_PUBLIC_KEY_BYTES];
	sio_identity_public_key(id, idpk);
	cfg.ed25519_pk = idpk; /* copied by the core */
	cfg.sign = session_sign;
	cfg.admit = session_admit;
	cfg.sign_ctx = s->id;
	cfg.remote = remote;
	cfg.datagram = datagram;
	if (opts)
		cfg.opts = *opts;
	/* UNIX datagram and seqpacket sockets have no path MTU: their default
	 * packet size is the stream one (64 KiB), as the header documents */
	if (datagram && cfg.opts.max_packet_size == 0 && sio_tp_is_unix(t))
		cfg.opts.max_packet_size = SIO_DEFAULT_MAX_PACKET_STREAM;
	/* the listener prefix (9 bytes) must fit in the same datagram size */
	if (datagram && cfg.opts.listener_peer && cfg.opts.max_packet_size == 0 && !sio_tp_is_unix(t))
		cfg.opts.max_packet_size = SIO_DEFAULT_MAX_PACKET_DGRAM - (1 + SIO_LISTENER_CID_BYTES);
	cfg.wallclock_ns = wall_ns();
	sio_core_cbs ccb = {s, cb_deliver, cb_state, cb_error, cb_remote_identity, cb_sent, NULL,
			    s->cbs.on_diag ? cb_diag : NULL};
	cfg.diag_level = s->cbs.diag_level;
	int r = sio_core_new(&s->core, &cfg, &ccb);
	if (r < 0)
		goto fail;
	sio_options ro;
	int ro_ok = sio_options_resolve(&cfg.opts, datagram, &ro) == 0;
	if (ro_ok && ro.send_delay_ns > 0)
		s->send_delay_ns = (uint64_t)ro.send_delay_ns;
	r = sio_tp_open(&s->tp, t, sio_core_max_packet(s->core));
	if (r < 0)
		goto fail;
	/* a transport whose sender the kernel vouches for (a stream, a pipe, a
	 * connected UNIX socket) reaches only the peer: a wrong identity there
	 * ends the session at once (core.h). Not UDP: anyone who can forge the
	 * peer's address could end a handshake that way. */
	if (!s->tp.custom && s->tp.peer_mode == SIO_TP_PEER_CONNECTED && !cfg.opts.listener_peer &&
	    (!s->tp.datagram || s->tp.family == AF_UNIX))
		sio_core_set_exclusive(s->core);
	s->tp_open = 1;
	/* a socket that learns its peer's address never sends unprompted to
	 * an address that did not prove it hears us (docs/PROTOCOL.md §4.5) */
	if (s->tp.peer_mode == SIO_TP_PEER_LEARN)
		sio_core_set_reply_only(s->core, 1);
	if (opts && opts->listener_peer && datagram && !s->tp.custom) {
		/* talking to a sio_listener: every datagram starts with the
		 * connection id (docs/PROTOCOL.md, "Listener") */
		s->tp.tx_prefix[0] = SIO_LISTENER_MARK;
		randombytes_buf(s->tp.tx_prefix + 1, SIO_LISTENER_CID_BYTES);
		s->tp.tx_prefix_len = 1 + SIO_LISTENER_CID_BYTES;
	}
	s->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	s->rwake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (s->wake_fd < 0 || s->rwake_fd < 0) {
		r = SIO_EIO;
		goto fail;
	}
	s->sh->wake_fd = s->wake_fd;
	s->sh->sess = s;
	/* Messages that may go through the write queue: any the core takes
	 * whole (fragmentation on), up to the inline limit. Without
	 * fragmentation the core's verdict on a message's size depends on
	 * the packet size of the moment: those take the locked path, which
	 * returns it at once. */
	if (ro_ok && ro.fragmentation > 0) {
		uint32_t m = SIO_WQ_INLINE_MAX;
		if (ro.max_message_size < m)
			m = ro.max_message_size;
		/* a message filling most of a packet gains nothing from being
		 * merged: the writer seals and sends it itself, in parallel
		 * with the I/O thread, rather than handing it over */
		if (ro.max_packet_size / 4 < m)
			m = ro.max_packet_size / 4;
		s->wq_fast = (int)m;
	}
	*out = s;
	return 0;
fail:
	session_destroy(s);
	return r;
}

static int start_common(sio_session *s, int mode)
{
	if (!s)
		return SIO_EINVAL;
	lock(s);
	if (s->mode != MODE_NEW) {
		unlock(s);
		return SIO_ESTATE;
	}
	if (atomic_load(&s->state) >= SIO_STATE_CLOSING) {
		unlock(s); /* closed before it was started */
		return SIO_ECLOSED;
	}
	s->mode = mode;
	if (mode == MODE_LOOP) {
		s->epfd = epoll_create1(EPOLL_CLOEXEC);
		struct epoll_event ev = {.events = EPOLLIN, .data.fd = s->wake_fd};
		int rfd = sio_tp_read_fd(&s->tp);
		if (s->epfd < 0 || epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->wake_fd, &ev) < 0) {
			s->mode = MODE_NEW;
			unlock(s);
			return SIO_EIO;
		}
		s->ep_rfd = -1;
		if (rfd >= 0) {
			ev.data.fd = rfd;
			if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, rfd, &ev) == 0)
				s->ep_rfd = rfd;
		}
	}
	/* An external signer (ssh-agent, HSM) may take long or fail: the first
	 * signature is then made on the session's own I/O thread, never on the
	 * caller's (a listener starts its sessions from its one thread). */
	int r = 0;
	if (mode == MODE_THREAD && sio_identity_is_external(s->id))
		s->core_start_deferred = 1;
	else
		r = sio_core_start(s->core, sio_now_ns());
	if (r == 0 && mode == MODE_THREAD) {
		s->thread_started = 1;
		if (pthread_create(&s->thread, NULL, io_thread, s) != 0) {
			s->thread_started = 0;
			r = SIO_ENOMEM;
		} else {
			s->sh->io_thread = s->thread;
			s->sh->has_io_thread = 1;
			/* only an I/O thread sleeps on the queue: sio_wq_arm */
			s->sh->wq_light = sio_wq_membarrier_ok();
		}
	}
	if (mode == MODE_LOOP)
		s->sh->loop_mode = 1;
	if (r == 0 && mode == MODE_LOOP)
		sio_wake(s); /* first sio_session_process() sends the key exchange */
	unlock(s);
	return r;
}

int sio_session_start(sio_session *s)
{
	return start_common(s, MODE_THREAD);
}

int sio_session_start_loop(sio_session *s)
{
	return start_common(s, MODE_LOOP);
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
	if (!s || s->mode != MODE_LOOP)
		return SIO_ESTATE;
	lock(s);
	drain_wake(s);
	if (sio_core_enter(s) == 0)
		step(s, 1);
	if (s->free_on_exit) {
		/* a handler freed the session during this call */
		unlock(s);
		session_destroy(s);
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

sio_state sio_session_state(const sio_session *s)
{
	return s ? (sio_state)atomic_load(&((sio_session *)s)->state) : SIO_STATE_CLOSED;
}

static int reached_ok(const sio_session *s, sio_state st)
{
	unsigned mask = 0;
	if (st <= SIO_STATE_ESTABLISHED) {
		for (int x = (int)st; x <= SIO_STATE_ESTABLISHED; x++)
			mask |= 1u << x;
	} else {
		for (int x = (int)st; x <= SIO_STATE_CLOSED; x++)
			mask |= 1u << x;
	}
	return (s->reached & mask) != 0;
}

int sio_session_wait_state(sio_session *s, sio_state st, int timeout_ms)
{
	if (!s || (int)st < 0 || st > SIO_STATE_CLOSED)
		return SIO_EINVAL;
	uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : sio_now_ns() + (uint64_t)timeout_ms * 1000000u;
	lock(s);
	int r;
	for (;;) {
		if (reached_ok(s, st)) {
			r = 0;
			break;
		}
		if (atomic_load(&s->state) == SIO_STATE_CLOSED) {
			r = sio_closed_err(s);
			break;
		}
		if (s->mode == MODE_LOOP || sio_is_io_thread(s)) {
			r = SIO_EAGAIN;
			break;
		}
		if (sio_now_ns() >= deadline) {
			r = SIO_ETIMEDOUT;
			break;
		}
		sio_wait_cond(s, &s->cond, &s->waiters, deadline);
	}
	unlock(s);
	return r;
}

int sio_session_remote_key(const sio_session *s, uint8_t pk[SIO_PUBLIC_KEY_BYTES])
{
	if (!s || !pk)
		return SIO_EINVAL;
	sio_session *m = (sio_session *)s;
	lock(m);
	int r = sio_core_enter(m);
	if (r == 0)
		r = sio_core_remote_key(s->core, pk);
	unlock(m);
	return r;
}

void sio_session_stats(const sio_session *s, sio_stats *st)
{
	if (!st)
		return;
	memset(st, 0, sizeof(*st));
	if (!s)
		return;
	sio_session *m = (sio_session *)s;
	lock(m);
	if (sio_core_enter(m) == 0)
		sio_core_stats(s->core, st);
	st->drop_unknown_type += s->drop_unknown_type;
	st->drop_malformed += s->tp.drop_malformed;
	unlock(m);
}

int sio_close(sio_session *s)
{
	if (!s)
		return SIO_EINVAL;
	lock(s);
	int r = 0;
	int st = atomic_load(&s->state);
	if (st >= SIO_STATE_CLOSING) {
		unlock(s);
		return 0;
	}
	if (s->mode == MODE_NEW) {
		/* never started: nothing to tell the peer */
		s->local_close = 1;
		atomic_store(&s->state, SIO_STATE_CLOSED);
		s->reached |= 1u << SIO_STATE_CLOSED;
		sio_signal(s);
	} else if (sio_core_enter(s) != 0 || sio_is_io_thread(s)) {
		/* from a handler or from inside the core: the I/O thread (or the
		 * loop's next process call) closes right after */
		s->close_requested = 1;
		if (s->mode == MODE_LOOP)
			sio_wake(s);
	} else {
		uint64_t now = sio_now_ns();
		/* the close goes after everything written before it */
		sio_wq_drain(s, now);
		if (sio_wq_pending(s)) {
			sio_flush_out(s, now);
			sio_wq_drain(s, now);
		}
		if (sio_wq_pending(s)) {
			/* the core's ring is full: the I/O thread (or the
			 * loop) closes once the queue has gone in */
			s->close_requested = 1;
			sio_wake(s);
		} else {
			s->local_close = 1;
			r = sio_core_close(s->core, now);
			sio_flush_out(s, now);
			sio_kick(s);
			if (s->mode == MODE_THREAD)
				sio_wake(s);
		}
	}
	unlock(s);
	return r == SIO_ECLOSED ? 0 : r;
}

int sio_close_and_wait(sio_session *s, int timeout_ms)
{
	int r = sio_close(s);
	if (r < 0)
		return r;
	if (sio_is_io_thread(s) || s->mode == MODE_LOOP)
		return 0;
	r = sio_session_wait_state(s, SIO_STATE_CLOSED, timeout_ms);
	if (r == SIO_ETIMEDOUT)
		return r;
	return 0;
}

/* Frees everything; the I/O thread is gone. */
static void session_destroy(sio_session *s)
{
	if (s->core) {
		pthread_mutex_lock(&s->sh->mu);
		sio_core_free(s->core); /* fails pending tokens: SIO_ECANCELED */
		s->core = NULL;
		wq_fail_rest(s);
		sio_si_broadcast(s->sh);
		pthread_mutex_unlock(&s->sh->mu);
	}
	/* completion callbacks still queued run here, on the freeing thread */
	for (size_t i = 0; i < s->evn; i++) {
		if (s->evq[i].kind != EV_SENT)
			continue;
		sio_send_info *si = s->evq[i].u.si;
		si->fn(si, si->err, si->ctx);
		pthread_mutex_lock(&s->sh->mu);
		sio_si_after_callback(si);
		pthread_mutex_unlock(&s->sh->mu);
	}
	if (s->tp_open)
		sio_tp_close(&s->tp);
	if (s->free_hook)
		s->free_hook(s->hook_ctx);
	if (s->wake_fd >= 0)
		close(s->wake_fd);
	if (s->rwake_fd >= 0)
		close(s->rwake_fd);
	if (s->epfd >= 0)
		close(s->epfd);
	for (size_t i = 0; i < s->nh; i++)
		if (s->h[i].m)
			s->h[i].m->s = NULL;
	free(s->h);
	free(s->evq);
	free(s->evq2);
	sio_bq_wipe_all(&s->arena); /* messages of events that never ran */
	free(s->arena.buf);
	sio_bq_wipe_all(&s->arena2);
	free(s->arena2.buf);
	sio_bq_wipe_free(&s->rd); /* unread data (what was read is wiped) */
	pthread_cond_destroy(&s->cond);
	sio_shared_unref(s->sh);
	sio_identity_free(s->id);
	sio_remote_free(s->remote);
	free(s);
}

void sio_session_free(sio_session *s)
{
	if (!s)
		return;
	lock(s);
	if (sio_is_io_thread(s) || (s->mode == MODE_LOOP && s->dispatching)) {
		/* from a handler: the I/O thread (or sio_session_process) frees
		 * the session on its way out */
		s->stop = 1;
		s->free_on_exit = 1;
		unlock(s);
		return;
	}
	/* best effort: what is already due (a close acknowledgement) goes out */
	if (s->core && s->mode != MODE_NEW && sio_core_enter(s) == 0)
		sio_flush_out(s, sio_now_ns());
	/* the I/O thread answers the peer's repeated CLOSEs until the linger
	 * ends (bounded: 20 close intervals, 2.5 s by default) */
	while (s->mode == MODE_THREAD && s->thread_started && lingering(s, sio_now_ns())) {
		unlock(s);
		struct timespec ts = {0, 5000000};
		nanosleep(&ts, NULL);
		lock(s);
	}
	s->stop = 1;
	sio_wake(s);
	int joined = s->thread_started;
	unlock(s);
	if (joined)
		pthread_join(s->thread, NULL);
	session_destroy(s);
}
