/*
 * Listener: many peer sessions over one datagram socket (server mode).
 *
 * Every datagram from a client starts with a 9-byte prefix (mark, 8-byte
 * connection id chosen by the client). The listener routes by connection id
 * into a per-peer queue; each peer is an ordinary sio_session over a custom
 * datagram transport whose recv pops that queue and whose send is a sendto()
 * on the shared socket, to the peer's current address. The address moves
 * only after the session authenticated a data packet from a new source
 * (pkt_hook). See src/listener/listener_int.h for the locking rules.
 */
#include <errno.h>
#include <poll.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "listener_int.h"
#include "session_int.h"

#define DEFAULT_MAX_SESSIONS 65536u
#define DEFAULT_MAX_HALF_OPEN 1024u
#define DEFAULT_HALF_OPEN_NS 10000000000ull
#define RBATCH 32
#define RROUNDS 8 /* batches per round of reading */
#define RSLOT 65536

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

static size_t bucket(const struct sio_listener *l, const uint8_t *cid)
{
	uint8_t h[crypto_shorthash_BYTES];
	crypto_shorthash(h, cid, SIO_LISTENER_CID_BYTES, hash_key);
	uint64_t v;
	memcpy(&v, h, 8);
	return (size_t)(v & (l->hsize - 1));
}

static struct lpeer *lookup(struct sio_listener *l, const uint8_t *cid)
{
	for (struct lpeer *p = l->ht[bucket(l, cid)]; p; p = p->hnext)
		if (memcmp(p->cid, cid, SIO_LISTENER_CID_BYTES) == 0)
			return p;
	return NULL;
}

static void destroy(struct sio_listener *l)
{
	if (l->close_fd && l->fd >= 0)
		close(l->fd);
	if (l->wake_fd >= 0)
		close(l->wake_fd);
	sio_remote_free(l->allowed);
	sio_identity_free(l->id);
	sodium_memzero(l->secret, sizeof(l->secret));
	sodium_memzero(l->prev_secret, sizeof(l->prev_secret));
	sodium_memzero(&l->psk, sizeof(l->psk));
	if (l->sopts.psk)
		sodium_memzero((void *)l->sopts.psk, l->sopts.psk_len);
	free((void *)l->sopts.psk);
	free(l->ht);
	free(l->rbuf);
	free(l->seen);
	pthread_mutex_destroy(&l->mu);
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

static ssize_t l_send(void *ctx, const void *buf, size_t len)
{
	struct lpeer *p = ctx;
	struct sio_listener *l = p->l;
	struct sockaddr_storage a;
	pthread_mutex_lock(&l->mu);
	if (p->detached) {
		pthread_mutex_unlock(&l->mu);
		return -EPIPE;
	}
	/* An address that has not proven it receives our packets (no
	 * authenticated data packet, no valid cookie from it yet) may be a
	 * victim's, spoofed: at most SIO_L_AMP_FACTOR times what came from it,
	 * the rest is not sent (as if lost: the peer's retries, which count as
	 * received bytes, bring our message again). */
	if (!p->validated) {
		if (p->tx_unval + len > SIO_L_AMP_FACTOR * p->rx_unval) {
			l->st.amp_limited++;
			pthread_mutex_unlock(&l->mu);
			return (ssize_t)len;
		}
		p->tx_unval += len;
	}
	socklen_t alen = p->alen;
	memcpy(&a, &p->addr, alen);
	int fd = l->fd;
	pthread_mutex_unlock(&l->mu);
	for (;;) {
		ssize_t r = sendto(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&a, alen);
		if (r >= 0)
			return (ssize_t)len;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return -EAGAIN;
		return (ssize_t)len; /* lost on the path (refused, unreachable, ...) */
	}
}

static void efd_drain(int fd)
{
	uint64_t v;
	while (read(fd, &v, sizeof(v)) < 0 && errno == EINTR)
		;
}

static void efd_signal(int fd)
{
	uint64_t v = 1;
	while (write(fd, &v, sizeof(v)) < 0 && errno == EINTR)
		;
}

/* One packet at a time: the session reports (pkt_hook) whether it was
 * authentic before it gets the next, so we know which source to adopt. */
static ssize_t l_recv(void *ctx, void *buf, size_t len)
{
	struct lpeer *p = ctx;
	struct sio_listener *l = p->l;
	pthread_mutex_lock(&l->mu);
	if (p->detached) {
		pthread_mutex_unlock(&l->mu);
		return 0;
	}
	if (p->handed || p->qlen == 0) {
		pthread_mutex_unlock(&l->mu);
		return -EAGAIN;
	}
	struct lpkt *k = &p->q[p->qhead];
	size_t n = k->len < len ? k->len : len;
	memcpy(buf, k->data, n);
	memcpy(&p->cand, &k->from, k->flen);
	p->clen = k->flen;
	p->cand_kind = k->data[0];
	p->qbytes -= k->len;
	free(k->data);
	k->data = NULL;
	p->qhead = (p->qhead + 1) % SIO_L_QMAX;
	if (--p->qlen == 0)
		efd_drain(p->efd);
	p->handed = 1;
	pthread_mutex_unlock(&l->mu);
	return (ssize_t)n;
}

static void pkt_hook(void *ctx, const uint8_t *pkt, int auth)
{
	struct lpeer *p = ctx;
	struct sio_listener *l = p->l;
	(void)pkt;
	pthread_mutex_lock(&l->mu);
	p->handed = 0;
	/* roaming: only an authenticated data packet moves the peer, and it
	 * validates the address it came from (a key-exchange message does
	 * neither: anyone can replay one) */
	if (auth == SIO_CORE_RX_DATA && (p->cand_kind & 0xc0) == 0x40 && p->clen > 0) {
		if (p->clen != p->alen || memcmp(&p->cand, &p->addr, p->clen) != 0) {
			memcpy(&p->addr, &p->cand, p->clen);
			p->alen = p->clen;
			l->st.roams++;
		}
		p->validated = 1;
	}
	if (p->qlen > 0)
		efd_signal(p->efd); /* the session stopped at one packet: more */
	pthread_mutex_unlock(&l->mu);
}

static void peer_unlink(struct sio_listener *l, struct lpeer *p)
{
	struct lpeer **pp = &l->ht[bucket(l, p->cid)];
	while (*pp && *pp != p)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = p->hnext;
	if (p->prev)
		p->prev->next = p->next;
	else if (l->all == p)
		l->all = p->next;
	if (p->next)
		p->next->prev = p->prev;
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
}

static void peer_free_locked(struct lpeer *p)
{
	for (unsigned i = 0; i < p->qlen; i++)
		free(p->q[(p->qhead + i) % SIO_L_QMAX].data);
	if (p->efd >= 0)
		close(p->efd);
	free(p);
}

static void free_hook(void *ctx)
{
	struct lpeer *p = ctx;
	struct sio_listener *l = p->l;
	pthread_mutex_lock(&l->mu);
	peer_unlink(l, p);
	peer_free_locked(p);
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
	pthread_mutex_lock(&l->mu);
	/* a peer the sweep has picked (detached) is being freed by it: it
	 * must never reach the program too */
	if (n == SIO_STATE_ESTABLISHED && !p->established && !p->failed && !p->detached) {
		p->established = 1;
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
		p->failed = 1;
	}
	pthread_mutex_unlock(&l->mu);
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

static int cb_identity(sio_session *s, const uint8_t pk[SIO_PUBLIC_KEY_BYTES], void *ctx)
{
	struct lpeer *p = ctx;
	struct sio_listener *l = p->l;
	pthread_mutex_lock(&l->mu);
	/* from="..." restrictions: the source of the key exchange being
	 * processed (this runs on the session's thread, inside that packet) */
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
		pthread_mutex_lock(&l->mu);
		l->st.drop_refused++;
		pthread_mutex_unlock(&l->mu);
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
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&l->cond, &ca);
	pthread_condattr_destroy(&ca);
	l->fd = fd;
	l->wake_fd = -1;
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
	l->peer_half = SIO_L_BASE_BYTES + SIO_L_QBYTES_HALF;
	uint64_t reasm = l->sopts.max_reassembly_bytes > l->sopts.max_message_size
				 ? l->sopts.max_reassembly_bytes
				 : l->sopts.max_message_size;
	l->peer_full = SIO_L_BASE_BYTES + SIO_L_QBYTES + reasm + l->sopts.max_message_size +
		       l->lo.peer_unread_bytes;
	l->hsize = 1024;
	while (l->hsize < l->lo.max_sessions && l->hsize < (1u << 20))
		l->hsize <<= 1;
	l->ht = calloc(l->hsize, sizeof(*l->ht));
	l->rbuf = malloc((size_t)RBATCH * RSLOT);
	/* the record of first messages: room for every half-open exchange
	 * several times over, kept as long as one may live, twice over */
	l->nseen = SIO_L_SEEN_MIN;
	while (l->nseen < 4u * (size_t)l->lo.max_half_open && l->nseen < (1u << 22))
		l->nseen <<= 1;
	l->seen = calloc(l->nseen, sizeof(*l->seen));
	randombytes_buf(l->seen_key, sizeof(l->seen_key));
	l->seen_ttl_ns = 2 * l->half_open_timeout_ns;
	if (!l->ht || !l->rbuf || !l->seen)
		goto fail;
	if (allowed && (r = sio_listener_set_allowed(l, allowed)) < 0)
		goto fail;
	l->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (l->wake_fd < 0) {
		r = SIO_EIO;
		goto fail;
	}
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
	pthread_mutex_unlock(&m->mu);
}

/* ---- routing ------------------------------------------------------------- */

/* Lock held. Queues PKT for P. */
static void enqueue(struct sio_listener *l, struct lpeer *p, const uint8_t *pkt, size_t len,
		    const struct sockaddr *from, socklen_t flen)
{
	/* bounded in packets and in bytes: a half-open peer needs no more
	 * than its key exchange and the first data */
	size_t budget = p->established ? SIO_L_QBYTES : SIO_L_QBYTES_HALF;
	if (p->qlen >= SIO_L_QMAX || len > UINT16_MAX || flen > sizeof(p->addr) ||
	    p->qbytes + len > budget) {
		l->st.drop_queue++;
		return;
	}
	uint8_t *d = malloc(len);
	if (!d) {
		l->st.drop_queue++;
		return;
	}
	memcpy(d, pkt, len);
	struct lpkt *k = &p->q[(p->qhead + p->qlen) % SIO_L_QMAX];
	k->data = d;
	k->len = (uint16_t)len;
	memcpy(&k->from, from, flen);
	k->flen = flen;
	p->qbytes += len;
	if (!p->validated && flen == p->alen && memcmp(from, &p->addr, flen) == 0)
		p->rx_unval += len + SIO_L_PREFIX; /* the datagram, as it came */
	if (p->qlen++ == 0)
		efd_signal(p->efd);
}

/* Lock held. Creates the entry of a new peer (session made by the caller,
 * unlocked). */
static struct lpeer *peer_add(struct sio_listener *l, const uint8_t *cid, const struct sockaddr *from,
			      socklen_t flen, uint64_t now)
{
	struct lpeer *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (p->efd < 0) {
		free(p);
		return NULL;
	}
	memcpy(p->cid, cid, SIO_LISTENER_CID_BYTES);
	p->l = l;
	memcpy(&p->addr, from, flen);
	p->alen = flen;
	p->created_ns = now;
	size_t b = bucket(l, cid);
	p->hnext = l->ht[b];
	l->ht[b] = p;
	p->next = l->all;
	if (l->all)
		l->all->prev = p;
	l->all = p;
	l->nhalf++;
	l->refs++;
	p->reserved = l->peer_half;
	l->mem_used += p->reserved;
	return p;
}

/* Unlocked: gives a new peer its session. On failure the entry goes. */
static void peer_start(struct sio_listener *l, struct lpeer *p)
{
	sio_transport t;
	memset(&t, 0, sizeof(t));
	t.kind = SIO_TRANSPORT_DATAGRAM;
	t.read_fd = t.write_fd = -1;
	t.send = l_send;
	t.recv = l_recv;
	t.poll_fd = p->efd;
	t.ctx = p;
	sio_callbacks cb = {p, cb_connect, cb_state, cb_error, cb_identity,
			    l->ucbs.on_diag ? cb_diag : NULL, l->ucbs.diag_level};
	sio_session *s = NULL;
	int r = sio_session_new(&s, l->id, NULL, &t, &l->sopts, &cb);
	if (r == 0) {
		s->rd_limit = l->lo.peer_unread_bytes;
		/* a responder to an address that has not proven it hears us: no
		 * retransmission on its own timer, the client drives retries
		 * (docs/PROTOCOL.md §4.5, §13.5) */
		sio_core_set_reply_only(s->core, 1);
		s->pkt_hook = pkt_hook;
		s->free_hook = free_hook;
		s->hook_ctx = p;
		if (l->lo.on_session)
			l->lo.on_session(l, s, l->lo.ctx);
		pthread_mutex_lock(&l->mu);
		p->s = s;
		pthread_mutex_unlock(&l->mu);
		r = l->mode == 1 ? sio_session_start(s) : sio_session_start_loop(s);
		if (r < 0) {
			pthread_mutex_lock(&l->mu);
			p->failed = 1;
			pthread_mutex_unlock(&l->mu);
		}
		return;
	}
	pthread_mutex_lock(&l->mu);
	peer_unlink(l, p);
	peer_free_locked(p);
	int d = unref_locked(l);
	pthread_mutex_unlock(&l->mu);
	(void)d; /* the program's reference keeps it */
}

/* Reads one batch from the socket and routes it. Returns datagrams read or a
 * negative code. */
static int read_batch(struct sio_listener *l)
{
	struct mmsghdr m[RBATCH];
	struct iovec iov[RBATCH];
	struct sockaddr_storage from[RBATCH];
	for (int i = 0; i < RBATCH; i++) {
		iov[i].iov_base = l->rbuf + (size_t)i * RSLOT;
		iov[i].iov_len = RSLOT;
		memset(&m[i].msg_hdr, 0, sizeof(m[i].msg_hdr));
		m[i].msg_hdr.msg_iov = &iov[i];
		m[i].msg_hdr.msg_iovlen = 1;
		m[i].msg_hdr.msg_name = &from[i];
		m[i].msg_hdr.msg_namelen = sizeof(from[i]);
	}
	int n;
	do
		n = recvmmsg(l->fd, m, RBATCH, MSG_DONTWAIT, NULL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNREFUSED ? 0 : SIO_EIO;
	struct lpeer *fresh[RBATCH];
	int nf = 0;
	uint64_t now = mono_ns();
	pthread_mutex_lock(&l->mu);
	for (int i = 0; i < n; i++) {
		const uint8_t *buf = l->rbuf + (size_t)i * RSLOT;
		size_t len = m[i].msg_len;
		const uint8_t *cid, *pkt, *cookie;
		size_t plen;
		const struct sockaddr *fa = (const struct sockaddr *)&from[i];
		socklen_t fl = m[i].msg_hdr.msg_namelen;
		if ((m[i].msg_hdr.msg_flags & MSG_TRUNC) ||
		    sio_l_parse(buf, len, &cid, &pkt, &plen, &cookie) < 0) {
			l->st.drop_malformed++;
			continue;
		}
		struct lpeer *p = lookup(l, cid);
		if (!p) {
			int validated;
			if (sio_l_admit(l, cid, pkt, plen, cookie, fa, fl, now, &validated) != 0)
				continue;
			p = peer_add(l, cid, fa, fl, now);
			if (!p) {
				l->st.drop_half_open++;
				continue;
			}
			p->validated = validated;
			fresh[nf++] = p;
		}
		if (!p->detached && !p->failed)
			enqueue(l, p, pkt, plen, fa, fl);
		else
			l->st.drop_unknown++; /* its session is ending */
	}
	if (l->lo.on_diag)
		sio_l_diag_drops(l, now);
	pthread_mutex_unlock(&l->mu);
	if (l->lo.on_diag)
		sio_l_diag_flush(l);
	for (int i = 0; i < nf; i++)
		peer_start(l, fresh[i]);
	return n;
}

/* Frees the sessions of half-open exchanges that failed or took too long.
 * Unlocked. */
static void sweep(struct sio_listener *l, uint64_t now)
{
	sio_session *dead[64];
	size_t nd = 0;
	pthread_mutex_lock(&l->mu);
	for (struct lpeer *p = l->all; p && nd < 64; p = p->next) {
		if (p->established || !p->s || p->detached)
			continue;
		if (p->failed || now - p->created_ns > l->half_open_timeout_ns) {
			p->detached = 1;
			l->st.expired++;
			dead[nd++] = p->s;
		}
	}
	if (l->lo.on_diag)
		sio_l_diag_drops(l, now); /* what the last second held */
	pthread_mutex_unlock(&l->mu);
	if (l->lo.on_diag)
		sio_l_diag_flush(l);
	for (size_t i = 0; i < nd; i++)
		sio_session_free(dead[i]); /* free_hook removes the entry */
}

/* Reads at most RROUNDS batches: under a flood the caller still sweeps,
 * sees a stop request and (event loop) returns; the socket stays readable
 * for the next round. Returns the last batch's result. */
static int read_some(struct sio_listener *l)
{
	int r = 0;
	for (int i = 0; i < RROUNDS; i++)
		if ((r = read_batch(l)) != RBATCH)
			break;
	return r;
}

static void *listener_thread(void *arg)
{
	struct sio_listener *l = arg;
	uint64_t last_sweep = mono_ns();
	for (;;) {
		pthread_mutex_lock(&l->mu);
		int stop = l->stop;
		pthread_mutex_unlock(&l->mu);
		if (stop)
			break;
		struct pollfd pf[2] = {{l->fd, POLLIN, 0}, {l->wake_fd, POLLIN, 0}};
		int r = poll(pf, 2, 100);
		if (r > 0 && (pf[0].revents & (POLLIN | POLLERR)))
			read_some(l);
		uint64_t now = mono_ns();
		if (now - last_sweep > 100000000ull) {
			sweep(l, now);
			last_sweep = now;
		}
	}
	return NULL;
}

int sio_listener_start(sio_listener *l)
{
	if (!l)
		return SIO_EINVAL;
	if (l->mode)
		return SIO_ESTATE;
	l->mode = 1;
	if (pthread_create(&l->thread, NULL, listener_thread, l) != 0) {
		l->mode = 0;
		return SIO_ENOMEM;
	}
	return 0;
}

int sio_listener_start_loop(sio_listener *l)
{
	if (!l)
		return SIO_EINVAL;
	if (l->mode)
		return SIO_ESTATE;
	l->mode = 2;
	return 0;
}

int sio_listener_fd(const sio_listener *l)
{
	return l && l->mode == 2 ? l->fd : -1;
}

/* Loop mode: the sessions not handed over yet, driven here. */
static size_t pending_sessions(struct sio_listener *l, sio_session **out, size_t max)
{
	size_t n = 0;
	pthread_mutex_lock(&l->mu);
	for (struct lpeer *p = l->all; p && n < max; p = p->next)
		if (!p->accepted && !p->detached && p->s)
			out[n++] = p->s;
	pthread_mutex_unlock(&l->mu);
	return n;
}

int sio_listener_process(sio_listener *l)
{
	if (!l || l->mode != 2)
		return SIO_ESTATE;
	int r = read_some(l);
	size_t cap = l->lo.max_half_open + 64;
	sio_session **v = malloc(cap * sizeof(*v));
	if (v) {
		size_t n = pending_sessions(l, v, cap);
		for (size_t i = 0; i < n; i++)
			(void)sio_session_process(v[i]);
		free(v);
	}
	sweep(l, mono_ns());
	return r < 0 ? r : 0;
}

int sio_listener_timeout_ms(const sio_listener *l)
{
	if (!l || l->mode != 2)
		return -1;
	sio_listener *m = (sio_listener *)l;
	int best = 100; /* sweeps */
	pthread_mutex_lock(&m->mu);
	for (struct lpeer *p = m->all; p; p = p->next) {
		if (p->accepted || p->detached || !p->s)
			continue;
		if (p->qlen > 0) {
			best = 0;
			break;
		}
	}
	pthread_mutex_unlock(&m->mu);
	if (best == 0)
		return 0;
	sio_session *v[256];
	size_t n = pending_sessions(m, v, 256);
	for (size_t i = 0; i < n; i++) {
		int t = sio_session_timeout_ms(v[i]);
		if (t >= 0 && t < best)
			best = t;
	}
	return best;
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

void sio_listener_free(sio_listener *l)
{
	if (!l)
		return;
	pthread_mutex_lock(&l->mu);
	l->stop = 1;
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->mu);
	efd_signal(l->wake_fd);
	if (l->mode == 1)
		pthread_join(l->thread, NULL);
	/* sessions the program does not hold yet go; the others are cut off */
	for (;;) {
		sio_session *s = NULL;
		pthread_mutex_lock(&l->mu);
		for (struct lpeer *p = l->all; p; p = p->next) {
			if (!p->accepted && p->s && !p->detached) {
				p->detached = 1;
				s = p->s;
				break;
			}
		}
		if (!s) {
			/* entries with no session yet cannot exist here: the
			 * thread that makes them has stopped */
			for (struct lpeer *p = l->all; p; p = p->next) {
				p->detached = 1;
				efd_signal(p->efd); /* its session reads the end */
			}
		}
		pthread_mutex_unlock(&l->mu);
		if (!s)
			break;
		sio_session_free(s);
	}
	pthread_mutex_lock(&l->mu);
	int d = unref_locked(l);
	pthread_mutex_unlock(&l->mu);
	if (d)
		destroy(l);
}
