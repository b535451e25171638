/* Public session API, write part (layer 3): the completion objects (a
 * per-session pool), the write queue every message goes through
 * (docs/ARCHITECTURE.md, "Write path"), and the write calls. See
 * session_int.h for the locking rules. */
#include <sched.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/membarrier.h>

#include "session_int.h"

/* ---- completion objects ------------------------------------------------- */

/* Pool chunks: 63 objects and a bitmap of the free ones. A release sets
 * its bit (one atomic OR, on a line that only moves to the writer when it
 * takes the whole bitmap, once per chunk); a writer takes a chunk's bits at
 * once and hands objects out in address order, so the next one's line can
 * be fetched ahead. Bit 63 says the session is gone: a release that finds it
 * set counts itself down under sh->mu, and the last one frees sh. */
#define SI_CHUNK 63
#define SI_GONE (UINT64_C(1) << 63)
#define SI_ALL ((UINT64_C(1) << SI_CHUNK) - 1)
struct si_chunk {
	_Alignas(64) _Atomic uint64_t freemask;
	struct si_chunk *next;
	sio_send_info items[SI_CHUNK];
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#endif
}

/* The writers' lock (session_int.h): held for a few dozen instructions and
 * a copy of at most SIO_WQ_INLINE_MAX bytes, so it spins, then yields. One
 * atomic exchange when uncontended, on a line only writers touch. */
static void plock(struct sio_shared *sh)
{
	if (!atomic_exchange_explicit(&sh->plock, 1, memory_order_acquire))
		return;
	for (unsigned n = 0;; n++) {
		if (!atomic_load_explicit(&sh->plock, memory_order_relaxed) &&
		    !atomic_exchange_explicit(&sh->plock, 1, memory_order_acquire))
			return;
		if (n < 100)
			cpu_relax();
		else
			sched_yield();
	}
}

static void punlock(struct sio_shared *sh)
{
	atomic_store_explicit(&sh->plock, 0, memory_order_release);
}

/* Writers' critical section. A session's writes usually come from one
 * thread: the lock is biased to the first thread that writes once the I/O
 * thread exists (wq_light: membarrier() is available), and that thread
 * enters by storing win_cs and checking the bias, with only a compiler
 * barrier between: a thread that revokes the bias (any other writer, for
 * good) or holds the owner off (the consumer's wipe) stores its flag, calls
 * membarrier(), which runs a full barrier in the owner wherever it is, then
 * waits for win_cs to clear. One of the two always sees the other (an
 * asymmetric Dekker), so the owner needs no locked instruction per message.
 * Every other thread, and the owner when held off, takes plock. */
#define WBIAS_OFF ((uintptr_t)1)

static void membarrier_all(void)
{
	/* cannot fail once registered (sio_wq_membarrier_ok) */
	long r = syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0);
	(void)r;
}

/* Waits until the owner is out of its critical section (after a flag it
 * checks on entry was stored and membarrier_all() ran). */
static void wait_owner_out(struct sio_shared *sh)
{
	for (unsigned n = 0; atomic_load_explicit(&sh->win_cs, memory_order_acquire); n++) {
		if (n < 100)
			cpu_relax();
		else
			sched_yield();
	}
}

static void wlock_slow(struct sio_shared *sh)
{
	plock(sh);
	uintptr_t me = (uintptr_t)pthread_self();
	uintptr_t b = atomic_load_explicit(&sh->wbias, memory_order_relaxed);
	if (b == 0) {
		if (sh->wq_light) /* the first writer: the next entries are its own */
			atomic_store_explicit(&sh->wbias, me, memory_order_relaxed);
	} else if (b != WBIAS_OFF && b != me) {
		/* a second writing thread: no bias any more */
		atomic_store_explicit(&sh->wbias, WBIAS_OFF, memory_order_relaxed);
		membarrier_all();
		wait_owner_out(sh);
	}
}

/* Enters the writers' critical section: 1 through the bias, 0 with plock. */
static int wenter(struct sio_shared *sh)
{
	uintptr_t me = (uintptr_t)pthread_self();
	if (atomic_load_explicit(&sh->wbias, memory_order_relaxed) == me) {
		atomic_store_explicit(&sh->win_cs, 1, memory_order_relaxed);
		atomic_signal_fence(memory_order_seq_cst);
		/* acquire: after a wipe, its bytes are written before ours */
		if (atomic_load_explicit(&sh->wbias, memory_order_relaxed) == me &&
		    !atomic_load_explicit(&sh->wq_hold, memory_order_acquire))
			return 1;
		atomic_store_explicit(&sh->win_cs, 0, memory_order_release);
	}
	wlock_slow(sh);
	return 0;
}

static void wleave(struct sio_shared *sh, int biased)
{
	if (biased)
		atomic_store_explicit(&sh->win_cs, 0, memory_order_release);
	else
		punlock(sh);
}

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

/* plock held: an object from the pool, or NULL (out of memory). No
 * allocation once the pool has grown to the working set. */
static sio_send_info *pool_pop(struct sio_shared *sh)
{
	if (!sh->cur_mask) {
		/* the chunks in turn: objects come back roughly in the order
		 * they went out, so the next chunk is the likely free one */
		struct si_chunk *c = sh->scan;
		for (struct si_chunk *first = c; c;) {
			if (atomic_load_explicit(&c->freemask, memory_order_relaxed) & SI_ALL) {
				uint64_t m = atomic_exchange_explicit(&c->freemask, 0, memory_order_acquire);
				if (m) {
					sh->cur = c;
					sh->cur_mask = m;
					sh->scan = c->next ? c->next : sh->chunks;
					break;
				}
			}
			c = c->next ? c->next : sh->chunks;
			if (c == first)
				break;
		}
	}
	if (!sh->cur_mask) {
		struct si_chunk *c = aligned_alloc(64, sizeof(*c));
		if (!c)
			return NULL;
		memset(c, 0, sizeof(*c));
		for (unsigned i = 0; i < SI_CHUNK; i++) {
			c->items[i].sh = sh;
			c->items[i].chunk = c;
			c->items[i].idx = (uint8_t)i;
		}
		c->next = sh->chunks;
		sh->chunks = c;
		sh->scan = c;
		sh->total += SI_CHUNK;
		sh->cur = c;
		sh->cur_mask = SI_ALL;
	}
	unsigned i = (unsigned)__builtin_ctzll(sh->cur_mask);
	sh->cur_mask &= sh->cur_mask - 1;
	/* the next one's line was likely last written by the releasing
	 * thread: start fetching it now, it is needed at the next write */
	if (sh->cur_mask)
		__builtin_prefetch(&sh->cur->items[__builtin_ctzll(sh->cur_mask)], 1);
	return &sh->cur->items[i];
}

/* Any thread, any lock (or none): the object is free again. Its bit is
 * clear while it is out of the pool, so adding it sets it without a carry
 * (bit 63, SI_GONE, is never reached): one locked add, where an OR whose
 * old value is needed compiles to a compare-and-swap loop. */
static void si_return(sio_send_info *si)
{
	struct sio_shared *sh = si->sh;
	uint64_t old = atomic_fetch_add_explicit(&si->chunk->freemask, UINT64_C(1) << si->idx,
						 memory_order_acq_rel);
	if (!(old & SI_GONE))
		return;
	/* the session is gone (sio_shared_unref counted this one as live) */
	pthread_mutex_lock(&sh->mu);
	int dead = --sh->live == 0;
	pthread_mutex_unlock(&sh->mu);
	if (dead)
		shared_free(sh);
}

/* Sets the gathered bits (the owner in its critical section, or the holder
 * once the owner is out). None of them is set in the chunk (their objects
 * were out of the pool) and the session is not gone (sio_shared_unref
 * holds the owner off first): an add sets them, without a carry. */
static void rel_flush(struct sio_shared *sh)
{
	if (sh->rel_mask)
		atomic_fetch_add_explicit(&sh->rel_chunk->freemask, sh->rel_mask, memory_order_release);
	sh->rel_mask = 0;
}

/* The program released SI (its last reference). A completion thread
 * releases objects one by one, in the order writers took them: in chunk
 * order. Its releases are gathered per chunk (plain stores on a line only
 * it touches) and set with one atomic add per chunk, not one per object.
 * The owner enters with a store and a load, as the writers' bias (wenter):
 * the holder stores rel_hold, runs membarrier() and waits for rel_cs to
 * clear. Objects gathered are back in the pool at the next flush: at most
 * one chunk is held back (the pool may grow by one chunk for it). */
static void si_release(sio_send_info *si)
{
	struct sio_shared *sh = si->sh;
	uintptr_t me = (uintptr_t)pthread_self();
	uintptr_t b = atomic_load_explicit(&sh->rbias, memory_order_relaxed);
	if (b == 0 && sh->wq_light) {
		/* the first releasing thread: one locked instruction, once
		 * (sequentially consistent with rel_hold: sio_shared_unref) */
		uintptr_t z = 0;
		if (atomic_compare_exchange_strong(&sh->rbias, &z, me) && !atomic_load(&sh->rel_hold))
			b = me;
	}
	if (b == me) {
		atomic_store_explicit(&sh->rel_cs, 1, memory_order_relaxed);
		atomic_signal_fence(memory_order_seq_cst);
		if (!atomic_load_explicit(&sh->rel_hold, memory_order_acquire)) {
			if (si->chunk != sh->rel_chunk) {
				rel_flush(sh);
				sh->rel_chunk = si->chunk;
			}
			sh->rel_mask |= UINT64_C(1) << si->idx;
			if (sh->rel_mask == SI_ALL)
				rel_flush(sh);
			atomic_store_explicit(&sh->rel_cs, 0, memory_order_release);
			return;
		}
		atomic_store_explicit(&sh->rel_cs, 0, memory_order_release);
	}
	si_return(si);
}

static void si_init(sio_send_info *si, sio_session *s, int refs, uint64_t seq)
{
	si->s = s;
	si->fn = NULL;
	si->ctx = NULL;
	si->err = 0;
	si->seq = seq;
	atomic_store_explicit(&si->done, 0, memory_order_relaxed);
	atomic_store_explicit(&si->refs, refs, memory_order_relaxed);
	si->cb_pending = 0;
}

void sio_shared_unref(struct sio_shared *sh)
{
	pthread_mutex_lock(&sh->mu);
	plock(sh);
	sh->sess = NULL;
	if (sh->wq) {
		sodium_memzero(sh->wq, SIO_WQ_BYTES);
		free(sh->wq);
		sh->wq = NULL;
	}
	/* No more gathering of releases (si_release): once the owner is out,
	 * what it gathered is set here. */
	atomic_store(&sh->rel_hold, 1);
	if (atomic_load(&sh->rbias)) {
		membarrier_all();
		for (unsigned n = 0; atomic_load_explicit(&sh->rel_cs, memory_order_acquire); n++) {
			if (n < 100)
				cpu_relax();
			else
				sched_yield();
		}
		rel_flush(sh);
	}
	/* Mark every chunk: from now on a release counts itself down under
	 * sh->mu. What is free now (or taken by a writer and unused) is not
	 * live; the rest the program still holds. */
	size_t nfree = (size_t)__builtin_popcountll(sh->cur_mask);
	sh->cur_mask = 0;
	for (struct si_chunk *c = sh->chunks; c; c = c->next)
		nfree += (size_t)__builtin_popcountll(
		    atomic_fetch_or_explicit(&c->freemask, SI_GONE, memory_order_acq_rel) & SI_ALL);
	sh->live = sh->total - nfree;
	int dead = sh->live == 0;
	punlock(sh);
	pthread_mutex_unlock(&sh->mu);
	if (dead)
		shared_free(sh);
}

/* Lock held (the slow paths). */
sio_send_info *sio_si_get(sio_session *s)
{
	struct sio_shared *sh = s->sh;
	wlock_slow(sh);
	sio_send_info *si = pool_pop(sh);
	punlock(sh);
	if (si)
		si_init(si, s, 2, 0);
	return si;
}

static void si_put(sio_send_info *si)
{
	si->s = NULL;
	si_return(si);
}

void sio_si_unref_locked(sio_send_info *si)
{
	if (atomic_fetch_sub(&si->refs, 1) == 1)
		si_put(si);
}

/* Lock held (the core reported the token). */
int sio_si_complete(sio_send_info *si, int err)
{
	struct sio_shared *sh = si->sh;
	int cb = si->fn != NULL;
	si->err = err;
	sh->si_completed = 1; /* waiters are woken once per batch: sio_si_broadcast */
	if (cb)
		si->cb_pending = 1; /* the caller queues the callback; ref kept */
	atomic_store_explicit(&si->done, 1, memory_order_release);
	if (!cb)
		sio_si_unref_locked(si);
	return cb;
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

/* Whether message number SEQ (a queued one) is done, and how: 1 and *ERR,
 * or 0. Thread: any. */
static int seq_done(struct sio_shared *sh, uint64_t seq, int *err)
{
	if (seq <= atomic_load_explicit(&sh->done_seq, memory_order_acquire)) {
		*err = 0;
		return 1;
	}
	if (seq >= atomic_load_explicit(&sh->fail_from, memory_order_acquire)) {
		*err = atomic_load_explicit(&sh->fail_err, memory_order_relaxed);
		return 1;
	}
	return 0;
}

static int si_is_done(const sio_send_info *si, int *err)
{
	if (si->seq)
		return seq_done(si->sh, si->seq, err);
	if (!atomic_load_explicit(&((sio_send_info *)si)->done, memory_order_acquire))
		return 0;
	*err = si->err;
	return 1;
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

/* sh->mu held: 1 if this thread may not block for the session. */
static int may_not_block(const struct sio_shared *sh)
{
	return sh->sess &&
	       (sh->loop_mode || (sh->has_io_thread && pthread_equal(pthread_self(), sh->io_thread)) ||
		(sh->drv_pool && sio_drv_self == sh->drv_pool));
}

static int si_wait_locked(sio_send_info *si, int timeout_ms)
{
	struct sio_shared *sh = si->sh;
	uint64_t deadline = sio_deadline_of(timeout_ms);
	int err;
	while (!si_is_done(si, &err)) {
		if (may_not_block(sh))
			return timeout_ms == 0 ? SIO_ETIMEDOUT : SIO_EAGAIN;
		if (timeout_ms == 0 || sio_now_ns() >= deadline)
			return SIO_ETIMEDOUT;
		sh_wait(sh, deadline);
	}
	return err;
}

int sio_send_info_wait(sio_send_info *si, int timeout_ms)
{
	if (!si)
		return SIO_EINVAL;
	int err;
	if (si_is_done(si, &err))
		return err;
	pthread_mutex_lock(&si->sh->mu);
	int r = si_wait_locked(si, timeout_ms);
	pthread_mutex_unlock(&si->sh->mu);
	return r;
}

/* Lock held: moves what is queued into the core and sends what is due. */
static void push_now(sio_session *s)
{
	uint64_t now = sio_now_ns();
	sio_wq_drain(s, now);
	sio_core_flush(s->core, now);
	sio_flush_out(s, now);
	if (sio_wq_drain(s, now)) { /* the core's ring had filled */
		sio_core_flush(s->core, now);
		sio_flush_out(s, now);
	}
	sio_kick(s);
}

int sio_send_info_send_now_and_wait(sio_send_info *si, int timeout_ms)
{
	if (!si)
		return SIO_EINVAL;
	struct sio_shared *sh = si->sh;
	pthread_mutex_lock(&sh->mu);
	sio_session *s = sh->sess;
	int err;
	if (!si_is_done(si, &err) && s && s->core && sio_core_enter(s) == 0)
		push_now(s);
	int r = si_wait_locked(si, timeout_ms);
	pthread_mutex_unlock(&sh->mu);
	return r;
}

int sio_send_info_done(const sio_send_info *si)
{
	int err;
	return si && si_is_done(si, &err);
}

int sio_send_info_err(const sio_send_info *si)
{
	if (!si)
		return SIO_EINVAL;
	int err;
	return si_is_done(si, &err) ? err : 0;
}

void sio_send_info_release(sio_send_info *si)
{
	if (!si)
		return;
	/* refs 1: only the program's (a queued message, or the session's
	 * reference went): nothing to count down on the object's line */
	if (atomic_load_explicit(&si->refs, memory_order_acquire) != 1 &&
	    atomic_fetch_sub_explicit(&si->refs, 1, memory_order_acq_rel) != 1)
		return; /* the session still holds it: it returns it later */
	si_release(si);
}

/* ---- the write queue ---------------------------------------------------- */

/* Writers' lock held: appends one record of KIND (session_int.h) for LEN
 * message bytes, copied unless the record is WQ_BORROWED, with OBJ after
 * the header of the kinds that have one. Returns the message's number (the
 * end of its record), or 0 when the ring has no room for it. */
static uint64_t wq_put(struct sio_shared *sh, uint32_t kind, uint32_t type, const void *data,
		       size_t len, const struct sio_wq_obj *obj)
{
	if (!sh->wq) {
		sh->wq = malloc(SIO_WQ_BYTES); /* untouched pages cost no memory */
		if (!sh->wq)
			return 0;
		sh->wq_room = SIO_WQ_BYTES;
	}
	size_t extra = kind == WQ_FAST ? 0 : sizeof(struct sio_wq_obj);
	size_t body = kind == WQ_BORROWED ? 0 : len;
	uint64_t size = (sizeof(struct sio_wq_rec) + extra + body + 15) & ~(uint64_t)15;
	uint64_t t = sh->wq_tail;
	uint64_t pos = t & (SIO_WQ_BYTES - 1);
	uint64_t skip = SIO_WQ_BYTES - pos < size ? SIO_WQ_BYTES - pos : 0;
	if (t + skip + size > sh->wq_room) {
		sh->wq_room = atomic_load_explicit(&sh->wq_head, memory_order_acquire) + SIO_WQ_BYTES;
		if (t + skip + size > sh->wq_room)
			return 0;
	}
	struct sio_wq_rec *r = (struct sio_wq_rec *)(void *)(sh->wq + pos);
	if (skip) {
		r->len = 0;
		r->type = 0;
		r->size = (uint32_t)skip;
		r->kind = WQ_SKIP;
		t += skip;
		r = (struct sio_wq_rec *)(void *)sh->wq;
	}
	r->len = (uint32_t)len;
	r->type = type;
	r->size = (uint32_t)size;
	r->kind = kind;
	uint8_t *p = (uint8_t *)(r + 1);
	if (extra) {
		memcpy(p, obj, sizeof(*obj));
		p += sizeof(*obj);
	}
	if (body)
		memcpy(p, data, body);
	t += size;
	sh->wq_tail = t;
	/* the consumer read these lines last: fetch the next ones for writing
	 * now, so that the next records' stores do not wait for them */
	__builtin_prefetch(sh->wq + ((t + 128) & (SIO_WQ_BYTES - 1)), 1);
	__builtin_prefetch(sh->wq + ((t + 192) & (SIO_WQ_BYTES - 1)), 1);
	return t;
}

static struct sio_wq_rec *wq_rec_at(const struct sio_shared *sh, uint64_t off)
{
	return (struct sio_wq_rec *)(void *)(sh->wq + (off & (SIO_WQ_BYTES - 1)));
}

/* Lock held: completes the object of every record not consumed yet with
 * ERR and consumes them all (the session ended; the rest fails by number:
 * fail_from). Writers may still add records: one that has an object looks
 * at fail_from after publishing it and sweeps again (wq_write). */
static void wq_sweep(sio_session *s, int err)
{
	struct sio_shared *sh = s->sh;
	uint64_t h = atomic_load_explicit(&sh->wq_head, memory_order_relaxed);
	/* seq_cst, after the store of fail_from: see wq_write */
	uint64_t c = atomic_load_explicit(&sh->wq_commit, memory_order_seq_cst);
	while (h < c) {
		const struct sio_wq_rec *r = wq_rec_at(sh, h);
		if (r->kind == WQ_OBJ || r->kind == WQ_BORROWED)
			sio_si_finish(s, ((const struct sio_wq_obj *)(const void *)(r + 1))->si, err);
		/* (a skip record's space may hold bytes of a lap before) */
		sh->wq_plain |= r->kind != WQ_BORROWED && r->kind != WQ_CANCELLED;
		h += r->size;
	}
	atomic_store_explicit(&sh->wq_head, h, memory_order_release);
}

/* The lock-free write: queues a message of at most wq_fast bytes without
 * the session lock, as WQ_FAST, or as WQ_OBJ when it has a completion
 * callback (DONE, CTX). Returns 1 (*SEQ is its number; *SIP, if asked, a
 * completion object for it), -1 when the ring has no room now, or 0: take
 * the locked way (too large, closing, out of memory). */
static int wq_write(sio_session *s, uint32_t type, const void *data, size_t len,
		    sio_send_done_fn done, void *ctx, sio_send_info **sip, uint64_t *seq,
		    int self_send)
{
	struct sio_shared *sh = s->sh;
	if (len > (size_t)s->wq_fast)
		return 0;
	if (atomic_load_explicit(&s->state, memory_order_acquire) >= SIO_STATE_CLOSING)
		return 0;
	sio_send_info *si = NULL;
	int biased = wenter(sh);
	if (sip && !(si = pool_pop(sh))) {
		wleave(sh, biased);
		return 0;
	}
	if (done) {
		/* the consumer uses the object as soon as the record is seen:
		 * the program's reference and the session's (until the
		 * callback ran), completed through its own token */
		si_init(si, s, 2, 0);
		si->fn = done;
		si->ctx = ctx;
	}
	struct sio_wq_obj obj = {si, NULL};
	uint64_t t = wq_put(sh, done ? WQ_OBJ : WQ_FAST, type, data, len, &obj);
	if (!t) {
		if (si) /* back in front of the writers' free bits */
			sh->cur_mask |= UINT64_C(1) << si->idx;
		int r = sh->wq ? -1 : 0;
		wleave(sh, biased);
		return r;
	}
	/* The store of wq_commit must be ordered before the load of wq_want
	 * below, as the consumer orders its store of wq_want before its load
	 * of wq_commit: then one of the two sees the other, and a record is
	 * never left behind a sleeping consumer. Either both sides use
	 * seq_cst operations, or (wq_light) the consumer's membarrier() puts
	 * a full barrier into this thread wherever it is, and a compiler
	 * barrier here is enough: no locked instruction per message. Records
	 * with an object are always published seq_cst (below). */
	uint64_t want;
	int light = sh->wq_light && sh->wq_published && !done;
	if (!sh->wq_published) {
		/* the first lock-free record is published seq_cst, and tells
		 * the consumer that barriers are needed from now on (sio_wq_arm) */
		sh->wq_published = 1;
		atomic_store_explicit(&sh->wq_lf, 1, memory_order_seq_cst);
	}
	if (light) {
		atomic_store_explicit(&sh->wq_commit, t, memory_order_release);
		wleave(sh, biased);
		atomic_signal_fence(memory_order_seq_cst);
		want = atomic_load_explicit(&sh->wq_want, memory_order_relaxed);
	} else {
		atomic_store_explicit(&sh->wq_commit, t, memory_order_seq_cst);
		wleave(sh, biased);
		want = atomic_load_explicit(&sh->wq_want, memory_order_seq_cst);
	}
	if (si && !done)
		si_init(si, s, 1, t);
	if (si)
		*sip = si;
	*seq = t;
	if (done && atomic_load_explicit(&sh->fail_from, memory_order_seq_cst) != UINT64_MAX) {
		/* The session ended, and its last sweep may have looked before
		 * this record was published (it stores fail_from, then loads
		 * wq_commit; this thread did the opposite: one of the two sees
		 * the other). Sweep again: the object completes with the
		 * session's error and its callback is queued. */
		pthread_mutex_lock(&sh->mu);
		wq_sweep(s, atomic_load_explicit(&sh->fail_err, memory_order_relaxed));
		sio_si_broadcast(sh);
		sio_kick(s);
		pthread_mutex_unlock(&sh->mu);
		return 1;
	}
	/* (a synchronous writer sends it itself: no need to wake anyone) */
	if (!self_send && t >= want &&
	    atomic_exchange_explicit(&sh->wq_want, UINT64_MAX, memory_order_relaxed) != UINT64_MAX) {
		if (s->mode == MODE_DRIVEN) {
			s->drv->schedule(s->drv, s);
		} else {
			uint64_t one = 1;
			ssize_t r = write(sh->wake_fd, &one, sizeof(one));
			(void)r;
		}
	}
	return 1;
}

/* wq_write(), waiting for room in the ring where the thread may block:
 * meanwhile it moves records into the core and sends them itself, as the
 * I/O thread would. Returns as wq_write (-1 only where it may not block). */
static int wq_write_wait(sio_session *s, uint32_t type, const void *data, size_t len,
			 sio_send_done_fn done, void *ctx, sio_send_info **sip, uint64_t *seq,
			 int self_send)
{
	for (;;) {
		int r = wq_write(s, type, data, len, done, ctx, sip, seq, self_send);
		if (r >= 0)
			return r;
		pthread_mutex_lock(&s->sh->mu);
		if (!sio_threaded_caller(s) || sio_core_enter(s) != 0 ||
		    atomic_load(&s->state) >= SIO_STATE_CLOSING) {
			pthread_mutex_unlock(&s->sh->mu);
			return 0; /* the locked way decides (SIO_EAGAIN, closed...) */
		}
		uint64_t now = sio_now_ns();
		sio_wq_drain(s, now);
		sio_flush_out(s, now);
		if (s->wq_full || s->tx_blocked) {
			sio_wake(s);
			sio_wait_cond(s, &s->cond, &s->waiters, sio_now_ns() + 100000000u);
		}
		pthread_mutex_unlock(&s->sh->mu);
	}
}

int sio_wq_pending(const sio_session *s)
{
	return atomic_load_explicit(&s->sh->wq_commit, memory_order_acquire) !=
	       atomic_load_explicit(&s->sh->wq_head, memory_order_relaxed);
}

int sio_wq_membarrier_ok(void)
{
	/* 0 unknown, 1 registered, -1 not available (old kernel, seccomp) */
	static atomic_int state;
	int st = atomic_load_explicit(&state, memory_order_acquire);
	if (st == 0) {
		st = syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0) == 0 ? 1 : -1;
		atomic_store_explicit(&state, st, memory_order_release);
	}
	return st > 0;
}

int sio_wq_arm(sio_session *s, uint64_t ahead)
{
	struct sio_shared *sh = s->sh;
	uint64_t h = atomic_load_explicit(&sh->wq_head, memory_order_relaxed);
	uint64_t want = h + (ahead ? ahead : 1);
	atomic_store_explicit(&sh->wq_want, want, memory_order_seq_cst);
	/* Writers publish without a barrier (wq_light): before a sleep that
	 * only a writer can end, put one into each of them. A sleep bounded by
	 * the merge delay (AHEAD > 1) needs none: missing the wake-up there
	 * costs nothing, the consumer comes back by itself. */
	if (sh->wq_light && ahead <= 1 && atomic_load_explicit(&sh->wq_lf, memory_order_seq_cst))
		membarrier_all(); /* (never while only records published seq_cst
				   * were seen: a session nobody wrote to, or
				   * only large messages and locked writes) */
	return atomic_load_explicit(&sh->wq_commit, memory_order_seq_cst) >= want;
}

void sio_wq_disarm(sio_session *s)
{
	atomic_store_explicit(&s->sh->wq_want, UINT64_MAX, memory_order_relaxed);
}

/* Lock held: the WQ_FAST record ending at SEQ could not be sent (ERR), nor
 * can any after it (the core refuses such a message only when it is
 * closing or closed). */
static void wq_refuse(sio_session *s, uint64_t seq, int err)
{
	struct sio_shared *sh = s->sh;
	if (seq < atomic_load_explicit(&sh->fail_from, memory_order_relaxed)) {
		if (atomic_load_explicit(&sh->fail_from, memory_order_relaxed) == UINT64_MAX)
			atomic_store_explicit(&sh->fail_err, err, memory_order_relaxed);
		atomic_store_explicit(&sh->fail_from, seq, memory_order_seq_cst);
		sh->si_completed = 1;
	}
}

void sio_wq_fail_all(sio_session *s, int err)
{
	struct sio_shared *sh = s->sh;
	wq_refuse(s, atomic_load_explicit(&sh->done_seq, memory_order_relaxed) + 1, err);
	wq_sweep(s, atomic_load_explicit(&sh->fail_err, memory_order_relaxed));
	sio_si_broadcast(sh);
}

size_t sio_wq_drain(sio_session *s, uint64_t now)
{
	struct sio_shared *sh = s->sh;
	uint64_t h0 = atomic_load_explicit(&sh->wq_head, memory_order_relaxed);
	uint64_t c = atomic_load_explicit(&sh->wq_commit, memory_order_acquire);
	if (h0 == c || !s->core)
		return 0;
	uint64_t h = h0;
	size_t n = 0, nlf = 0;
	sio_core_hold_seal(s->core, now, 1); /* fill packets before sealing them */
	s->wq_full = 0;
	while (h < c) {
		const struct sio_wq_rec *r = wq_rec_at(sh, h);
		uint64_t seq = h + r->size;
		if (r->kind == WQ_FAST) {
			int e = sio_core_write(s->core, now, r->type, (const uint8_t *)(r + 1), r->len,
					       seq | SIO_CORE_TOKEN_WM);
			if (e == SIO_EAGAIN || e == SIO_ELIMIT) {
				s->wq_full = 1; /* room (or a new key) comes after packets leave */
				break;
			}
			if (e < 0)
				wq_refuse(s, seq, e);
			sh->wq_plain = 1;
			n++;
			nlf++;
		} else if (r->kind == WQ_OBJ || r->kind == WQ_BORROWED) {
			const struct sio_wq_obj *o = (const struct sio_wq_obj *)(const void *)(r + 1);
			const uint8_t *d = r->kind == WQ_BORROWED ? o->data : (const uint8_t *)(o + 1);
			int e = sio_core_write(s->core, now, r->type, d, r->len, (uint64_t)(uintptr_t)o->si);
			if (e == SIO_EAGAIN || e == SIO_ELIMIT) {
				s->wq_full = 1;
				break;
			}
			if (e < 0)
				sio_si_finish(s, o->si, e);
			sh->wq_plain |= r->kind == WQ_OBJ;
			nlf += r->kind == WQ_OBJ;
			n++;
		} else if (r->kind == WQ_SKIP) {
			sh->wq_plain = 1; /* its space may hold bytes of a lap before */
		}
		h = seq;
	}
	sio_core_hold_seal(s->core, now, 0);
	atomic_store_explicit(&sh->wq_head, h, memory_order_release);
	/* writers of lock-free records are busy: the consumer comes back
	 * within a merge delay rather than asking for a wake-up per record
	 * (io_thread; a borrowed record's writer drains it itself) */
	if (nlf && s->send_delay_ns)
		s->wq_idle_at = now + s->send_delay_ns;
	return n;
}

void sio_wq_wipe(sio_session *s)
{
	struct sio_shared *sh = s->sh;
	uint64_t h = atomic_load_explicit(&sh->wq_head, memory_order_relaxed);
	if (h == sh->wq_wiped)
		return;
	if (!sh->wq_plain) {
		/* only records pointing at writers' buffers: no message bytes
		 * to wipe, and no reason to hold the writers off */
		sh->wq_wiped = h;
		return;
	}
	sh->wq_plain = 0;
	/* Consumed space is the writers' again at once: wipe only the part no
	 * record reserved since covers (writers wait meanwhile; the queue is
	 * idle when this runs). What a newer record covers is that record's
	 * to wipe once consumed. */
	atomic_store_explicit(&sh->wq_hold, 1, memory_order_relaxed);
	if (atomic_load_explicit(&sh->wbias, memory_order_relaxed) > WBIAS_OFF) {
		membarrier_all(); /* the biased owner sees wq_hold, or we see it in */
		wait_owner_out(sh);
	}
	plock(sh);
	uint64_t from = sh->wq_wiped, t = sh->wq_tail;
	if (t > SIO_WQ_BYTES && from < t - SIO_WQ_BYTES)
		from = t - SIO_WQ_BYTES;
	if (from < h && sh->wq) {
		uint64_t len = h - from, a = from & (SIO_WQ_BYTES - 1);
		uint64_t first = SIO_WQ_BYTES - a < len ? SIO_WQ_BYTES - a : len;
		sodium_memzero(sh->wq + a, first);
		if (len > first)
			sodium_memzero(sh->wq, len - first);
	}
	punlock(sh);
	atomic_store_explicit(&sh->wq_hold, 0, memory_order_release);
	sh->wq_wiped = h;
}

/* ---- writing ------------------------------------------------------------ */

static int wq_consumed(const struct sio_shared *sh, uint64_t seq)
{
	return atomic_load_explicit(&sh->wq_head, memory_order_relaxed) >= seq;
}

/* The locked way, for every message the lock-free write does not take
 * (larger ones, the ring full where the caller may not wait, objects the
 * pool could not give lock-free): holding the session lock, publishes a
 * WQ_BORROWED record pointing at DATA with the completion object SI, moves
 * the queue into the core (what others queued first, then this record:
 * the writer seals a large message itself, in parallel with the I/O
 * thread) and, while the core has no room for it, sends and waits where
 * the thread may (MAY_BLOCK), or takes the record back: SIO_EAGAIN.
 * Returns 0 once the core holds the message (or SI completed with its
 * error), or an error (SI untouched). Lock held. */
static int locked_write(sio_session *s, uint32_t type, const void *data, size_t len,
			sio_send_info *si, int may_block)
{
	struct sio_shared *sh = s->sh;
	uint64_t now = sio_now_cached(s);
	struct sio_wq_obj obj = {si, data};
	uint64_t t;
	for (int tried = 0;; tried = 1) {
		if (atomic_load(&s->state) >= SIO_STATE_CLOSING)
			return sio_closed_err(s);
		int r = sio_core_write_check(s->core, type, len);
		if (r)
			return r == SIO_ECLOSED ? sio_closed_err(s) : r;
		int biased = wenter(sh);
		t = wq_put(sh, WQ_BORROWED, type, data, len, &obj);
		if (t)
			atomic_store_explicit(&sh->wq_commit, t, memory_order_seq_cst);
		wleave(sh, biased);
		if (t)
			break;
		if (!sh->wq)
			return SIO_ENOMEM;
		if (tried) {
			if (!may_block)
				return SIO_EAGAIN;
			sio_wake(s);
			sio_wait_cond(s, &s->cond, &s->waiters, sio_now_ns() + 100000000u);
			while (sio_core_enter(s) != 0)
				sio_wait_cond(s, &s->cond, &s->waiters, sio_now_ns() + 100000000u);
			now = sio_now_ns();
		}
		/* the ring is full: move it into the core, send, retry */
		sio_wq_drain(s, now);
		sio_core_flush(s->core, now);
		sio_flush_out(s, now);
		sio_wq_drain(s, now);
	}
	for (;;) {
		sio_wq_drain(s, now);
		if (wq_consumed(sh, t))
			return 0;
		/* the core's ring is full: push out what can go now, retry */
		sio_core_flush(s->core, now);
		sio_flush_out(s, now);
		sio_wq_drain(s, now);
		if (wq_consumed(sh, t))
			return 0;
		if (!may_block) {
			/* not consumed, and no consumer runs while we hold the
			 * lock: take it back (drains skip it) */
			struct sio_wq_rec *r = wq_rec_at(sh, t - (uint64_t)sizeof(struct sio_wq_rec) -
							     sizeof(struct sio_wq_obj));
			r->kind = WQ_CANCELLED;
			return SIO_EAGAIN;
		}
		if (atomic_load(&s->state) == SIO_STATE_CLOSED) {
			sio_wq_fail_rest(s); /* consumes it: SI completes with the error */
			continue;
		}
		sio_wake(s);
		sio_wait_cond(s, &s->cond, &s->waiters, sio_now_ns() + 100000000u);
		while (sio_core_enter(s) != 0)
			sio_wait_cond(s, &s->cond, &s->waiters, sio_now_ns() + 100000000u);
		now = sio_now_ns();
	}
}

/* A synchronous write through the queue: sends it from this thread (no
 * reason to wait for the merge delay) and waits for its packet. */
static int wait_queued(sio_session *s, uint64_t seq)
{
	struct sio_shared *sh = s->sh;
	int err;
	pthread_mutex_lock(&sh->mu);
	while (!seq_done(sh, seq, &err)) {
		if (sio_core_enter(s) == 0)
			push_now(s);
		if (seq_done(sh, seq, &err))
			break;
		sh_wait(sh, sio_now_ns() + 100000000u);
	}
	pthread_mutex_unlock(&sh->mu);
	return err;
}

int sio_write_message(sio_session *s, uint32_t type, const void *data, size_t len)
{
	if (!s || (!data && len) || !sio_check_type(type))
		return SIO_EINVAL;
	uint64_t seq;
	int self_send = sio_threaded_caller(s);
	if (wq_write_wait(s, type, data, len, NULL, NULL, NULL, &seq, self_send) > 0) {
		/* on the I/O thread or in event-loop mode nothing may wait: the
		 * message leaves with the next packet */
		if (sio_nonblocking(s))
			return 0;
		return wait_queued(s, seq);
	}
	pthread_mutex_lock(&s->sh->mu);
	int r = sio_core_enter(s);
	if (r) {
		pthread_mutex_unlock(&s->sh->mu);
		return r;
	}
	int nowait = sio_nonblocking(s);
	sio_send_info *si = sio_si_get(s);
	if (!si) {
		pthread_mutex_unlock(&s->sh->mu);
		return SIO_ENOMEM;
	}
	if (nowait) /* nobody waits: only the session's reference */
		atomic_store_explicit(&si->refs, 1, memory_order_relaxed);
	r = locked_write(s, type, data, len, si, !nowait);
	if (r < 0) {
		si_abort(si);
		pthread_mutex_unlock(&s->sh->mu);
		return r;
	}
	if (!nowait) {
		/* synchronous: no reason to wait for the merge delay; send from
		 * this thread rather than handing over to the I/O thread */
		uint64_t now = sio_now_ns();
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
	if (!s || (!data && len) || !sio_check_type(type)) {
		e = SIO_EINVAL;
		goto out;
	}
	uint64_t seq;
	if (wq_write_wait(s, type, data, len, done, ctx, &si, &seq, 0) > 0)
		goto out;
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
		e = locked_write(s, type, data, len, si, sio_threaded_caller(s));
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

