/* Public session API, message part (layer 3): read/write, synchronous and
 * asynchronous messages with pooled completion objects, handlers,
 * messengers. See session_int.h for the locking rules. */
#include <sched.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "session_int.h"

/* ---- byte queues ---------------------------------------------------------- */

/* The queues hold decrypted messages (the read stream, messengers) and the
 * event arena. Invariant: bytes outside [head, len) hold no message data:
 * what is consumed is wiped at once, and so is what a move or a growth
 * leaves behind. Each byte is thus wiped once, after its last use. */
int sio_bq_put(struct sio_bq *q, const void *a, size_t alen, const void *b, size_t blen)
{
	size_t need = alen + blen;
	if (q->head == q->len)
		q->head = q->len = 0;
	if (q->cap - q->len < need) {
		size_t used = q->len - q->head;
		if (q->head > 0 && q->cap - used >= need && used < q->cap / 2) {
			memmove(q->buf, q->buf + q->head, used);
			/* what the move did not overwrite: [max(used, head), len) */
			size_t from = used > q->head ? used : q->head;
			sodium_memzero(q->buf + from, q->len - from);
		} else {
			size_t nc = q->cap ? q->cap : 4096;
			while (nc < used + need)
				nc *= 2;
			uint8_t *n = malloc(nc); /* not realloc: the old block is wiped first */
			if (!n)
				return SIO_ENOMEM;
			if (used)
				memcpy(n, q->buf + q->head, used);
			if (q->buf)
				sodium_memzero(q->buf + q->head, used);
			free(q->buf);
			q->buf = n;
			q->cap = nc;
		}
		q->len = used;
		q->head = 0;
	}
	if (alen)
		memcpy(q->buf + q->len, a, alen);
	if (blen)
		memcpy(q->buf + q->len + alen, b, blen);
	q->len += need;
	return 0;
}

void sio_bq_wipe_free(struct sio_bq *q)
{
	if (q->buf)
		sodium_memzero(q->buf + q->head, q->len - q->head);
	free(q->buf);
	memset(q, 0, sizeof(*q));
}

/* The arena after its events ran: everything in it was used. */
void sio_bq_wipe_all(struct sio_bq *q)
{
	if (q->len)
		sodium_memzero(q->buf, q->len);
	q->head = q->len = 0;
}

static size_t bq_get(struct sio_bq *q, void *out, size_t n)
{
	size_t avail = q->len - q->head;
	if (n > avail)
		n = avail;
	if (n && out)
		memcpy(out, q->buf + q->head, n);
	if (n)
		sodium_memzero(q->buf + q->head, n); /* the reader has its copy */
	q->head += n;
	if (q->head == q->len)
		q->head = q->len = 0;
	return n;
}

/* ---- completion objects ------------------------------------------------- */

#define SI_CHUNK 64
struct si_chunk {
	struct si_chunk *next;
	sio_send_info items[SI_CHUNK];
};

static void shared_free(struct sio_shared *sh)
{
	struct si_chunk *c = sh->chunks;
	while (c) {
		struct si_chunk *n = c->next;
		free(c);
		c = n;
	}
	pthread_cond_destroy(&sh->si_cond);
	pthread_mutex_destroy(&sh->mu);
	free(sh);
}

/* Lock held: moves released objects back to the free list. */
static void drain_returned(struct sio_shared *sh)
{
	sio_send_info *l = atomic_exchange(&sh->returned, NULL);
	while (l) {
		sio_send_info *n = l->next;
		l->next = sh->free;
		sh->free = l;
		sh->live--;
		l = n;
	}
}

void sio_shared_unref(struct sio_shared *sh)
{
	pthread_mutex_lock(&sh->mu);
	atomic_store(&sh->session_alive, 0);
	/* a releaser that saw the session alive is pushing: let it finish
	 * (a few instructions), then everything returned is in the stack */
	while (atomic_load(&sh->releasing))
		sched_yield();
	drain_returned(sh);
	int dead = sh->live == 0;
	pthread_mutex_unlock(&sh->mu);
	if (dead)
		shared_free(sh);
}

/* Lock held. No allocation once the pool has grown to the working set. */
sio_send_info *sio_si_get(sio_session *s)
{
	struct sio_shared *sh = s->sh;
	if (!sh->free)
		drain_returned(sh);
	if (!sh->free) {
		struct si_chunk *c = aligned_alloc(64, sizeof(*c));
		if (!c)
			return NULL;
		memset(c, 0, sizeof(*c));
		c->next = sh->chunks;
		sh->chunks = c;
		for (int i = SI_CHUNK - 1; i >= 0; i--) {
			c->items[i].sh = sh;
			c->items[i].next = sh->free;
			sh->free = &c->items[i];
		}
	}
	sio_send_info *si = sh->free;
	sh->free = si->next;
	sh->live++;
	si->next = NULL;
	si->s = s;
	si->fn = NULL;
	si->ctx = NULL;
	si->err = 0;
	atomic_store_explicit(&si->done, 0, memory_order_relaxed);
	atomic_store_explicit(&si->refs, 2, memory_order_relaxed);
	si->cb_pending = 0;
	return si;
}

static void si_put(sio_send_info *si)
{
	struct sio_shared *sh = si->sh;
	si->s = NULL;
	si->next = sh->free;
	sh->free = si;
	sh->live--;
}

void sio_si_unref_locked(sio_send_info *si)
{
	if (atomic_fetch_sub(&si->refs, 1) == 1)
		si_put(si);
}

/* Lock held (the core reported the token). */
void sio_si_complete(sio_send_info *si, int err)
{
	struct sio_shared *sh = si->sh;
	si->err = err;
	atomic_store_explicit(&si->done, 1, memory_order_release);
	if (si->fn)
		si->cb_pending = 1; /* the caller queues the callback; ref kept */
	else
		sio_si_unref_locked(si);
	sh->si_completed = 1; /* waiters are woken once per batch: sio_si_broadcast */
}

void sio_si_broadcast(struct sio_shared *sh)
{
	if (sh->si_completed && sh->si_waiters)
		pthread_cond_broadcast(&sh->si_cond);
	sh->si_completed = 0;
}

void sio_si_after_callback(sio_send_info *si)
{
	si->cb_pending = 0;
	sio_si_unref_locked(si);
}

/* The core never took the token. Lock held. */
static void si_abort(sio_send_info *si)
{
	atomic_store(&si->refs, 0);
	si_put(si);
}

static void sh_wait(struct sio_shared *sh, uint64_t deadline)
{
	sh->si_waiters++;
	if (deadline == UINT64_MAX) {
		pthread_cond_wait(&sh->si_cond, &sh->mu);
	} else {
		struct timespec ts = {(time_t)(deadline / 1000000000u), (long)(deadline % 1000000000u)};
		pthread_cond_timedwait(&sh->si_cond, &sh->mu, &ts);
	}
	sh->si_waiters--;
}

static uint64_t deadline_of(int timeout_ms)
{
	return timeout_ms < 0 ? UINT64_MAX : sio_now_ns() + (uint64_t)timeout_ms * 1000000u;
}

static int si_wait_locked(sio_send_info *si, int timeout_ms)
{
	struct sio_shared *sh = si->sh;
	uint64_t deadline = deadline_of(timeout_ms);
	while (!atomic_load_explicit(&si->done, memory_order_acquire)) {
		sio_session *s = si->s;
		if (s && (s->mode == MODE_LOOP || sio_is_io_thread(s)))
			return timeout_ms == 0 ? SIO_ETIMEDOUT : SIO_EAGAIN;
		if (timeout_ms == 0 || sio_now_ns() >= deadline)
			return SIO_ETIMEDOUT;
		sh_wait(sh, deadline);
	}
	return si->err;
}

int sio_send_info_wait(sio_send_info *si, int timeout_ms)
{
	if (!si)
		return SIO_EINVAL;
	if (atomic_load_explicit(&si->done, memory_order_acquire))
		return si->err;
	pthread_mutex_lock(&si->sh->mu);
	int r = si_wait_locked(si, timeout_ms);
	pthread_mutex_unlock(&si->sh->mu);
	return r;
}

int sio_send_info_send_now_and_wait(sio_send_info *si, int timeout_ms)
{
	if (!si)
		return SIO_EINVAL;
	struct sio_shared *sh = si->sh;
	pthread_mutex_lock(&sh->mu);
	sio_session *s = si->s;
	if (!atomic_load(&si->done) && s && s->core && sio_core_enter(s) == 0) {
		uint64_t now = sio_now_ns();
		sio_core_flush(s->core, now);
		sio_flush_out(s, now);
		sio_kick(s);
	}
	int r = si_wait_locked(si, timeout_ms);
	pthread_mutex_unlock(&sh->mu);
	return r;
}

int sio_send_info_done(const sio_send_info *si)
{
	return si && atomic_load_explicit(&((sio_send_info *)si)->done, memory_order_acquire);
}

int sio_send_info_err(const sio_send_info *si)
{
	if (!si)
		return SIO_EINVAL;
	if (!atomic_load_explicit(&((sio_send_info *)si)->done, memory_order_acquire))
		return 0;
	return si->err;
}

void sio_send_info_release(sio_send_info *si)
{
	if (!si)
		return;
	struct sio_shared *sh = si->sh;
	if (atomic_fetch_sub(&si->refs, 1) != 1)
		return; /* the session still holds it: it returns it later */
	/* Last reference. While the session lives, push it back without its
	 * lock (no contention with writers and the I/O thread). */
	atomic_fetch_add(&sh->releasing, 1);
	if (atomic_load(&sh->session_alive)) {
		si->s = NULL;
		sio_send_info *head = atomic_load(&sh->returned);
		do
			si->next = head;
		while (!atomic_compare_exchange_weak(&sh->returned, &head, si));
		atomic_fetch_sub(&sh->releasing, 1);
		return;
	}
	atomic_fetch_sub(&sh->releasing, 1);
	pthread_mutex_lock(&sh->mu);
	si_put(si);
	int dead = !atomic_load(&sh->session_alive) && sh->live == 0;
	pthread_mutex_unlock(&sh->mu);
	if (dead)
		shared_free(sh);
}

/* ---- writing ------------------------------------------------------------ */

static int check_type(uint32_t type)
{
	return type <= SIO_CHANNEL_MAX || type == SIO_TYPE_READWRITE;
}

/* Queues one message into the core, sending directly when the ring is full.
 * Blocks for room only on threads allowed to block. Lock held. */
static int queue_write(sio_session *s, uint32_t type, const void *data, size_t len,
		       sio_send_info *si, int may_block)
{
	uint64_t now = sio_now_cached(s);
	uint64_t token = si ? (uint64_t)(uintptr_t)si : 0;
	for (;;) {
		if (atomic_load(&s->state) >= SIO_STATE_CLOSING)
			return sio_closed_err(s);
		int r = sio_core_write(s->core, now, type, data, len, token);
		if (r != SIO_EAGAIN)
			return r;
		/* ring full: push out what can go now, then retry */
		sio_core_flush(s->core, now);
		sio_flush_out(s, now);
		r = sio_core_write(s->core, now, type, data, len, token);
		if (r != SIO_EAGAIN || !may_block)
			return r;
		sio_wake(s);
		sio_wait_cond(s, &s->cond, &s->waiters, sio_now_ns() + 100000000u);
		int e = sio_core_enter(s);
		if (e)
			return e;
		now = sio_now_ns();
	}
}

int sio_write_message(sio_session *s, uint32_t type, const void *data, size_t len)
{
	if (!s || (!data && len) || !check_type(type))
		return SIO_EINVAL;
	pthread_mutex_lock(&s->sh->mu);
	int r = sio_core_enter(s);
	if (r) {
		pthread_mutex_unlock(&s->sh->mu);
		return r;
	}
	int nowait = s->mode == MODE_LOOP || sio_is_io_thread(s);
	sio_send_info *si = NULL;
	if (!nowait) {
		si = sio_si_get(s);
		if (!si) {
			pthread_mutex_unlock(&s->sh->mu);
			return SIO_ENOMEM;
		}
	}
	r = queue_write(s, type, data, len, si, !nowait);
	if (r < 0) {
		if (si)
			si_abort(si);
		pthread_mutex_unlock(&s->sh->mu);
		return r;
	}
	uint64_t now = sio_now_ns();
	if (si) {
		/* synchronous: no reason to wait for the merge delay; send from
		 * this thread rather than handing over to the I/O thread */
		sio_core_flush(s->core, now);
		sio_flush_out(s, now);
		while (!atomic_load_explicit(&si->done, memory_order_acquire)) {
			sio_kick(s);
			sh_wait(s->sh, UINT64_MAX);
		}
		r = si->err;
		sio_si_unref_locked(si); /* our reference; the session's went */
	}
	sio_kick(s);
	pthread_mutex_unlock(&s->sh->mu);
	return r;
}

ssize_t sio_write(sio_session *s, const void *buf, size_t len)
{
	int r = sio_write_message(s, SIO_TYPE_READWRITE, buf, len);
	return r < 0 ? r : (ssize_t)len;
}

sio_send_info *sio_write_message_async(sio_session *s, uint32_t type, const void *data, size_t len,
				       sio_send_done_fn done, void *ctx, int *err)
{
	int e = 0;
	sio_send_info *si = NULL;
	if (!s || (!data && len) || !check_type(type)) {
		e = SIO_EINVAL;
		goto out;
	}
	pthread_mutex_lock(&s->sh->mu);
	e = sio_core_enter(s);
	if (e == 0) {
		si = sio_si_get(s);
		if (!si)
			e = SIO_ENOMEM;
	}
	if (si) {
		si->fn = done;
		si->ctx = ctx;
		e = queue_write(s, type, data, len, si, s->mode == MODE_THREAD && !sio_is_io_thread(s));
		if (e < 0) {
			si_abort(si);
			si = NULL;
		} else {
			sio_kick(s);
		}
	}
	pthread_mutex_unlock(&s->sh->mu);
out:
	if (err)
		*err = e;
	return si;
}

/* ---- reading ------------------------------------------------------------ */

/* The session ended: 0 after a graceful close, else the error. */
static int end_code(const sio_session *s)
{
	return s->close_err;
}

ssize_t sio_read_timeout(sio_session *s, void *buf, size_t len, int timeout_ms)
{
	if (!s || (!buf && len))
		return SIO_EINVAL;
	uint64_t deadline = deadline_of(timeout_ms);
	pthread_mutex_lock(&s->sh->mu);
	ssize_t r;
	for (;;) {
		if (s->rd.len > s->rd.head) {
			r = (ssize_t)bq_get(&s->rd, buf, len);
			if (s->input_stalled)
				sio_kick(s);
			break;
		}
		if (atomic_load(&s->state) == SIO_STATE_CLOSED) {
			r = end_code(s);
			break;
		}
		if (s->mode == MODE_LOOP || sio_is_io_thread(s)) {
			r = SIO_EAGAIN;
			break;
		}
		if (timeout_ms == 0) {
			r = SIO_EAGAIN;
			break;
		}
		if (sio_now_ns() >= deadline) {
			r = SIO_ETIMEDOUT;
			break;
		}
		sio_reader_wait(s, deadline);
	}
	pthread_mutex_unlock(&s->sh->mu);
	return r;
}

ssize_t sio_read(sio_session *s, void *buf, size_t len)
{
	return sio_read_timeout(s, buf, len, -1);
}

/* ---- handlers ----------------------------------------------------------- */

struct sio_handler *sio_find_handler(sio_session *s, uint32_t type)
{
	for (size_t i = 0; i < s->nh; i++)
		if (s->h[i].type == type)
			return &s->h[i];
	return NULL;
}

static int handler_set(sio_session *s, uint32_t type, sio_message_fn fn, sio_handler_error_fn efn,
		       void *ctx, sio_messenger *m)
{
	struct sio_handler *h = sio_find_handler(s, type);
	if (h && h->m && !m)
		return SIO_ESTATE; /* a messenger owns this type */
	if (!fn && !m) {
		if (h) {
			size_t i = (size_t)(h - s->h);
			memmove(h, h + 1, (s->nh - i - 1) * sizeof(*h));
			s->nh--;
		}
		return 0;
	}
	if (!h) {
		if (s->nh == s->caph) {
			size_t nc = s->caph ? 2 * s->caph : 8;
			struct sio_handler *n = realloc(s->h, nc * sizeof(*n));
			if (!n)
				return SIO_ENOMEM;
			s->h = n;
			s->caph = nc;
		}
		h = &s->h[s->nh++];
	}
	h->type = type;
	h->fn = fn;
	h->efn = efn;
	h->ctx = ctx;
	h->m = m;
	return 0;
}

int sio_set_handler(sio_session *s, uint32_t type, sio_message_fn on_message,
		    sio_handler_error_fn on_error, void *ctx)
{
	if (!s || !check_type(type))
		return SIO_EINVAL;
	pthread_mutex_lock(&s->sh->mu);
	int r = handler_set(s, type, on_message, on_error, ctx, NULL);
	pthread_mutex_unlock(&s->sh->mu);
	return r;
}

int sio_set_default_handler(sio_session *s, sio_message_fn on_message, void *ctx)
{
	if (!s)
		return SIO_EINVAL;
	pthread_mutex_lock(&s->sh->mu);
	s->def_fn = on_message;
	s->def_ctx = ctx;
	pthread_mutex_unlock(&s->sh->mu);
	return 0;
}

/* ---- messengers ----------------------------------------------------------- */

void sio_messenger_push(sio_messenger *m, const uint8_t *data, size_t len)
{
	uint32_t l = (uint32_t)len;
	if (sio_bq_put(&m->q, &l, sizeof(l), data, len) < 0)
		return;
	m->msgs++;
	m->in_msgs++;
	m->in_bytes += len;
}

int sio_messenger_open(sio_session *s, uint32_t type, sio_messenger **out)
{
	if (!s || !out || !check_type(type))
		return SIO_EINVAL;
	*out = NULL;
	sio_messenger *m = calloc(1, sizeof(*m));
	if (!m)
		return SIO_ENOMEM;
	m->s = s;
	m->type = type;
	pthread_mutex_lock(&s->sh->mu);
	struct sio_handler *h = sio_find_handler(s, type);
	int r = h && h->m ? SIO_ESTATE : handler_set(s, type, NULL, NULL, NULL, m);
	pthread_mutex_unlock(&s->sh->mu);
	if (r < 0) {
		free(m);
		return r;
	}
	*out = m;
	return 0;
}

ssize_t sio_messenger_read(sio_messenger *m, void *buf, size_t len, size_t *full, int timeout_ms)
{
	if (!m || (!buf && len))
		return SIO_EINVAL;
	sio_session *s = m->s;
	if (!s)
		return SIO_ECLOSED;
	uint64_t deadline = deadline_of(timeout_ms);
	pthread_mutex_lock(&s->sh->mu);
	ssize_t r;
	for (;;) {
		if (!m->paused && m->msgs > 0) {
			uint32_t l;
			bq_get(&m->q, &l, sizeof(l));
			size_t n = l < len ? l : len;
			bq_get(&m->q, buf, n);
			bq_get(&m->q, NULL, l - n);
			m->msgs--;
			if (full)
				*full = l;
			r = (ssize_t)n;
			if (s->input_stalled)
				sio_kick(s);
			break;
		}
		if (atomic_load(&s->state) == SIO_STATE_CLOSED) {
			r = end_code(s);
			break;
		}
		if (s->mode == MODE_LOOP || sio_is_io_thread(s) || timeout_ms == 0) {
			r = SIO_EAGAIN;
			break;
		}
		if (sio_now_ns() >= deadline) {
			r = SIO_ETIMEDOUT;
			break;
		}
		sio_wait_cond(s, &s->cond, &s->waiters, deadline);
	}
	pthread_mutex_unlock(&s->sh->mu);
	return r;
}

int sio_messenger_write(sio_messenger *m, const void *data, size_t len)
{
	if (!m)
		return SIO_EINVAL;
	sio_session *s = m->s;
	if (!s)
		return SIO_ECLOSED;
	int r = sio_write_message(s, m->type, data, len);
	if (r == 0) {
		pthread_mutex_lock(&s->sh->mu);
		m->out_msgs++;
		m->out_bytes += len;
		pthread_mutex_unlock(&s->sh->mu);
	}
	return r;
}

void sio_messenger_pause(sio_messenger *m)
{
	if (!m || !m->s)
		return;
	pthread_mutex_lock(&m->s->sh->mu);
	m->paused = 1;
	pthread_mutex_unlock(&m->s->sh->mu);
}

void sio_messenger_resume(sio_messenger *m)
{
	if (!m || !m->s)
		return;
	sio_session *s = m->s;
	pthread_mutex_lock(&s->sh->mu);
	m->paused = 0;
	sio_signal(s);
	pthread_mutex_unlock(&s->sh->mu);
}

void sio_messenger_counts(const sio_messenger *m, uint64_t *msgs_in, uint64_t *bytes_in,
			  uint64_t *msgs_out, uint64_t *bytes_out)
{
	if (!m)
		return;
	sio_session *s = m->s;
	if (s)
		pthread_mutex_lock(&s->sh->mu);
	if (msgs_in)
		*msgs_in = m->in_msgs;
	if (bytes_in)
		*bytes_in = m->in_bytes;
	if (msgs_out)
		*msgs_out = m->out_msgs;
	if (bytes_out)
		*bytes_out = m->out_bytes;
	if (s)
		pthread_mutex_unlock(&s->sh->mu);
}

void sio_messenger_close(sio_messenger *m)
{
	if (!m)
		return;
	sio_session *s = m->s;
	if (s) {
		pthread_mutex_lock(&s->sh->mu);
		struct sio_handler *h = sio_find_handler(s, m->type);
		if (h && h->m == m) {
			h->m = NULL;
			handler_set(s, m->type, NULL, NULL, NULL, NULL);
		}
		pthread_mutex_unlock(&s->sh->mu);
	}
	sio_bq_wipe_free(&m->q); /* messages never read */
	free(m);
}
