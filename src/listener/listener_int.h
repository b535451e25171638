/*
 * Listener internals (src/listener/listener.c: tables, routing, threads;
 * src/listener/listener_kx.c: checks of a new peer's first packet and cookies).
 *
 * Locking: l->mu protects the peer table, every peer's queue and address,
 * the allowed set and the counters. It is never held while calling into a
 * session (sessions call our transport callbacks with their own lock held,
 * and those take l->mu: the order is session lock, then l->mu).
 */
#ifndef SIO_LISTENER_INT_H
#define SIO_LISTENER_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>

#include "kx.h"
#include "secureio.h"
#include "session_int.h"
#include "transport.h"

#define SIO_L_PREFIX (1 + SIO_LISTENER_CID_BYTES)
#define SIO_L_QMAX 64 /* packets queued per peer */
#define SIO_L_INBOX_MAX 4096 /* datagrams handed to a worker and not yet taken */
/* bytes queued per peer: established, and still in key exchange (a few
 * key-exchange messages and the first data packets) */
#define SIO_L_QBYTES (512u * 1024u)
#define SIO_L_QBYTES_HALF (64u * 1024u)
/* Memory (docs/API.md, "Listener memory"): what a peer reserves out of
 * max_memory for its own state and buffers, plus its input queue; the
 * smaller defaults of a listener's peer sessions.
 *
 * The buffers exist only while a session is busy (docs/ARCHITECTURE.md,
 * "Memory of an idle session"; an idle one holds about 18 KiB with this
 * table's entry) but a peer can make its session busy, so the reservation
 * is the most they reach, for packets of up to MP bytes (stride: MP + 8
 * rounded up to 16; slots: 1 MiB / MP within 8..256):
 *  - fixed, 150 KiB: this entry, the session, its core (about 15 KiB
 *    together, event queues at 64 entries 7 KiB), token ring at its 4096
 *    entries and the half-size one it grew from (96 KiB), AEAD contexts
 *    of 3 live key slots (6 KiB), their replay bitmaps (3 KiB at the
 *    default window), the reassembly table (64 partials, 19.5 KiB), the
 *    key-exchange ring (1.3 KiB);
 *  - per ring slot (data ring, plus 8 control): a buffer, its slot and a
 *    chunk pointer (stride + 104), and half the slots again while a full
 *    data ring doubles (88 each);
 *  - the receive slot of the custom transport (64 KiB at least; a
 *    listener hands its peer one packet at a time, so one slot).
 * Not counted: what the program itself does with the session (its write
 * queue, 256 KiB once it writes small messages; messengers it opens).
 * With the listener's default packets (1452 bytes) that is 632 KiB; with
 * 64 KiB packets 1.7 MiB. listener.c reserves SIO_L_BASE_FOR(the peers'
 * max_packet_size), at least SIO_L_BASE_BYTES (the default's figure). */
#define SIO_L_STRIDE(mp) ((((uint64_t)(mp)) + 8u + 15u) & ~(uint64_t)15u)
#define SIO_L_SLOTS(mp)                                                                  \
	((1u << 20) / (mp) < 8u ? 8u : (1u << 20) / (mp) > 256u ? 256u : (1u << 20) / (mp))
#define SIO_L_BASE_FOR(mp)                                                               \
	((uint64_t)150u * 1024u + (SIO_L_SLOTS(mp) + 8u) * (SIO_L_STRIDE(mp) + 104u) +      \
	 SIO_L_SLOTS(mp) / 2u * 88u + ((mp) > 65536u ? (uint64_t)(mp) : 65536u) + 256u)
#define SIO_L_BASE_BYTES (640u * 1024u)
_Static_assert(SIO_L_BASE_FOR(1452u) <= SIO_L_BASE_BYTES,
	       "the reservation covers a peer at the default packet size");
#define SIO_L_PEER_MAX_MESSAGE (256u * 1024u)
#define SIO_L_PEER_REASSEMBLY (512u * 1024u)
#define SIO_L_PEER_UNREAD (256u * 1024u)
#define SIO_L_MIN_MEMORY (64ull << 20)
#define SIO_L_COOKIE_BYTES 16
#define SIO_L_COOKIE_MARK 0x21 /* listener -> client: cookie reply */
#define SIO_L_COOKIE_ROTATE_NS 120000000000ull
/* To an address not validated yet, at most this many times the bytes
 * received from it (RFC 9000 §8.1) */
#define SIO_L_AMP_FACTOR 3u
/* first key-exchange messages remembered (docs/PROTOCOL.md §13.2):
 * slots, probes per lookup */
#define SIO_L_SEEN_MIN 4096u
#define SIO_L_SEEN_PROBES 8u

struct lseen {
	uint64_t h;  /* keyed hash of the (inner) message; 0 = free */
	uint64_t at; /* when admitted */
	uint8_t cid[SIO_LISTENER_CID_BYTES];
};

struct lpkt {
	uint8_t *data;
	uint16_t len;
	socklen_t flen;
	struct sockaddr_storage from;
};

struct lworker;

/* A peer. Its session is driven by one worker, w, the one its connection
 * id names (owner()). Fields by lock: cid, w, created_ns: fixed; s, the
 * table and list links: w->mu; addr, cand, validated, rx_unval, tx_unval:
 * the session's lock (sends and input run under it); q (input waiting while
 * the session cannot take it): w's thread only; established, accepted,
 * in_acceptq, anext, reserved: l->mu; failed, detached and dud are atomic. */
struct lpeer {
	uint8_t cid[SIO_LISTENER_CID_BYTES];
	struct lworker *w;
	struct lpeer *hnext;          /* hash chain */
	struct lpeer *next, *prev;    /* the worker's peers */
	struct lpeer *hnext_half, *hprev_half; /* the worker's half-open peers */
	int in_half;
	struct sio_listener *l;
	sio_session *s;
	struct sockaddr_storage addr; /* where replies go */
	socklen_t alen;
	struct sockaddr_storage cand; /* source of the packet being processed */
	socklen_t clen;
	uint8_t cand_kind;            /* first byte of that packet */
	int handed;                   /* one queued packet handed to the session */
	/* Anti-amplification: until an authenticated data packet (or a valid
	 * cookie) came from addr, what we send there stays within
	 * SIO_L_AMP_FACTOR times what arrived from it. */
	int validated;
	uint64_t rx_unval, tx_unval;
	uint64_t reserved; /* bytes of l->mem_budget held (peer_half, then peer_full) */
	struct lpkt *q;    /* SIO_L_QMAX slots, allocated while packets wait */
	unsigned qhead, qlen;
	size_t qbytes; /* bytes queued (SIO_L_QBYTES / SIO_L_QBYTES_HALF) */
	uint64_t created_ns;
	int established, accepted, in_acceptq;
	atomic_int failed, detached;
	/* its session has not accepted a key-exchange message yet (kx_ok 0)
	 * and dropped one: the message that created it was forged (a bad
	 * signature, ...), so it is freed at once (sio_l_reap_dud, or the
	 * sweep) rather than at the half-open timeout (pkt_hook; W's thread) */
	int kx_ok;
	atomic_int dud;
	struct lpeer *anext;          /* accept queue */
};

/* A datagram handed from the worker that read it to the one owning its
 * connection id. */
struct lhand {
	struct lhand *next;
	socklen_t flen;
	struct sockaddr_storage from;
	size_t len;
	uint8_t data[];
};

/* Per-worker counters (atomic: read by sio_listener_stats_get). */
enum { WS_HANDOFFS, WS_ROAMS, WS_AMP, WS_QUEUE, WS_UNKNOWN, WS_N };

/* A worker: a thread (or, in event-loop style, the program's calls to
 * sio_listener_process) that reads a socket and drives its peers' sessions.
 * mu guards the run queue, the timer heap, the peer table and lists, the
 * inbox and cur; the session's lock is never taken while mu is held. */
struct lworker {
	struct sio_drv drv; /* the driver its sessions see (first member) */
	struct sio_listener *l;
	unsigned idx;
	pthread_t thread;
	int started;
	int fd, own_fd; /* the socket it reads (its own with SO_REUSEPORT) */
	int efd;        /* eventfd: wakes it */
	int epfd;       /* event-loop style: fd + efd, what sio_listener_fd gives */
	pthread_mutex_t mu;
	pthread_cond_t cond; /* cur changed (a release waits for it) */
	int sleeping, signalled, stop;
	sio_session *cur; /* the session its thread is inside now */
	int cur_waiters;
	sio_session *rq_head, *rq_tail; /* run queue */
	sio_session **heap;              /* timers: min-heap on drv_due */
	size_t hn, hcap;
	struct lpeer **ht; /* its peers by connection id */
	size_t hsize;
	struct lpeer *all, *half;
	size_t npeers;
	struct lhand *in_head, *in_tail; /* handed over by other workers */
	unsigned nin;
	uint64_t last_sweep;
	uint8_t *rbuf; /* receive batch */
	_Atomic uint64_t ws[WS_N];
};

/* Listener diagnostics (listener_diag.c): lines wait here (under mu) until
 * the reading thread hands them to lo.on_diag after unlocking. */
#define SIO_L_DIAG_Q 16
#define SIO_L_DIAG_LEN 160
#define SIO_L_DIAG_KEYS 16
#define SIO_L_DIAG_REASONS 10
struct ldiag {
	char line[SIO_L_DIAG_Q][SIO_L_DIAG_LEN];
	int level[SIO_L_DIAG_Q];
	unsigned n;
	uint64_t lost; /* lines that found the queue full */
	uint8_t refused[SIO_L_DIAG_KEYS][32];
	uint32_t nrefused;
	uint64_t verify_tat;
	uint64_t seen[SIO_L_DIAG_REASONS], quiet_until[SIO_L_DIAG_REASONS];
};

struct sio_listener {
	pthread_mutex_t mu;
	pthread_cond_t cond; /* accept queue */
	pthread_mutex_t diag_mu; /* one on_diag caller at a time */
	int fd, close_fd;
	int family;
	sio_identity *id; /* a reference held (sio_identity_ref) */
	sio_remote *allowed;
	sio_listener_options lo;
	sio_options sopts;
	sio_psk_keys psk; /* derived from sopts.psk: admission unwraps with it */
	sio_callbacks ucbs; /* the program's session callbacks */
	int has_ucbs;
	int mode; /* 0 new, 1 thread, 2 loop */
	int stop;
	int refs; /* 1 for the program + 1 per live peer */

	struct lworker **w; /* the workers; the peer of connection id c is
			       w[owner_index(c)] */
	unsigned nw;
	int steered; /* a reuseport program sends datagrams to the owner */

	struct lpeer *aq_head, *aq_tail;
	uint32_t nsessions, nhalf;
	uint64_t half_open_timeout_ns;

	/* cookies: secret rotated every SIO_L_COOKIE_ROTATE_NS; the previous
	 * one is still accepted */
	uint8_t secret[32], prev_secret[32];
	uint64_t secret_at;

	/* first key-exchange messages admitted lately: a replay under another
	 * connection id creates nothing (slots: power of two) */
	struct lseen *seen;
	size_t nseen;
	uint8_t seen_key[16];
	uint64_t seen_ttl_ns;

	/* memory budget: reserved by live peers, what one reserves during its
	 * key exchange and once its identity is proven */
	uint64_t mem_used, mem_budget, peer_half, peer_full;

	sio_listener_stats st;
	struct ldiag dg; /* used only with lo.on_diag */
};

/* The worker owning connection id CID: its first four bytes, big-endian,
 * modulo the number of workers (the reuseport program computes the same). */
static inline unsigned sio_l_owner(const struct sio_listener *l, const uint8_t *cid)
{
	uint32_t v = (uint32_t)cid[0] << 24 | (uint32_t)cid[1] << 16 | (uint32_t)cid[2] << 8 | cid[3];
	return l->nw > 1 ? v % l->nw : 0;
}

/* worker.c */
/* Creates the workers (N of them; their sockets), not started. */
int sio_l_workers_new(struct sio_listener *l, unsigned n);
int sio_l_workers_start(struct sio_listener *l);
/* Stops and joins the workers (none runs afterwards). */
void sio_l_workers_stop(struct sio_listener *l);
void sio_l_workers_free(struct sio_listener *l);
/* One turn of worker W without sleeping (event-loop style). */
void sio_l_worker_turn(struct lworker *w);
/* Milliseconds until W has something to do (event-loop style). */
int sio_l_worker_timeout_ms(struct lworker *w);

/* listener.c, used by worker.c */
/* A datagram for the unknown connection id CID reached its owner W:
 * admission, and a new peer (NULL when refused or dropped: counted). */
struct lpeer *sio_l_peer_new(struct lworker *w, const uint8_t *cid, const uint8_t *pkt, size_t plen,
			     const uint8_t *cookie, const struct sockaddr *from, socklen_t flen, uint64_t now);
/* Lock held (w->mu): P by connection id. */
struct lpeer *sio_l_lookup(struct lworker *w, const uint8_t *cid);
/* Worker thread: half-open exchanges that failed or took too long go. */
void sio_l_sweep(struct lworker *w, uint64_t now);
/* W's thread, after the datagram that created P went to its session: if
 * that message failed its checks (and no valid one came), P goes now. */
void sio_l_reap_dud(struct lworker *w, struct lpeer *p);
/* Queues a copy of PKT for P (its session cannot take it now); 0 or -1
 * (dropped: counted). W's thread, the session's lock held. */
int sio_l_enqueue(struct lpeer *p, const uint8_t *pkt, size_t len, const struct sockaddr *from,
		  socklen_t flen);
/* The session's lock held: accounts a datagram from FROM (anti-amplification). */
void sio_l_note_rx(struct lpeer *p, size_t len, const struct sockaddr *from, socklen_t flen);
/* Counts a drop in the listener's stats. */
void sio_l_count(struct sio_listener *l, uint64_t *field);

/* listener_kx.c */
/* Checks a datagram (prefix removed) that would create a new peer, lock held.
 * Returns 0 to create it (*VALIDATED: it echoed a valid cookie, so its source
 * address is proven), 1 when a cookie reply was sent instead, or -1 when
 * dropped (counted). */
int sio_l_admit(struct sio_listener *l, const uint8_t *cid, const uint8_t *pkt, size_t len,
		const uint8_t *cookie, const struct sockaddr *from, socklen_t flen, uint64_t now,
		int *validated);
/* Splits a datagram: checks the prefix, returns the inner packet and any
 * cookie (a client's echo: MARK || cid || 0x22 || cookie(16) || packet).
 * Returns 0 or -1 (malformed). */
int sio_l_parse(const uint8_t *buf, size_t len, const uint8_t **cid, const uint8_t **pkt, size_t *plen,
		const uint8_t **cookie);
void sio_l_cookie(struct sio_listener *l, const uint8_t *secret, const uint8_t *cid,
		  const struct sockaddr *from, socklen_t flen, uint8_t out[SIO_L_COOKIE_BYTES]);

/* listener_diag.c (mu held, lo.on_diag set): a first key exchange MSG from
 * identity PK outside the allowed set; the drop summaries due at NOW. */
void sio_l_diag_refused(struct sio_listener *l, const uint8_t *msg, const uint8_t *pk, uint64_t now);
void sio_l_diag_drops(struct sio_listener *l, uint64_t now);
/* Unlocked: hands the queued lines to lo.on_diag (one thread at a time:
 * the one reading the socket). */
void sio_l_diag_flush(struct sio_listener *l);

#endif
