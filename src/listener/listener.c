/*
 * Listener: many peer sessions over one datagram socket (server mode).
 *
 * Every datagram from a client starts with a 9-byte prefix (mark, 8-byte
 * connection id chosen by the client). The listener's workers (worker.c)
 * route by connection id; each peer is an ordinary sio_session, driven by
 * its worker (MODE_DRIVEN), over a custom datagram transport whose send is a
 * sendto() on the worker's socket, to the peer's current address, and whose
 * recv pops the packets that had to wait while the session could not take
 * them. The address moves only after the session authenticated a data
 * packet from a new source (pkt_hook). This file: creation, admission of
 * new peers, the peer's transport and callbacks, accept, free. See
 * src/listener/listener_int.h for the locking rules.
 */
#include <errno.h>
#include <poll.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "listener_int.h"
#include "options.h"
#include "session_int.h"

#define DEFAULT_MAX_SESSIONS 65536u
#define DEFAULT_MAX_HALF_OPEN 1024u
#define DEFAULT_HALF_OPEN_NS 10000000000ull

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint8_t hash_key[crypto_shorthash_KEYBYTES];
static pthread_once_t hash_once = PTHREAD_ONCE_INIT;
static void hash_init(void)
{
	randombytes_buf(hash_key, sizeof(hash_key));
}

static size_t bucket(const struct lworker *w, const uint8_t *cid)
{
	uint8_t h[crypto_shorthash_BYTES];
	crypto_shorthash(h, cid, SIO_LISTENER_CID_BYTES, hash_key);
	uint64_t v;
	memcpy(&v, h, 8);
	return (size_t)(v & (w->hsize - 1));
}

struct lpeer *sio_l_lookup(struct lworker *w, const uint8_t *cid)
{
	for (struct lpeer *p = w->ht[bucket(w, cid)]; p; p = p->hnext)
		if (memcmp(p->cid, cid, SIO_LISTENER_CID_BYTES) == 0)
			return p;
	return NULL;
}

void sio_l_count(struct sio_listener *l, uint64_t *field)
{
	pthread_mutex_lock(&l->mu);
	(*field)++;
	pthread_mutex_unlock(&l->mu);
}

static void wcount(struct lworker *w, int i)
{
	atomic_fetch_add_explicit(&w->ws[i], 1, memory_order_relaxed);
}

static void destroy(struct sio_listener *l)
{
	sio_l_workers_free(l);
	if (l->close_fd && l->fd >= 0)
		close(l->fd);
	sio_remote_free(l->allowed);
	sio_identity_free(l->id);
	sodium_memzero(l->secret, sizeof(l->secret));
	sodium_memzero(l->prev_secret, sizeof(l->prev_secret));
	sodium_memzero(&l->psk, sizeof(l->psk));
	if (l->sopts.psk)
		sodium_memzero((void *)l->sopts.psk, l->sopts.psk_len);
	free((void *)l->sopts.psk);
	free(l->seen);
	pthread_mutex_destroy(&l->mu);
	pthread_mutex_destroy(&l->diag_mu);
	pthread_cond_destroy(&l->cond);
	free(l);
}

/* Lock held: drops one reference; returns 1 if the listener must now be
 * destroyed (by the caller, after unlocking). */
static int unref_locked(struct sio_listener *l)
{
	return --l->refs == 0;
}

/* ---- the peer's transport ------------------------------------------------ */

/* Called with the session's lock held (every send of a custom transport is
 * made under it), on whichever thread sends. */
static ssize_t l_send(void *ctx, const void *buf, size_t len)
{
	struct lpeer *p = ctx;
	if (atomic_load_explicit(&p->detached, memory_order_relaxed))
		return -EPIPE;
	/* An address that has not proven it receives our packets (no
	 * authenticated data packet, no valid cookie from it yet) may be a
	 * victim's, spoofed: at most SIO_L_AMP_FACTOR times what came from it,
	 * the rest is not sent (as if lost: the peer's retries, which count as
	 * received bytes, bring our message again). */
	if (!p->validated) {
		if (p->tx_unval + len > SIO_L_AMP_FACTOR * p->rx_unval) {
			wcount(p->w, WS_AMP);
			return (ssize_t)len;
		}
		p->tx_unval += len;
	}
	for (;;) {
		ssize_t r = sendto(p->w->fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&p->addr,
				   p->alen);
		if (r >= 0)
			return (ssize_t)len;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return -EAGAIN;
		return (ssize_t)len; /* lost on the path (refused, unreachable, ...) */
	}
}

/* Several datagrams at once (one system call), as l_send would send them. */
static int l_sendv(void *ctx, const struct iovec *pkts, size_t n)
{
	struct lpeer *p = ctx;
	if (atomic_load_explicit(&p->detached, memory_order_relaxed))
		return -EPIPE;
	struct mmsghdr m[SIO_TP_BATCH];
	size_t k = 0, i;
	if (n > SIO_TP_BATCH)
		n = SIO_TP_BATCH;
	for (i = 0; i < n; i++) {
		if (!p->validated) {
			/* (what the amplification limit withholds counts as sent) */
			if (p->tx_unval + pkts[i].iov_len > SIO_L_AMP_FACTOR * p->rx_unval) {
				wcount(p->w, WS_AMP);
				continue;
			}
			p->tx_unval += pkts[i].iov_len;
		}
		memset(&m[k].msg_hdr, 0, sizeof(m[k].msg_hdr));
		m[k].msg_hdr.msg_iov = (struct iovec *)&pkts[i];
		m[k].msg_hdr.msg_iovlen = 1;
		m[k].msg_hdr.msg_name = &p->addr;
		m[k].msg_hdr.msg_namelen = p->alen;
		k++;
	}
	size_t done = 0;
	while (done < k) {
		int r = sendmmsg(p->w->fd, m + done, (unsigned)(k - done), MSG_DONTWAIT | MSG_NOSIGNAL);
		if (r > 0) {
			done += (size_t)r;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && k == n)
			return (int)done; /* the socket is full: the rest later */
		break; /* lost on the path (refused, unreachable, ...) */
	}
	return (int)n;
}

/* The packets that waited while the session could not take them, one at a
 * time: the session reports (pkt_hook) whether one was authentic before it
 * gets the next, so we know which source to adopt. The worker's thread. */
static ssize_t l_recv(void *ctx, void *buf, size_t len)
{
	struct lpeer *p = ctx;
	if (atomic_load_explicit(&p->detached, memory_order_relaxed))
		return 0;
	if (p->handed || p->qlen == 0)
		return -EAGAIN;
	struct lpkt *k = &p->q[p->qhead];
	size_t n = k->len < len ? k->len : len;
	memcpy(buf, k->data, n);
	memcpy(&p->cand, &k->from, k->flen);
	p->clen = k->flen;
	p->cand_kind = k->data[0];
	p->qbytes -= k->len;
	sodium_memzero(k->data, k->len);
	free(k->data);
	k->data = NULL;
	p->qhead = (p->qhead + 1) % SIO_L_QMAX;
	if (--p->qlen == 0) {
		free(p->q); /* an idle peer holds no queue */
		p->q = NULL;
		p->qhead = 0;
		p->s->drv_backlog = 0;
	}
	p->handed = 1;
	return (ssize_t)n;
}

int sio_l_enqueue(struct lpeer *p, const uint8_t *pkt, size_t len, const struct sockaddr *from, socklen_t flen)
{
	/* bounded in packets and in bytes: a half-open peer needs no more
	 * than its key exchange and the first data */
	size_t budget = p->established ? SIO_L_QBYTES : SIO_L_QBYTES_HALF;
	if (p->qlen >= SIO_L_QMAX || len > UINT16_MAX || flen > sizeof(p->addr) ||
	    p->qbytes + len > budget)
		goto drop;
	if (!p->q && !(p->q = calloc(SIO_L_QMAX, sizeof(*p->q))))
		goto drop;
	uint8_t *d = malloc(len);
	if (!d)
		goto drop;
	memcpy(d, pkt, len);
	struct lpkt *k = &p->q[(p->qhead + p->qlen) % SIO_L_QMAX];
	k->data = d;
	k->len = (uint16_t)len;
	memcpy(&k->from, from, flen);
	k->flen = flen;
	p->qbytes += len;
	p->qlen++;
	return 0;
drop:
	wcount(p->w, WS_QUEUE);
	return -1;
}

void sio_l_note_rx(struct lpeer *p, size_t len, const struct sockaddr *from, socklen_t flen)
{
	if (!p->validated && flen == p->alen && memcmp(from, &p->addr, flen) == 0)
		p->rx_unval += len + SIO_L_PREFIX; /* the datagram, as it came */
}

/* The session's lock held, after each packet it was given. */
static void pkt_hook(void *ctx, const uint8_t *pkt, int auth)
{
	struct lpeer *p = ctx;
	(void)pkt;
	p->handed = 0;
	/* A half-open slot is held only by an exchange that may succeed: the
	 * first message the session took (the one admission let through:
	 * layout and identity only, no signature check there) failed its
	 * checks, so one host without any valid key could otherwise keep
	 * every slot busy until the half-open timeout. A valid message before
	 * the entry is freed (the client's own, after a forged copy under its
	 * id) keeps the slot. */
	if (!p->kx_ok) {
		if (auth == SIO_CORE_RX_KX) {
			p->kx_ok = 1;
			atomic_store(&p->dud, 0);
		} else if (auth == SIO_CORE_RX_DROP) {
			atomic_store(&p->dud, 1);
		}
	}
	/* roaming: only an authenticated data packet moves the peer, and it
	 * validates the address it came from (a key-exchange message does
	 * neither: anyone can replay one) */
	if (auth == SIO_CORE_RX_DATA && (p->cand_kind & 0xc0) == 0x40 && p->clen > 0) {
		if (p->clen != p->alen || memcmp(&p->cand, &p->addr, p->clen) != 0) {
			memcpy(&p->addr, &p->cand, p->clen);
			p->alen = p->clen;
			wcount(p->w, WS_ROAMS);
		}
		p->validated = 1;
	}
}

/* w->mu held: P leaves W's list of half-open peers (what its sweep reads). */
static void half_unlink(struct lworker *w, struct lpeer *p)
{
	if (!p->in_half)
		return;
	if (p->hprev_half)
		p->hprev_half->hnext_half = p->hnext_half;
	else
		w->half = p->hnext_half;
	if (p->hnext_half)
		p->hnext_half->hprev_half = p->hprev_half;
	p->in_half = 0;
}

/* P leaves its worker's table and lists (w->mu), and the listener's counts
 * and accept queue (l->mu). */
static void peer_unlink(struct sio_listener *l, struct lpeer *p)
{
	struct lworker *w = p->w;
	pthread_mutex_lock(&w->mu);
	struct lpeer **pp = &w->ht[bucket(w, p->cid)];
	while (*pp && *pp != p)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = p->hnext;
	if (p->prev)
		p->prev->next = p->next;
	else if (w->all == p)
		w->all = p->next;
	if (p->next)
		p->next->prev = p->prev;
	half_unlink(w, p);
	w->npeers--;
	pthread_mutex_unlock(&w->mu);
	pthread_mutex_lock(&l->mu);
	if (p->in_acceptq) {
		struct lpeer **ap = &l->aq_head, *last = NULL;
		while (*ap && *ap != p) {
			last = *ap;
			ap = &(*ap)->anext;
		}
		if (*ap)
			*ap = p->anext;
		if (l->aq_tail == p)
			l->aq_tail = last;
		p->in_acceptq = 0;
	}
	if (p->established)
		l->nsessions--;
	else
		l->nhalf--;
	l->mem_used -= p->reserved;
	p->reserved = 0;
	pthread_mutex_unlock(&l->mu);
}

static void peer_free(struct lpeer *p)
{
	for (unsigned i = 0; p->q && i < p->qlen; i++) {
		struct lpkt *k = &p->q[(p->qhead + i) % SIO_L_QMAX];
		sodium_memzero(k->data, k->len);
		free(k->data);
	}
	free(p->q);
	free(p);
}

static void free_hook(void *ctx)
{
	struct lpeer *p = ctx;
	struct sio_listener *l = p->l;
	peer_unlink(l, p);
	peer_free(p);
	pthread_mutex_lock(&l->mu);
	int d = unref_locked(l);
	pthread_mutex_unlock(&l->mu);
	if (d)
		destroy(l);
}

/* ---- the peer's session callbacks ---------------------------------------- */

static void cb_state(sio_session *s, sio_state o, sio_state n, void *ctx)
{
	struct lpeer *p = ctx;
	struct sio_listener *l = p->l;
	int now_established = 0;
	pthread_mutex_lock(&l->mu);
	/* a peer the sweep has picked (detached) is being freed by it: it
	 * must never reach the program too */
	if (n == SIO_STATE_ESTABLISHED && !p->established && !atomic_load(&p->failed) &&
	    !atomic_load(&p->detached)) {
		p->established = 1;
		now_established = 1;
		l->nhalf--;
		l->nsessions++;
		l->st.accepted++;
		p->anext = NULL;
		if (l->aq_tail)
			l->aq_tail->anext = p;
		else
			l->aq_head = p;
		l->aq_tail = p;
		p->in_acceptq = 1;
		pthread_cond_broadcast(&l->cond);
	} else if (n == SIO_STATE_CLOSED && !p->established) {
		atomic_store(&p->failed, 1);
	}
	pthread_mutex_unlock(&l->mu);
	if (now_established) {
		/* off the worker's half-open list (what its sweep looks at) */
		struct lworker *w = p->w;
		pthread_mutex_lock(&w->mu);
		half_unlink(w, p);
		pthread_mutex_unlock(&w->mu);
	}
	if (l->ucbs.on_state)
		l->ucbs.on_state(s, o, n, l->ucbs.ctx);
}

static void cb_connect(sio_session *s, void *ctx)
{
	struct lpeer *p = ctx;
	if (p->l->ucbs.on_connect)
		p->l->ucbs.on_connect(s, p->l->ucbs.ctx);
}

static void cb_error(sio_session *s, int err, const char *msg, void *ctx)
{
	struct lpeer *p = ctx;
	if (p->l->ucbs.on_error)
		p->l->ucbs.on_error(s, err, msg, p->l->ucbs.ctx);
}

static void cb_diag(sio_session *s, int level, const char *msg, void *ctx)
{
	struct lpeer *p = ctx;
	p->l->ucbs.on_diag(s, level, msg, p->l->ucbs.ctx);
}

/* Runs inside the packet that proved the identity, on the peer's worker
 * (the session's lock released: cb_remote_identity). */
static int cb_identity(sio_session *s, const uint8_t pk[SIO_PUBLIC_KEY_BYTES], void *ctx)
{
	struct lpeer *p = ctx;
	struct sio_listener *l = p->l;
	pthread_mutex_lock(&l->mu);
	/* from="..." restrictions: the source of the key exchange being
	 * processed */
	int ok = !l->allowed ||
	         (p->clen ? sio_remote_allows(l->allowed, pk, (const struct sockaddr *)&p->cand, p->clen)
	                  : sio_remote_allows(l->allowed, pk, (const struct sockaddr *)&p->addr, p->alen));
	if (!ok) {
		l->st.drop_unauthorized++;
	} else if (p->reserved < l->peer_full) {
		/* a proven peer may now hold data: its full share of the budget */
		if (l->mem_used - p->reserved + l->peer_full > l->mem_budget) {
			l->st.drop_memory++;
			ok = 0;
		} else {
			l->mem_used += l->peer_full - p->reserved;
			p->reserved = l->peer_full;
		}
	}
	pthread_mutex_unlock(&l->mu);
	if (!ok)
		return 1;
	if (l->lo.on_peer && l->lo.on_peer(l, pk, l->lo.ctx) != 0) {
		sio_l_count(l, &l->st.drop_refused);
		return 1;
	}
	if (l->ucbs.on_remote_identity)
		return l->ucbs.on_remote_identity(s, pk, l->ucbs.ctx);
	return 0;
}

/* ---- creation ------------------------------------------------------------ */

int sio_listener_new(sio_listener **out, const sio_identity *id, int fd, const sio_remote *allowed,
		     const sio_listener_options *lo)
{
	if (!out || !id || fd < 0)
		return SIO_EINVAL;
	*out = NULL;
	int type = 0;
	socklen_t tl = sizeof(type);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 || type != SOCK_DGRAM)
		return SIO_EINVAL;
	pthread_once(&hash_once, hash_init);
	sio_listener *l = calloc(1, sizeof(*l));
	if (!l)
		return SIO_ENOMEM;
	pthread_mutex_init(&l->mu, NULL);
	pthread_mutex_init(&l->diag_mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&l->cond, &ca);
	pthread_condattr_destroy(&ca);
	l->fd = fd;
	l->id = sio_identity_ref(id);
	l->refs = 1;
	if (lo)
		l->lo = *lo;
	l->close_fd = l->lo.close_fd;
	if (!l->lo.max_sessions)
		l->lo.max_sessions = DEFAULT_MAX_SESSIONS;
	if (!l->lo.max_half_open)
		l->lo.max_half_open = DEFAULT_MAX_HALF_OPEN;
	l->half_open_timeout_ns =
		l->lo.half_open_timeout_ns > 0 ? (uint64_t)l->lo.half_open_timeout_ns : DEFAULT_HALF_OPEN_NS;
	if (l->lo.session_opts)
		l->sopts = *l->lo.session_opts;
	l->lo.session_opts = NULL;
	if (l->lo.session_cbs) {
		l->ucbs = *l->lo.session_cbs;
		l->has_ucbs = 1;
	}
	l->lo.session_cbs = NULL;
	int r = SIO_ENOMEM;
	if (l->sopts.psk && l->sopts.psk_len) {
		uint8_t *k = malloc(l->sopts.psk_len);
		if (!k) {
			l->sopts.psk = NULL; /* the program's: not ours to free */
			goto fail;
		}
		memcpy(k, l->sopts.psk, l->sopts.psk_len);
		l->sopts.psk = k;
		sio_psk_derive(&l->psk, k, l->sopts.psk_len);
	} else {
		l->sopts.psk = NULL;
		l->sopts.psk_len = 0;
	}
	l->sopts.listener_peer = 0;
	/* smaller defaults for a listener's peers, and the budget they share */
	if (!l->sopts.max_message_size)
		l->sopts.max_message_size = SIO_L_PEER_MAX_MESSAGE;
	if (!l->sopts.max_reassembly_bytes)
		l->sopts.max_reassembly_bytes = SIO_L_PEER_REASSEMBLY;
	if (!l->lo.peer_unread_bytes)
		l->lo.peer_unread_bytes = SIO_L_PEER_UNREAD;
	if (!l->lo.max_memory) {
		long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
		l->lo.max_memory = pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz / 4 : 1ull << 30;
		if (l->lo.max_memory < SIO_L_MIN_MEMORY)
			l->lo.max_memory = SIO_L_MIN_MEMORY;
	}
	l->mem_budget = l->lo.max_memory;
	/* a peer's own buffers, for the packet size its session may use */
	uint64_t mp = l->sopts.max_packet_size ? (uint64_t)l->sopts.max_packet_size : SIO_DEFAULT_MAX_PACKET_DGRAM;
	uint64_t base = SIO_L_BASE_FOR(mp) > SIO_L_BASE_BYTES ? SIO_L_BASE_FOR(mp) : SIO_L_BASE_BYTES;
	l->peer_half = base + SIO_L_QBYTES_HALF;
	uint64_t reasm = l->sopts.max_reassembly_bytes > l->sopts.max_message_size
				 ? l->sopts.max_reassembly_bytes
				 : l->sopts.max_message_size;
	l->peer_full = base + SIO_L_QBYTES + reasm + l->sopts.max_message_size +
		       l->lo.peer_unread_bytes;
	/* the record of first messages: room for every half-open exchange
	 * several times over, kept as long as one may live, twice over */
	l->nseen = SIO_L_SEEN_MIN;
	while (l->nseen < 4u * (size_t)l->lo.max_half_open && l->nseen < (1u << 22))
		l->nseen <<= 1;
	l->seen = calloc(l->nseen, sizeof(*l->seen));
	randombytes_buf(l->seen_key, sizeof(l->seen_key));
	l->seen_ttl_ns = 2 * l->half_open_timeout_ns;
	if (!l->seen)
		goto fail;
	if (allowed && (r = sio_listener_set_allowed(l, allowed)) < 0)
		goto fail;
	randombytes_buf(l->secret, sizeof(l->secret));
	randombytes_buf(l->prev_secret, sizeof(l->prev_secret));
	l->secret_at = mono_ns();
	*out = l;
	return 0;
fail:
	l->close_fd = 0;
	destroy(l);
	return r;
}

/* Installs R (owned) as the allowed set and frees the one it replaces. */
static void replace_allowed(sio_listener *l, sio_remote *r)
{
	pthread_mutex_lock(&l->mu);
	sio_remote *old = l->allowed;
	l->allowed = r;
	pthread_mutex_unlock(&l->mu);
	sio_remote_free(old);
}

int sio_listener_set_allowed(sio_listener *l, const sio_remote *allowed)
{
	if (!l)
		return SIO_EINVAL;
	sio_remote *r = NULL;
	if (allowed) {
		int e = sio_remote_copy(&r, allowed); /* with its from= rules */
		if (e < 0)
			return e;
	}
	replace_allowed(l, r);
	return 0;
}

int sio_listener_reload_allowed(sio_listener *l, const char *path)
{
	if (!l || !path)
		return SIO_EINVAL;
	sio_remote *r = NULL;
	int e = sio_remote_load(&r, path);
	if (e < 0)
		return e;
	replace_allowed(l, r);
	return 0;
}

void sio_listener_stats_get(const sio_listener *l, sio_listener_stats *st)
{
	if (!st)
		return;
	memset(st, 0, sizeof(*st));
	if (!l)
		return;
	sio_listener *m = (sio_listener *)l;
	pthread_mutex_lock(&m->mu);
	*st = m->st;
	st->sessions = m->nsessions;
	st->half_open = m->nhalf;
	st->memory = m->mem_used;
	st->workers = m->nw;
	pthread_mutex_unlock(&m->mu);
	for (unsigned i = 0; i < m->nw; i++) {
		struct lworker *w = m->w[i];
		st->handoffs += atomic_load_explicit(&w->ws[WS_HANDOFFS], memory_order_relaxed);
		st->roams += atomic_load_explicit(&w->ws[WS_ROAMS], memory_order_relaxed);
		st->amp_limited += atomic_load_explicit(&w->ws[WS_AMP], memory_order_relaxed);
		st->drop_queue += atomic_load_explicit(&w->ws[WS_QUEUE], memory_order_relaxed);
		st->drop_unknown += atomic_load_explicit(&w->ws[WS_UNKNOWN], memory_order_relaxed);
	}
}

/* ---- new peers ------------------------------------------------------------ */

/* Gives a new peer its session, driven by W. Returns 0, or -1 (the caller
 * frees the entry). */
static int peer_session(struct sio_listener *l, struct lworker *w, struct lpeer *p)
{
	sio_transport t;
	memset(&t, 0, sizeof(t));
	t.kind = SIO_TRANSPORT_DATAGRAM;
	t.read_fd = t.write_fd = -1;
	t.send = l_send;
	t.recv = l_recv;
	t.poll_fd = -1;
	t.ctx = p;
	sio_callbacks cb = {p, cb_connect, cb_state, cb_error, cb_identity,
			    l->ucbs.on_diag ? cb_diag : NULL, l->ucbs.diag_level};
	sio_session *s = NULL;
	if (sio_session_new(&s, l->id, NULL, &t, &l->sopts, &cb) != 0)
		return -1;
	s->rd_limit = l->lo.peer_unread_bytes;
	s->tp.cb_sendv = l_sendv; /* (internal: batches of a flush in one call) */
	/* a responder to an address that has not proven it hears us: no
	 * retransmission on its own timer, the client drives retries
	 * (docs/PROTOCOL.md §4.5, §13.5) */
	sio_core_set_reply_only(s->core, 1);
	s->pkt_hook = pkt_hook;
	s->hook_ctx = p;
	if (l->lo.on_session)
		l->lo.on_session(l, s, l->lo.ctx);
	if (sio_session_start_driven(s, &w->drv, p) != 0) {
		sio_session_free(s); /* (no free_hook yet: the entry is the caller's) */
		return -1;
	}
	s->free_hook = free_hook;
	p->s = s;
	return 0;
}

struct lpeer *sio_l_peer_new(struct lworker *w, const uint8_t *cid, const uint8_t *pkt, size_t plen,
			     const uint8_t *cookie, const struct sockaddr *from, socklen_t flen, uint64_t now)
{
	struct sio_listener *l = w->l;
	int validated;
	pthread_mutex_lock(&l->mu);
	int r = l->stop ? -1 : sio_l_admit(l, cid, pkt, plen, cookie, from, flen, now, &validated);
	if (r == 0 && flen > sizeof(struct sockaddr_storage))
		r = -1;
	if (r == 0) {
		l->nhalf++;
		l->refs++;
		l->mem_used += l->peer_half;
	}
	if (l->lo.on_diag)
		sio_l_diag_drops(l, now);
	pthread_mutex_unlock(&l->mu);
	if (l->lo.on_diag)
		sio_l_diag_flush(l);
	if (r != 0)
		return NULL;
	struct lpeer *p = calloc(1, sizeof(*p));
	if (p) {
		memcpy(p->cid, cid, SIO_LISTENER_CID_BYTES);
		p->l = l;
		p->w = w;
		memcpy(&p->addr, from, flen);
		p->alen = flen;
		p->created_ns = now;
		p->validated = validated;
		p->reserved = l->peer_half;
	}
	if (!p || peer_session(l, w, p) != 0) {
		free(p);
		pthread_mutex_lock(&l->mu);
		l->nhalf--;
		l->mem_used -= l->peer_half;
		l->st.drop_half_open++;
		int d = unref_locked(l);
		pthread_mutex_unlock(&l->mu);
		(void)d; /* the program's reference keeps it */
		return NULL;
	}
	pthread_mutex_lock(&w->mu);
	size_t b = bucket(w, cid);
	p->hnext = w->ht[b];
	w->ht[b] = p;
	p->next = w->all;
	if (w->all)
		w->all->prev = p;
	w->all = p;
	p->hnext_half = w->half;
	if (w->half)
		w->half->hprev_half = p;
	w->half = p;
	p->in_half = 1;
	w->npeers++;
	pthread_mutex_unlock(&w->mu);
	return p;
}

void sio_l_reap_dud(struct lworker *w, struct lpeer *p)
{
	struct sio_listener *l = w->l;
	pthread_mutex_lock(&w->mu);
	sio_session *s = p->s;
	int go = s && p->in_half && !atomic_load(&p->detached) && atomic_load(&p->dud);
	pthread_mutex_unlock(&w->mu);
	if (!go)
		return;
	pthread_mutex_lock(&s->sh->mu);
	go = !s->core_start_deferred; /* never wait for a signer: the sweep will */
	pthread_mutex_unlock(&s->sh->mu);
	if (!go)
		return;
	atomic_store(&p->detached, 1);
	sio_l_count(l, &l->st.expired);
	sio_session_free(s); /* free_hook removes the entry */
}

/* Frees the sessions of half-open exchanges that failed or took too long
 * (W's thread, W's peers only). */
void sio_l_sweep(struct lworker *w, uint64_t now)
{
	struct sio_listener *l = w->l;
	for (;;) {
		sio_session *dead[64];
		struct lpeer *dp[64];
		size_t nc = 0, nd = 0;
		pthread_mutex_lock(&w->mu);
		for (struct lpeer *p = w->half; p && nc < 64; p = p->hnext_half) {
			if (!p->s || atomic_load(&p->detached))
				continue;
			if (atomic_load(&p->failed) || atomic_load(&p->dud) ||
			    now - p->created_ns > l->half_open_timeout_ns) {
				dp[nc] = p;
				dead[nc++] = p->s;
			}
		}
		pthread_mutex_unlock(&w->mu);
		/* (only this thread frees its half-open peers: they stay valid) */
		for (size_t i = 0; i < nc; i++) {
			sio_session *s = dead[i];
			pthread_mutex_lock(&s->sh->mu);
			int signing = s->core_start_deferred; /* next sweep: never wait for a signer */
			pthread_mutex_unlock(&s->sh->mu);
			if (!signing) {
				atomic_store(&dp[i]->detached, 1);
				dead[nd++] = s;
			}
		}
		if (nd) {
			pthread_mutex_lock(&l->mu);
			l->st.expired += nd;
			pthread_mutex_unlock(&l->mu);
		}
		for (size_t i = 0; i < nd; i++)
			sio_session_free(dead[i]); /* free_hook removes the entry */
		if (nc < 64 || nd == 0)
			break;
	}
	if (l->lo.on_diag) {
		pthread_mutex_lock(&l->mu);
		sio_l_diag_drops(l, now); /* what the last second held */
		pthread_mutex_unlock(&l->mu);
		sio_l_diag_flush(l);
	}
}

/* ---- starting, event loop, accept, free ---------------------------------- */

static unsigned default_workers(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (unsigned)n : 1;
}

int sio_listener_start(sio_listener *l)
{
	if (!l)
		return SIO_EINVAL;
	if (l->mode)
		return SIO_ESTATE;
	l->mode = 1;
	int r = sio_l_workers_new(l, l->lo.workers > 0 ? (unsigned)l->lo.workers : default_workers());
	if (r == 0)
		r = sio_l_workers_start(l);
	if (r < 0) {
		sio_l_workers_free(l);
		l->mode = 0;
	}
	return r;
}

int sio_listener_start_loop(sio_listener *l)
{
	if (!l)
		return SIO_EINVAL;
	if (l->mode)
		return SIO_ESTATE;
	l->mode = 2;
	int r = sio_l_workers_new(l, 1);
	if (r < 0) {
		sio_l_workers_free(l);
		l->mode = 0;
	}
	return r;
}

int sio_listener_fd(const sio_listener *l)
{
	return l && l->mode == 2 && l->nw ? l->w[0]->epfd : -1;
}

int sio_listener_process(sio_listener *l)
{
	if (!l || l->mode != 2 || !l->nw)
		return SIO_ESTATE;
	struct lworker *w = l->w[0];
	pthread_mutex_lock(&w->mu);
	if (w->signalled) {
		uint64_t v;
		ssize_t n = read(w->efd, &v, sizeof(v));
		(void)n;
		w->signalled = 0;
	}
	pthread_mutex_unlock(&w->mu);
	const void *was = sio_drv_self;
	sio_drv_self = l;
	sio_l_worker_turn(w);
	sio_drv_self = was;
	return 0;
}

int sio_listener_timeout_ms(const sio_listener *l)
{
	if (!l || l->mode != 2 || !l->nw)
		return -1;
	return sio_l_worker_timeout_ms(l->w[0]);
}

int sio_listener_accept(sio_listener *l, sio_session **out, int timeout_ms)
{
	if (!l || !out)
		return SIO_EINVAL;
	*out = NULL;
	uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : mono_ns() + (uint64_t)timeout_ms * 1000000ull;
	pthread_mutex_lock(&l->mu);
	for (;;) {
		if (l->stop) {
			pthread_mutex_unlock(&l->mu);
			return SIO_ECLOSED;
		}
		struct lpeer *p = l->aq_head;
		if (p) {
			l->aq_head = p->anext;
			if (!l->aq_head)
				l->aq_tail = NULL;
			p->in_acceptq = 0;
			p->accepted = 1;
			*out = p->s;
			pthread_mutex_unlock(&l->mu);
			return 0;
		}
		if (timeout_ms == 0 || l->mode == 2) {
			pthread_mutex_unlock(&l->mu);
			return SIO_EAGAIN;
		}
		uint64_t now = mono_ns();
		if (now >= deadline) {
			pthread_mutex_unlock(&l->mu);
			return SIO_ETIMEDOUT;
		}
		uint64_t until = deadline == UINT64_MAX ? now + 3600000000000ull : deadline;
		struct timespec ts = {(time_t)(until / 1000000000ull), (long)(until % 1000000000ull)};
		pthread_cond_timedwait(&l->cond, &l->mu, &ts);
	}
}

/* A peer not handed to the program yet, of any worker (its session), marked
 * detached; NULL when none is left. ACCEPTED: one the program holds instead. */
static struct lpeer *next_peer(sio_listener *l, int accepted)
{
	for (unsigned i = 0; i < l->nw; i++) {
		struct lworker *w = l->w[i];
		pthread_mutex_lock(&w->mu);
		pthread_mutex_lock(&l->mu);
		for (struct lpeer *p = w->all; p; p = p->next) {
			if (p->s && !atomic_load(&p->detached) && (p->accepted != 0) == accepted) {
				atomic_store(&p->detached, 1);
				pthread_mutex_unlock(&l->mu);
				pthread_mutex_unlock(&w->mu);
				return p;
			}
		}
		pthread_mutex_unlock(&l->mu);
		pthread_mutex_unlock(&w->mu);
	}
	return NULL;
}

void sio_listener_free(sio_listener *l)
{
	if (!l)
		return;
	pthread_mutex_lock(&l->mu);
	l->stop = 1;
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->mu);
	/* no worker runs after this: what is left is done here */
	sio_l_workers_stop(l);
	/* sessions the program does not hold yet go */
	struct lpeer *p;
	while ((p = next_peer(l, 0)) != NULL)
		sio_session_free(p->s);
	/* the others are cut off: they end now (their callbacks run on this
	 * thread), and the program frees them */
	while ((p = next_peer(l, 1)) != NULL) {
		sio_session *s = p->s;
		pthread_mutex_lock(&s->sh->mu);
		sio_session_cutoff(s);
		pthread_mutex_unlock(&s->sh->mu);
	}
	pthread_mutex_lock(&l->mu);
	int d = unref_locked(l);
	pthread_mutex_unlock(&l->mu);
	if (d)
		destroy(l);
}
