/*
 * Session layer internals (layer 3), shared by session.c (lifecycle, I/O
 * thread, event loop, events) and session_msg.c (read/write, completions,
 * handlers, messengers).
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

struct sio_shared {
	pthread_mutex_t mu;     /* the session lock */
	pthread_cond_t si_cond; /* completion of any send-info object */
	int si_waiters;
	int si_completed; /* completions since the last broadcast */
	atomic_int session_alive;
	size_t live;               /* send-info objects out of the free list */
	struct sio_send_info *free; /* free list (lock held) */
	/* Released objects come back without the lock: a stack pushed by
	 * sio_send_info_release() and taken whole (lock held) by sio_si_get()
	 * and at session end, which first waits for releasers in flight. */
	_Atomic(struct sio_send_info *) returned;
	atomic_int releasing;
	struct si_chunk *chunks;
};

/* One cache line each: the writer, the I/O thread and the releasing thread
 * touch different objects at the same time. */
struct sio_send_info {
	_Alignas(64) struct sio_shared *sh;
	struct sio_send_info *next;
	sio_session *s; /* valid while inflight or cb_pending */
	sio_send_done_fn fn;
	void *ctx;
	int err;
	atomic_int done;
	/* references: the program's (until released) and the session's (until
	 * completed and its callback ran); the last one returns it to the pool */
	atomic_int refs;
	uint8_t cb_pending; /* completion callback queued for the I/O thread */
};

enum ev_kind { EV_MSG, EV_STATE, EV_CONNECT, EV_ERROR, EV_SENT, EV_HERR, EV_DIAG };

/* One deferred event (kept small: one per delivered message). */
struct sio_ev {
	uint8_t kind;
	uint8_t in_arena; /* message bytes (or error text) copied into the arena */
	uint32_t type;
	int a, b; /* state old/new, error code */
	size_t off, len;
	const uint8_t *ptr; /* message bytes in place in the receive buffer */
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

enum { MODE_NEW, MODE_THREAD, MODE_LOOP };

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

	/* cached clock for the write path (see sio_now_cached) */
	uint64_t now_cache;
	unsigned now_uses;
	uint64_t send_delay_ns; /* resolved option */

	int mode;
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
/* Lock held. The clock, read at most every few writes while the I/O thread
 * is busy: reading it costs more than queueing a small message here. A
 * slightly old time only makes a packet's merge deadline earlier. */
uint64_t sio_now_cached(sio_session *s);
int sio_is_io_thread(const sio_session *s);
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

/* session_msg.c */
sio_send_info *sio_si_get(sio_session *s);
void sio_si_complete(sio_send_info *si, int err);
/* Lock held: wakes completion waiters once for all completions since the
 * last call (not once per message). */
void sio_si_broadcast(struct sio_shared *sh);
void sio_si_after_callback(sio_send_info *si);
void sio_si_unref_locked(sio_send_info *si);
void sio_shared_unref(struct sio_shared *sh); /* session gone */
int sio_bq_put(struct sio_bq *q, const void *a, size_t alen, const void *b, size_t blen);
void sio_bq_wipe_free(struct sio_bq *q); /* wipes what is unread, frees */
void sio_bq_wipe_all(struct sio_bq *q);  /* wipes [0, len), empties */
struct sio_handler *sio_find_handler(sio_session *s, uint32_t type);
void sio_messenger_push(sio_messenger *m, const uint8_t *data, size_t len);

#endif /* SIO_SESSION_INT_H */
