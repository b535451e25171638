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

_Thread_local const void *sio_drv_self;

int sio_is_io_thread(const sio_session *s)
{
	if (s->mode == MODE_DRIVEN)
		return sio_drv_self && sio_drv_self == s->drv->pool;
	return s->mode == MODE_THREAD && s->thread_started && pthread_equal(pthread_self(), s->thread);
}

int sio_nonblocking(const sio_session *s)
{
	return s->mode == MODE_LOOP || (s->mode == MODE_DRIVEN && s->drv->loop) || sio_is_io_thread(s);
}

int sio_threaded_caller(const sio_session *s)
{
	return (s->mode == MODE_THREAD || (s->mode == MODE_DRIVEN && !s->drv->loop)) && !sio_is_io_thread(s);
}

/* A driver thread is running S right now (lock held): it looks at what is
 * due before it lets go of S. */
static int drv_running_here(const sio_session *s)
{
	return s->mode == MODE_DRIVEN && s->drv_active && pthread_equal(s->drv_thread, pthread_self());
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
	if (s->mode == MODE_DRIVEN) {
		s->drv->schedule(s->drv, s);
		return;
	}
	if (s->wake_pending || s->wake_fd < 0)
		return;
	uint64_t one = 1;
	s->wake_pending = 1;
	ssize_t r = write(s->wake_fd, &one, sizeof(one));
	(void)r;
}

void sio_kick(sio_session *s)
{
	if (s->mode == MODE_DRIVEN) {
		/* the driver's thread computes the deadline again when it is
		 * done with S; anyone else tells it when S has something to do
		 * sooner than the driver expects */
		if (drv_running_here(s))
			return;
		if (s->evn > 0 || s->tx_blocked || s->close_requested ||
		    sio_core_deadline(s->core) < s->drv_deadline || (s->input_stalled && sio_input_ok(s)))
			sio_wake(s);
		return;
	}
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

/* Entries an event queue starts with (most sessions are idle: a few state
 * changes); it doubles when busy. */
#define SIO_EVQ_FIRST 8

static struct sio_ev *ev_push(sio_session *s, int kind)
{
	if (s->evn == s->evcap) {
		size_t nc = s->evcap ? 2 * s->evcap : SIO_EVQ_FIRST;
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

/* Room for one more message record; 0 or -1 (out of memory). */
static int mq_room(sio_session *s)
{
	if (s->mqn < s->mqcap)
		return 0;
	size_t nc = s->mqcap ? 2 * s->mqcap : 64;
	struct sio_mrec *n = realloc(s->mq, nc * sizeof(*n));
	if (!n)
		return -1;
	s->mq = n;
	s->mqcap = nc;
	return 0;
}

/* Runs queued events with the lock released, a batch at a time: the queue
 * (with its message records and arena) is swapped with a spare one so that
 * other threads may queue events, and the lock is dropped once per batch,
 * not per event. An EV_MSG event hands a run of messages to one handler in
 * a loop. Deliveries in place in the receive buffer stay valid: no input is
 * read while dispatching. Once every event ran, the plaintext they saw is
 * wiped: the arena's copies and the packets opened in place in the
 * transport (sio_tp_rx_release). Lock held on entry and exit. */
void sio_dispatch(sio_session *s)
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
		struct sio_mrec *mq = s->mq;
		size_t mcap = s->mqcap;
		struct sio_bq ar = s->arena;
		s->evq = s->evq2;
		s->evcap = s->evcap2;
		s->evn = 0;
		s->mq = s->mq2;
		s->mqcap = s->mqcap2;
		s->mqn = 0;
		s->rx_cev = 0;
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
			case EV_MSG: {
				const struct sio_mrec *m = mq + e->off, *end = m + e->len;
				sio_message_fn fn = e->u.fn;
				void *ctx = e->ctx;
				for (; m < end; m++) {
					fn(s, m->type, m->ptr ? m->ptr : ar.buf + m->off, m->len, ctx);
					if (s->free_on_exit)
						break; /* the rest is never delivered */
				}
				break;
			}
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
		s->mq2 = mq;
		s->mqcap2 = mcap;
		s->arena2 = ar;
	}
	s->dispatching = 0;
	/* the messages delivered in place in the transport's receive
	 * buffer were handled too */
	sio_tp_rx_release(&s->tp);
}

/* ---- core callbacks (called inside core calls, lock held) -------------- */

/* A message for the program. The read stream and messengers take a copy
 * now (their readers are woken once per batch of input: rx_signal); a
 * handler's message is recorded for dispatch, in place when it lies in the
 * packet being opened, else copied into the arena. Consecutive messages for
 * the same handler join one EV_MSG event. */
static void cb_deliver(void *ctx, uint32_t type, const uint8_t *data, size_t len)
{
	sio_session *s = ctx;
	struct sio_ev *e;
	if (s->rx_cev && s->rx_cev == s->evn && type == s->rx_ctype) {
		e = &s->evq[s->evn - 1]; /* same handler as the last message */
		goto record;
	}
	struct sio_handler *h = sio_find_handler(s, type);
	if (h && h->m) {
		sio_messenger_push(h->m, data, len);
		s->rx_signal = 1;
		return;
	}
	sio_message_fn fn = h ? h->fn : NULL;
	void *fctx = h ? h->ctx : NULL;
	if (!fn && type == SIO_TYPE_READWRITE) {
		if (sio_bq_put(&s->rd, data, len, NULL, 0) == 0)
			s->rx_signal = 1;
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
	e = s->evn ? &s->evq[s->evn - 1] : NULL;
	if (!e || e->kind != EV_MSG || e->u.fn != fn || e->ctx != fctx) {
		if (!(e = ev_push(s, EV_MSG)))
			return;
		e->u.fn = fn;
		e->ctx = fctx;
		e->off = s->mqn;
	}
	s->rx_ctype = type;
	s->rx_cev = s->evn;
record:
	if (mq_room(s) < 0)
		return;
	struct sio_mrec *m = &s->mq[s->mqn];
	if (s->cur_pkt && data >= s->cur_pkt && data + len <= s->cur_pkt + s->cur_len) {
		m->ptr = data; /* in place: valid until the next transport read */
		m->off = 0;
	} else {
		m->ptr = NULL;
		m->off = s->arena.len;
		if (sio_bq_put(&s->arena, data, len, NULL, 0) < 0)
			return;
	}
	m->len = (uint32_t)len;
	m->type = type;
	s->mqn++;
	e->len++;
}

/* After a batch of input: one wake-up for the readers of the read stream
 * and of messengers, whatever the number of messages it brought. */
void sio_rx_signal(sio_session *s)
{
	if (s->rx_signal) {
		s->rx_signal = 0;
		sio_signal(s);
	}
}

/* The session ended: queued messages not sent by now never will be. */
void sio_wq_fail_rest(sio_session *s)
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
		sio_wq_fail_rest(s);
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
void sio_diag_push(void *ctx, int level, const char *msg)
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

/* The core went idle and returned its buffers: so does a custom transport
 * (a listener peer's receive slot). The last input may still be unreleased
 * but nothing refers to it unless events are queued or being run (then
 * the slot stays until the next idle period). Lock held. */
static void cb_trimmed(void *ctx)
{
	sio_session *s = ctx;
	if (!s->tp_open || s->dispatching || s->evn > 0)
		return;
	sio_tp_rx_release(&s->tp);
	sio_tp_trim(&s->tp);
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
	sio_si_finish(s, (sio_send_info *)(uintptr_t)token, err);
}

void sio_si_finish(sio_session *s, sio_send_info *si, int err)
{
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
	/* Both event queues now, next to the session, rather than amid the
	 * buffers of its handshake (those are freed once it is idle; what
	 * stays between them keeps heap pages resident). NULL is fine: the
	 * first event allocates. */
	if ((s->evq = malloc(SIO_EVQ_FIRST * sizeof(*s->evq))))
		s->evcap = SIO_EVQ_FIRST;
	if ((s->evq2 = malloc(SIO_EVQ_FIRST * sizeof(*s->evq2))))
		s->evcap2 = SIO_EVQ_FIRST;
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
			    s->cbs.on_diag ? sio_diag_push : NULL, cb_trimmed};
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
	s->sh->sess = s;
	/* Messages the write queue takes lock-free (WQ_FAST / WQ_OBJ): any
	 * the core takes whole (fragmentation on), up to the inline limit.
	 * Without fragmentation the core's verdict on a message's size
	 * depends on the packet size of the moment: those take the locked
	 * way (WQ_BORROWED), which returns it at once. */
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
	sio_session_destroy(s);
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
	/* the descriptors a session of its own needs: where others wake its
	 * I/O thread (or its loop), and where they wake a reader polling the
	 * transport (a driven session has none) */
	s->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	s->rwake_fd = mode == MODE_THREAD ? eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC) : -1;
	if (s->wake_fd < 0 || (mode == MODE_THREAD && s->rwake_fd < 0)) {
		if (s->wake_fd >= 0)
			close(s->wake_fd);
		s->wake_fd = -1;
		unlock(s);
		return SIO_EIO;
	}
	s->sh->wake_fd = s->wake_fd;
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
		if (pthread_create(&s->thread, NULL, sio_io_thread, s) != 0) {
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

/* A driven session whose identity signs through an external signer (an
 * ssh-agent may take long or hang): its first signature is made here, on
 * a thread of its own, so that it never holds up the driver's other
 * sessions. The core is marked busy meanwhile: the driver queues its input
 * and does not run it (sio_session_run, sio_session_can_input). */
static void *deferred_start(void *arg)
{
	sio_session *s = arg;
	lock(s);
	s->core_busy = 1;
	s->core_busy_thread = pthread_self();
	unlock(s);
	(void)sio_core_start(s->core, sio_now_ns()); /* a failure closes it */
	lock(s);
	s->core_busy = 0;
	s->core_start_deferred = 0;
	sio_signal(s);
	sio_wake(s); /* the driver takes over */
	unlock(s);
	return NULL;
}

int sio_session_start_driven(sio_session *s, struct sio_drv *d, void *ctx)
{
	lock(s);
	if (s->mode != MODE_NEW) {
		unlock(s);
		return SIO_ESTATE;
	}
	s->mode = MODE_DRIVEN;
	s->drv = d;
	s->drv_ctx = ctx;
	s->drv_deadline = UINT64_MAX;
	s->sh->drv_pool = d->pool;
	s->sh->loop_mode = d->loop;
	int r = 0;
	if (sio_identity_is_external(s->id)) {
		pthread_t t;
		pthread_attr_t a;
		pthread_attr_init(&a);
		pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
		s->core_start_deferred = 1;
		if (pthread_create(&t, &a, deferred_start, s) != 0) {
			s->core_start_deferred = 0;
			r = SIO_ENOMEM;
		}
		pthread_attr_destroy(&a);
	} else {
		r = sio_core_start(s->core, sio_now_ns());
	}
	unlock(s);
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
		if (sio_nonblocking(s)) {
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
		/* what was written will never go */
		sio_core_discard(s->core, SIO_ECLOSED);
		sio_wq_fail_all(s, SIO_ECLOSED);
		sio_signal(s);
	} else if (sio_core_enter(s) != 0 || sio_is_io_thread(s)) {
		/* from a handler or from inside the core: the I/O thread (or the
		 * loop's next process call) closes right after */
		s->close_requested = 1;
		if (s->mode == MODE_LOOP || (s->mode == MODE_DRIVEN && !drv_running_here(s)))
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
			if (s->mode == MODE_THREAD || s->mode == MODE_DRIVEN)
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
	if (sio_nonblocking(s))
		return 0;
	r = sio_session_wait_state(s, SIO_STATE_CLOSED, timeout_ms);
	if (r == SIO_ETIMEDOUT)
		return r;
	return 0;
}

/* Frees everything; the I/O thread is gone. */
void sio_session_destroy(sio_session *s)
{
	if (s->core) {
		pthread_mutex_lock(&s->sh->mu);
		sio_core_free(s->core); /* fails pending tokens: SIO_ECANCELED */
		s->core = NULL;
		sio_wq_fail_rest(s);
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
	free(s->mq);
	free(s->mq2);
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
	if ((s->mode == MODE_THREAD && sio_is_io_thread(s)) || (s->mode == MODE_LOOP && s->dispatching) ||
	    drv_running_here(s)) {
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
	while (s->mode == MODE_THREAD && s->thread_started && sio_lingering(s, sio_now_ns())) {
		unlock(s);
		struct timespec ts = {0, 5000000};
		nanosleep(&ts, NULL);
		lock(s);
	}
	s->stop = 1;
	if (s->mode == MODE_DRIVEN) {
		/* the driver lets go of it first */
		unlock(s);
		s->drv->release(s->drv, s);
		sio_session_destroy(s);
		return;
	}
	sio_wake(s);
	int joined = s->thread_started;
	unlock(s);
	if (joined)
		pthread_join(s->thread, NULL);
	sio_session_destroy(s);
}
