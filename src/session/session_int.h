/*
 * Session layer internals (layer 3), shared by session.c (lifecycle,
 * events), session_io.c (sending, input, the I/O thread, event loop),
 * session_write.c (writing, the write queue, completion objects) and
 * session_msg.c (reading, handlers, messengers).
 *
 * Locking: one mutex per session, sh->mu, protects the core, the transport
 * and every field below. User callbacks are never called with it held: the
 * core's callbacks only record events in s->evq, and dispatch() runs them
 * after unlocking. The one exception to "the core is only used under the
 * lock" is on_remote_identity, which the core needs answered synchronously:
 * the I/O thread marks the core busy (core_busy), unlocks, asks the program,
 * relocks; every other thread waits in core_enter() while the core is busy.
 *
 * sh (mutex, completion pool) is reference counted separately so that
 * completion objects the program still holds stay valid after
 * sio_session_free().
 */
#ifndef SIO_SESSION_INT_H
#define SIO_SESSION_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "core.h"
#include "identity.h"
#include "secureio.h"
#include "transport.h"

/* Bytes the default read stream / a messenger may hold before the session
 * stops reading from the transport (flow control back to the peer). */
#define SIO_RD_LIMIT (4u << 20)

/* The write queue (docs/ARCHITECTURE.md, "Write path"): every message
 * written goes through it. Writers append records to a byte ring; whoever
 * holds the session lock (the I/O thread, sio_session_process(), a driver
 * worker, or a writer on its way out) moves them into the core in batches,
 * in ring order: sio_wq_drain() is the only caller of sio_core_write().
 * A record is a struct sio_wq_rec, for the kinds with a completion object a
 * struct sio_wq_obj, then the message (unless borrowed), padded to 16
 * bytes; a record never wraps (a skip record fills the end of the ring).
 * Offsets are byte counts since the session began, never reduced: a
 * message's number is the offset of its record's end.
 *  - WQ_FAST: a message of up to wq_fast bytes without a completion
 *    callback, published without any lock; completed per packet (its
 *    number against done_seq / fail_from).
 *  - WQ_OBJ: a message with a completion callback, published the same
 *    way, completed through its object (its own token in the core).
 *  - WQ_BORROWED: anything else (larger messages, rings full where the
 *    caller may not wait): the writer publishes it holding the session
 *    lock, points the record at its own buffer, drains at once and does
 *    not return before the record was consumed or cancelled (WQ_CANCELLED:
 *    the core had no room and the caller may not wait). */
#define SIO_WQ_BYTES (256u << 10)
#define SIO_WQ_INLINE_MAX (8u << 10) /* the largest WQ_FAST / WQ_OBJ message */

enum { WQ_FAST, WQ_OBJ, WQ_BORROWED, WQ_CANCELLED, WQ_SKIP };

struct sio_wq_rec {
	uint32_t len;  /* message bytes */
	uint32_t type; /* message type */
	uint32_t size; /* whole record, header included */
	uint32_t kind; /* WQ_* */
};

/* after the header of WQ_OBJ / WQ_BORROWED records */
struct sio_wq_obj {
	sio_send_info *si;
	const uint8_t *data; /* WQ_BORROWED: the writer's buffer */
};

struct sio_shared {
	pthread_mutex_t mu;     /* the session lock */
	pthread_cond_t si_cond; /* completion of any send-info object */
	int si_waiters;
	int si_completed; /* completions since the last broadcast */
	sio_session *sess; /* the session, NULL once freed (sh->mu) */
	/* where waiters may not block (sio_send_info_wait) */
	int loop_mode;
	int has_io_thread;
	pthread_t io_thread;
	const void *drv_pool; /* MODE_DRIVEN: its driver's pool (sio_drv_self) */
	int wake_fd; /* where a writer wakes the consumer (the session's) */
	/* writers publish with a plain release store; the consumer makes the
	 * pair sequentially consistent with membarrier() before it sleeps
	 * (sio_wq_arm). 0: both sides use seq_cst operations. */
	int wq_light;

	/* Writers' line. plock guards the free list and the ring's tail;
	 * never held while waiting for anything; the session lock may be
	 * held when taking it, never the other way round. */
	_Alignas(64) atomic_int plock;
	/* Biased writers' lock (session_write.c, wenter): the thread the lock
	 * is biased to enters without a locked instruction, announcing itself
	 * in win_cs; any other thread revokes the bias for good. wq_hold keeps
	 * the owner out while the consumer wipes. */
	_Atomic uintptr_t wbias; /* 0: none yet; 1: revoked; else the owner */
	atomic_int win_cs;
	atomic_int wq_hold;
	/* The pool: chunks of objects, each with a bitmap of its free ones
	 * (set by releases, taken whole by writers: session_write.c). */
	struct si_chunk *chunks; /* every chunk */
	struct si_chunk *cur;    /* chunk being handed out */
	struct si_chunk *scan;   /* next chunk to look for free objects */
	uint64_t cur_mask;       /* free objects of cur taken from its bitmap */
	size_t total;      /* objects allocated */
	size_t live;       /* out of the pool; counted once the session is gone */
	uint8_t *wq;       /* SIO_WQ_BYTES, allocated at the first queued write */
	uint64_t wq_tail;  /* end of the last record reserved */
	uint64_t wq_room;  /* writers' view of wq_head + SIO_WQ_BYTES */
	int wq_published;  /* a lock-free record was published */

	/* Releasing thread's line (session_write.c, si_release): releases are
	 * biased to the first thread that releases an object (with wq_light);
	 * it gathers the free bits of one chunk in rel_mask and sets them with
	 * one atomic add when it moves on to another chunk or fills this one.
	 * Other threads set their bit at once. rel_hold (sio_shared_unref)
	 * stops the gathering for good; the holder then sets what was
	 * gathered. */
	_Alignas(64) _Atomic uintptr_t rbias; /* 0: none yet; else the owner */
	atomic_int rel_cs;
	atomic_int rel_hold;
	struct si_chunk *rel_chunk;
	uint64_t rel_mask;

	/* end of the last complete record (writers publish, consumer reads) */
	_Alignas(64) _Atomic uint64_t wq_commit;
	/* consumer asks writers to wake it once wq_commit reaches this
	 * (UINT64_MAX: it is awake or will come back by itself) */
	_Atomic uint64_t wq_want;
	atomic_int wq_lf; /* wq_published, for the consumer */

	/* consumer side (sh->mu) */
	_Alignas(64) _Atomic uint64_t wq_head; /* records consumed below this */
	uint64_t wq_wiped;                     /* ring bytes wiped below this */
	int wq_plain; /* a record with message bytes was consumed since the last wipe */
	/* Completion per packet: every message numbered <= done_seq was sent;
	 * once the session ended, every message numbered >= fail_from failed
	 * with fail_err (stored before fail_from is). */
	_Alignas(64) _Atomic uint64_t done_seq;
	_Atomic uint64_t fail_from;
	_Atomic int fail_err;
};

/* One cache line each: the writer, the I/O thread and the releasing thread
 * touch different objects at the same time (the static assertion below
 * keeps it so: a field past the line costs the writer and the releasing
 * thread a second cache miss per message). */
struct sio_send_info {
	_Alignas(64) struct sio_shared *sh;
	struct si_chunk *chunk; /* its chunk in the pool */
	sio_session *s; /* valid while inflight or cb_pending (objects that are core tokens) */
	sio_send_done_fn fn;
	void *ctx;
	/* Nonzero: a queued message (completion per packet); its number, done
	 * when sh->done_seq reaches it. 0: completed through DONE. */
	uint64_t seq;
	int err;
	atomic_int done;
	/* references: the program's (until released; none for a
	 * synchronous write where nobody waits) and, for an object that is a
	 * core token (WQ_OBJ, WQ_BORROWED), the session's (until completed
	 * and its callback ran); the last one returns it to the pool */
	atomic_int refs;
	uint8_t idx;        /* its index in the chunk */
	uint8_t cb_pending; /* completion callback queued for the I/O thread */
};
_Static_assert(sizeof(struct sio_send_info) == 64, "a completion object is one cache line");

enum ev_kind { EV_MSG, EV_STATE, EV_CONNECT, EV_ERROR, EV_SENT, EV_HERR, EV_DIAG };

/* One delivered message waiting for its handler (s->mq): its bytes in
 * place in the receive buffer (PTR), or in the arena at OFF (PTR NULL). */
struct sio_mrec {
	const uint8_t *ptr;
	size_t off;
	uint32_t len;
	uint32_t type;
};

/* One deferred event. EV_MSG is a run of consecutive messages for the same
 * handler (fn, ctx): the records s->mq[off .. off + len), so that a packet
 * of small messages costs one event, not one per message. */
struct sio_ev {
	uint8_t kind;
	uint8_t in_arena; /* error text copied into the arena */
	uint32_t type;
	int a, b; /* state old/new, error code */
	size_t off, len;
	union {
		sio_message_fn fn;
		sio_handler_error_fn efn;
		sio_send_info *si;
	} u;
	void *ctx;
};

struct sio_handler {
	uint32_t type;
	sio_message_fn fn;
	sio_handler_error_fn efn;
	void *ctx;
	sio_messenger *m; /* messenger queue instead of a callback */
};

/* A byte queue: [head, len) valid inside buf. */
struct sio_bq {
	uint8_t *buf;
	size_t head, len, cap;
};

struct sio_messenger {
	sio_session *s;
	uint32_t type;
	struct sio_bq q; /* records: u32 length (host order) + bytes */
	size_t msgs;
	int paused;
	uint64_t in_msgs, in_bytes, out_msgs, out_bytes;
};

/* MODE_DRIVEN: the session owns no thread and no descriptor; a driver (a
 * listener's worker pool, src/listener/worker.c) runs it. */
enum { MODE_NEW, MODE_THREAD, MODE_LOOP, MODE_DRIVEN };

/* What a driver offers its sessions. */
struct sio_drv {
	/* S has work (input, a write, a close, an earlier deadline): run it
	 * soon. Any thread; S's lock may be held. */
	void (*schedule)(struct sio_drv *d, sio_session *s);
	/* A thread that is not running S frees it: returns once no driver
	 * thread is inside S and S is off the driver's lists (the caller then
	 * destroys it). */
	void (*release)(struct sio_drv *d, sio_session *s);
	/* Event-loop style: runs S now, on the caller's (the loop's) thread;
	 * returns what sio_session_process() returns. */
	int (*process)(struct sio_drv *d, sio_session *s);
	const void *pool; /* its threads set sio_drv_self to this */
	int loop;         /* event-loop style: no call on its sessions blocks */
};
/* The pool the calling thread drives sessions for (NULL: none). */
extern _Thread_local const void *sio_drv_self;

struct sio_session {
	struct sio_shared *sh;
	size_t rd_limit; /* SIO_RD_LIMIT; smaller for a listener's peers */
	pthread_cond_t cond; /* state, read data, ring space, core not busy */
	int waiters;
	sio_core *core;
	sio_tp tp;
	int tp_open;
	int tp_dead;      /* transport ended: no more I/O on it */
	uint64_t refused_tx_seen, refused_rx_seen; /* tp.refused_* passed to the core */
	int sending;      /* a thread is inside sio_flush_out (maybe unlocked) */
	int tx_blocked;   /* the transport is full: wait for POLLOUT */
	int out_more;     /* sio_flush_out stopped with packets still due */
	int input_stalled; /* I/O thread stopped reading (flow control) */
	sio_identity *id; /* references held (sio_identity_ref, sio_remote_ref) */
	sio_remote *remote;
	sio_callbacks cbs;

	uint64_t wq_idle_at; /* consumer: when queued records stop being expected */
	int wq_err;          /* first error a packet of queued messages failed with */
	int wq_full;         /* the last drain stopped: the core's ring was full */
	int wq_fast;         /* messages up to this size may be queued */

	/* cached clock for the write path (see sio_now_cached) */
	uint64_t now_cache;
	unsigned now_uses;
	uint64_t send_delay_ns; /* resolved option */

	int mode;
	/* MODE_DRIVEN: the driver; its lists (run queue, timer heap) are
	 * under the driver's lock, drv_deadline and drv_active under ours. */
	struct sio_drv *drv;
	void *drv_ctx;          /* the driver's entry for us */
	sio_session *drv_next;  /* run queue */
	int drv_queued;
	size_t drv_hidx;        /* timer heap position + 1, 0 = not in it */
	uint64_t drv_due;       /* deadline the heap holds */
	uint64_t drv_deadline;  /* next deadline found by the last run */
	int drv_active;         /* a driver thread is running us (drv_thread) */
	int drv_backlog;        /* the driver holds input for us (our transport's recv) */
	pthread_t drv_thread;
	pthread_t thread;
	int thread_started;
	int core_start_deferred; /* external signer: the I/O thread signs first */
	int wake_fd;     /* eventfd: wakes the I/O thread / the loop's epoll */
	int wake_pending;
	uint64_t io_sleep_until; /* deadline the I/O thread sleeps to (0: awake) */
	int epfd;                /* event-loop mode: what sio_session_fd() returns */
	int rwake_fd;            /* eventfd: wakes a reader polling the transport */
	int rwake_pending;
	int reader_polling;      /* a reader thread polls the transport itself */
	int ep_out;              /* EPOLLOUT currently registered */
	int ep_rfd;              /* input descriptor registered in epfd, or -1 */

	atomic_int state;
	unsigned reached; /* bit per state reached */
	int close_err;    /* error that ended the session, 0 = graceful */
	int last_err;
	int local_close;
	int close_requested;
	int stop;
	int free_on_exit;
	int connected;
	int core_busy;
	pthread_t core_busy_thread;
	int dispatching;
	int confirm; /* sio_confirm_identity session */

	/* deferred events */
	struct sio_ev *evq, *evq2; /* queue, and the spare being dispatched */
	size_t evn, evcap, evcap2;
	struct sio_bq arena, arena2;
	/* messages of the EV_MSG events (swapped with evq, as the arena) */
	struct sio_mrec *mq, *mq2;
	size_t mqn, mqcap, mqcap2;
	/* cb_deliver's last lookup: a message of type rx_ctype joins event
	 * number rx_cev (counted from 1; 0: none) while it is still the last
	 * one. Reset when the queue is swapped and when a handler changes. */
	uint32_t rx_ctype;
	size_t rx_cev;
	/* a delivery to the read stream or a messenger since the last
	 * sio_signal(): readers are woken once per batch of input */
	int rx_signal;

	/* packet being fed to the core (for zero-copy deliveries and learning) */
	const uint8_t *cur_pkt;
	size_t cur_len;
	const struct sockaddr *cur_from; /* its source (datagram sockets), or NULL */
	socklen_t cur_fromlen;

	/* default read stream */
	struct sio_bq rd;

	struct sio_handler *h;
	size_t nh, caph;
	sio_message_fn def_fn;
	void *def_ctx;
	uint64_t drop_unknown_type;

	/* Listener hooks (src/listener/listener.c), NULL otherwise: pkt_hook runs after
	 * each received packet was fed to the core (AUTH = its result, lock
	 * held); free_hook runs once when the session is destroyed. */
	void (*pkt_hook)(void *ctx, const uint8_t *pkt, int auth);
	void (*free_hook)(void *ctx);
	void *hook_ctx;
};

/* session.c */
uint64_t sio_now_ns(void);

/* The deadline TIMEOUT_MS milliseconds from now (UINT64_MAX: -1, forever). */
static inline uint64_t sio_deadline_of(int timeout_ms)
{
	return timeout_ms < 0 ? UINT64_MAX : sio_now_ns() + (uint64_t)timeout_ms * 1000000u;
}

/* A type a program may write or set a handler for. */
static inline int sio_check_type(uint32_t type)
{
	return type <= SIO_CHANNEL_MAX || type == SIO_TYPE_READWRITE;
}
/* Lock held. The clock, read at most every few writes while the I/O thread
 * is busy: reading it costs more than queueing a small message here. A
 * slightly old time only makes a packet's merge deadline earlier. */
uint64_t sio_now_cached(sio_session *s);
/* 1 on the thread that drives S (its I/O thread, or any thread of its
 * driver's pool): such a thread may not block waiting for S. */
int sio_is_io_thread(const sio_session *s);
/* 1 where no call on S may block: event-loop mode, or the driving thread. */
int sio_nonblocking(const sio_session *s);
/* 1 for a program thread of a blocking-style session (own I/O thread or a
 * driver's worker): it may wait, and sends what it writes itself. */
int sio_threaded_caller(const sio_session *s);
int sio_core_enter(sio_session *s); /* lock held; 0 or SIO_ESTATE (inside the core) */
void sio_kick(sio_session *s);      /* lock held: wake the I/O thread if it must act */
void sio_wake(sio_session *s);      /* lock held: wake the I/O thread / the loop */
void sio_flush_out(sio_session *s, uint64_t now);
void sio_wait_cond(sio_session *s, pthread_cond_t *c, int *waiters, uint64_t deadline);
void sio_signal(sio_session *s);
/* A reader found nothing: waits for input until DEADLINE, reading the
 * transport itself when it can (saves a thread hand-off per message). */
void sio_reader_wait(sio_session *s, uint64_t deadline);
int sio_closed_err(const sio_session *s);
int sio_input_ok(const sio_session *s);
/* Lock held: runs the queued events with the lock released (session.c). */
void sio_dispatch(sio_session *s);
/* Lock held, after input was fed to the core: wakes the readers of the read
 * stream and of messengers once if it brought them messages. */
void sio_rx_signal(sio_session *s);
/* Lock held: the session ended: queued messages not sent by now never will be. */
void sio_wq_fail_rest(sio_session *s);
/* A diagnostics line for the program (queued as an event; lock held). */
void sio_diag_push(void *ctx, int level, const char *msg);
/* Frees everything; no thread drives the session any more. */
void sio_session_destroy(sio_session *s);

/* session_io.c */
/* Closed after acknowledging the peer's CLOSE on a datagram transport: the
 * peer's repeated CLOSEs are still read and answered until the linger ends. */
int sio_lingering(const sio_session *s, uint64_t now);
void *sio_io_thread(void *arg); /* the I/O thread (blocking mode) */
/* MODE_DRIVEN, lock held, called by the driver: */
/* everything due now (as one turn of the I/O thread's loop); returns the
 * next deadline (<= now: run again soon), also kept in drv_deadline */
uint64_t sio_session_run(sio_session *s);
/* after sio_session_input(): what sio_session_run() computes once its step
 * is done (the next deadline, the write queue armed), without the step:
 * anything left to do (a timer due, events, a close, queued records) makes
 * it return a time <= now, and the driver runs S */
uint64_t sio_session_settle(sio_session *s);
/* 1 if S can take a packet now (else the driver queues it) */
int sio_session_can_input(const sio_session *s);
/* one packet read by the driver (decrypted in place: the caller wipes it
 * after); answers, deliveries and their callbacks happen before it returns */
void sio_session_input(sio_session *s, uint8_t *pkt, size_t len);
/* Lock held: the driver stops for good: the transport ended (the session
 * closes; its callbacks run on the calling thread). */
void sio_session_cutoff(sio_session *s);
/* Starts S driven by D (instead of sio_session_start/_loop). */
int sio_session_start_driven(sio_session *s, struct sio_drv *d, void *ctx);

/* session_write.c */
/* Lock held: moves the queued records into the core (at most until its
 * rings fill). Returns the number of records moved. */
size_t sio_wq_drain(sio_session *s, uint64_t now);
/* 1 when records are queued and not yet in the core. */
int sio_wq_pending(const sio_session *s);
/* Lock held: wipes the copies of messages already moved into the core.
 * Called when the queue goes idle, not after every batch: while writers
 * are busy the ring is overwritten anyway, and wiping it there would pull
 * its lines away from the writers' cache at every lap. */
void sio_wq_wipe(sio_session *s);
/* Lock held: the session ended: every message not sent by now failed. */
void sio_wq_fail_all(sio_session *s, int err);
/* Lock held: arms the writers' wake-up for the consumer about to sleep
 * (AHEAD: how many queued bytes justify a wake); returns 1 when records
 * are already there (then do not sleep). */
int sio_wq_arm(sio_session *s, uint64_t ahead);
void sio_wq_disarm(sio_session *s);
/* 1 if this process may use membarrier(PRIVATE_EXPEDITED) (registered once;
 * a probe of the kernel's capability, the only process-wide state). */
int sio_wq_membarrier_ok(void);
sio_send_info *sio_si_get(sio_session *s);
/* Returns 1 when its completion callback is pending (the session keeps its
 * reference for it); 0: SI may already be reused. */
int sio_si_complete(sio_send_info *si, int err);
/* Lock held: wakes completion waiters once for all completions since the
 * last call (not once per message). */
void sio_si_broadcast(struct sio_shared *sh);
void sio_si_after_callback(sio_send_info *si);
void sio_si_unref_locked(sio_send_info *si);
/* (session.c) Lock held: the message of SI left (ERR 0) or failed; its
 * callback, if it has one, is queued as an event. */
void sio_si_finish(sio_session *s, sio_send_info *si, int err);
void sio_shared_unref(struct sio_shared *sh); /* session gone */

/* session_msg.c */
int sio_bq_put(struct sio_bq *q, const void *a, size_t alen, const void *b, size_t blen);
void sio_bq_wipe_free(struct sio_bq *q); /* wipes what is unread, frees */
void sio_bq_wipe_all(struct sio_bq *q);  /* wipes [0, len), empties */
struct sio_handler *sio_find_handler(sio_session *s, uint32_t type);
void sio_messenger_push(sio_messenger *m, const uint8_t *data, size_t len);

#endif /* SIO_SESSION_INT_H */
