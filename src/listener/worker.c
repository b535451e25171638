/*
 * Listener workers: a fixed pool of threads that read the listener's
 * socket(s) and drive every peer session (docs/ARCHITECTURE.md, "Listener
 * workers"). A peer session owns no thread and no descriptor: it is
 * MODE_DRIVEN, and its worker runs it when a datagram for it arrives, when
 * its timer is due, or when another thread gives it work (a write, a close:
 * the run queue). The peer of connection id c belongs to worker
 * sio_l_owner(c); a datagram read by another worker is handed over.
 *
 * With a UDP socket that has SO_REUSEPORT, each worker reads a socket of its
 * own bound to the same address, and a classic BPF program attached to the
 * reuseport group makes the kernel pick the owner's socket from the
 * connection id; where that program cannot be attached the kernel spreads
 * datagrams by address, and the wrong worker hands them over. Otherwise the
 * workers share the one socket.
 *
 * In event-loop style there is one worker without a thread: the program's
 * calls to sio_listener_process() are its turns.
 */
#include <errno.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <poll.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "listener_int.h"

#define RBATCH 32
#define RROUNDS 8   /* batches per turn: input cannot starve timers */
#define RSLOT 65536
#define RUN_MAX 256 /* sessions run per turn from the run queue / timers */
#define SWEEP_NS 100000000ull

#ifndef SO_ATTACH_REUSEPORT_CBPF
#define SO_ATTACH_REUSEPORT_CBPF 51
#endif

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void efd_signal(int fd)
{
	uint64_t v = 1;
	while (write(fd, &v, sizeof(v)) < 0 && errno == EINTR)
		;
}

static void efd_drain(int fd)
{
	uint64_t v;
	while (read(fd, &v, sizeof(v)) < 0 && errno == EINTR)
		;
}

static void ws_add(struct lworker *w, int i)
{
	atomic_fetch_add_explicit(&w->ws[i], 1, memory_order_relaxed);
}

/* ---- timer heap (w->mu) ---------------------------------------------- */

static void h_swap(struct lworker *w, size_t a, size_t b)
{
	sio_session *x = w->heap[a];
	w->heap[a] = w->heap[b];
	w->heap[b] = x;
	w->heap[a]->drv_hidx = a + 1;
	w->heap[b]->drv_hidx = b + 1;
}

static void h_up(struct lworker *w, size_t i)
{
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (w->heap[p]->drv_due <= w->heap[i]->drv_due)
			break;
		h_swap(w, i, p);
		i = p;
	}
}

static void h_down(struct lworker *w, size_t i)
{
	for (;;) {
		size_t a = 2 * i + 1, b = a + 1, m = i;
		if (a < w->hn && w->heap[a]->drv_due < w->heap[m]->drv_due)
			m = a;
		if (b < w->hn && w->heap[b]->drv_due < w->heap[m]->drv_due)
			m = b;
		if (m == i)
			return;
		h_swap(w, i, m);
		i = m;
	}
}

static void h_remove(struct lworker *w, sio_session *s)
{
	if (!s->drv_hidx)
		return;
	size_t i = s->drv_hidx - 1;
	s->drv_hidx = 0;
	if (i != --w->hn) {
		w->heap[i] = w->heap[w->hn];
		w->heap[i]->drv_hidx = i + 1;
		h_down(w, i);
		h_up(w, i);
	}
}

/* S's timer at DUE (UINT64_MAX: none). Returns -1 when out of memory (S then
 * goes on the run queue: it is looked at again at once). */
static int h_set(struct lworker *w, sio_session *s, uint64_t due)
{
	if (due == UINT64_MAX) {
		h_remove(w, s);
		return 0;
	}
	if (s->drv_hidx) {
		size_t i = s->drv_hidx - 1;
		s->drv_due = due;
		h_down(w, i);
		h_up(w, i);
		return 0;
	}
	if (w->hn == w->hcap) {
		size_t nc = w->hcap ? 2 * w->hcap : 256;
		sio_session **n = realloc(w->heap, nc * sizeof(*n));
		if (!n)
			return -1;
		w->heap = n;
		w->hcap = nc;
	}
	s->drv_due = due;
	w->heap[w->hn] = s;
	s->drv_hidx = ++w->hn;
	h_up(w, w->hn - 1);
	return 0;
}

/* ---- run queue (w->mu) ------------------------------------------------- */

static void rq_push(struct lworker *w, sio_session *s)
{
	if (s->drv_queued)
		return;
	s->drv_queued = 1;
	s->drv_next = NULL;
	if (w->rq_tail)
		w->rq_tail->drv_next = s;
	else
		w->rq_head = s;
	w->rq_tail = s;
}

static void rq_remove(struct lworker *w, sio_session *s)
{
	if (!s->drv_queued)
		return;
	sio_session **pp = &w->rq_head, *last = NULL;
	while (*pp && *pp != s) {
		last = *pp;
		pp = &(*pp)->drv_next;
	}
	if (*pp)
		*pp = s->drv_next;
	if (w->rq_tail == s)
		w->rq_tail = last;
	s->drv_queued = 0;
}

/* mu held: wakes W's thread if it sleeps (it looks at everything after). */
static void wake_locked(struct lworker *w)
{
	if (w->sleeping && !w->signalled) {
		w->signalled = 1;
		efd_signal(w->efd);
	}
}

/* ---- the driver its sessions see --------------------------------------- */

static void d_schedule(struct sio_drv *d, sio_session *s)
{
	struct lworker *w = (struct lworker *)d;
	pthread_mutex_lock(&w->mu);
	if (!w->stop) {
		rq_push(w, s);
		wake_locked(w);
	}
	pthread_mutex_unlock(&w->mu);
}

/* mu held: S leaves W's lists; its peer entry stops pointing at it (no
 * datagram reaches it any more). */
static void let_go_locked(struct lworker *w, sio_session *s)
{
	rq_remove(w, s);
	h_remove(w, s);
	struct lpeer *p = s->drv_ctx;
	if (p && p->s == s)
		p->s = NULL;
}

static void d_release(struct sio_drv *d, sio_session *s)
{
	struct lworker *w = (struct lworker *)d;
	pthread_mutex_lock(&w->mu);
	while (w->cur == s) {
		w->cur_waiters++;
		pthread_cond_wait(&w->cond, &w->mu);
		w->cur_waiters--;
	}
	let_go_locked(w, s);
	pthread_mutex_unlock(&w->mu);
}

/* W's thread is done with S (S's lock held, w->cur = S): S's lock goes,
 * then S's next turn (at D, 0 = at once) goes to the heap or the run queue;
 * or S goes, freed by one of its handlers. Returns 1 if S was freed. */
static int done_with(struct lworker *w, sio_session *s, uint64_t d)
{
	int gone = s->free_on_exit;
	pthread_mutex_unlock(&s->sh->mu);
	pthread_mutex_lock(&w->mu);
	w->cur = NULL;
	if (w->cur_waiters)
		pthread_cond_broadcast(&w->cond);
	if (gone)
		let_go_locked(w, s);
	else if (d == 0 || h_set(w, s, d) < 0)
		rq_push(w, s);
	pthread_mutex_unlock(&w->mu);
	if (gone)
		sio_session_destroy(s);
	return gone;
}

/* Runs S (taken off the lists by the caller, w->cur = S): everything due,
 * then its next deadline goes to the heap. Returns 1 if S was freed. */
static int run(struct lworker *w, sio_session *s)
{
	pthread_mutex_lock(&s->sh->mu);
	s->drv_active = 1;
	s->drv_thread = pthread_self();
	uint64_t d = sio_session_run(s);
	struct lpeer *p = s->drv_ctx;
	if (p && p->qlen > 0 && sio_session_can_input(s))
		d = 0; /* more of its queued input */
	s->drv_active = 0;
	return done_with(w, s, d);
}

static int d_process(struct sio_drv *d, sio_session *s)
{
	struct lworker *w = (struct lworker *)d;
	pthread_mutex_lock(&w->mu);
	if (w->stop || w->cur == s) {
		pthread_mutex_unlock(&w->mu);
		return w->stop ? SIO_ECLOSED : 0;
	}
	rq_remove(w, s);
	w->cur = s;
	pthread_mutex_unlock(&w->mu);
	const void *was = sio_drv_self;
	sio_drv_self = w->l;
	int gone = run(w, s);
	sio_drv_self = was;
	if (gone)
		return SIO_ECLOSED;
	int st = (int)sio_session_state(s);
	return st == SIO_STATE_CLOSED ? SIO_ECLOSED : 0;
}

/* ---- input ------------------------------------------------------------- */

/* A datagram for peer P of W (w->cur = P's session, set by the caller):
 * straight into the session when it can take it, else queued. Returns 1 if
 * the session was freed. */
static int feed(struct lworker *w, struct lpeer *p, sio_session *s, uint8_t *pkt, size_t len,
		const struct sockaddr *from, socklen_t flen)
{
	pthread_mutex_lock(&s->sh->mu);
	sio_l_note_rx(p, len, from, flen);
	/* (core_busy first: while a signer thread makes the first signature
	 * with the core, its events are its own) */
	if (!s->core_busy && !s->core_start_deferred && s->evn > 0 && !s->dispatching) {
		/* what happened since its last run (a new session: its start)
		 * is reported first, so that the packet need not wait */
		s->drv_active = 1;
		s->drv_thread = pthread_self();
		sio_dispatch(s);
		s->drv_active = 0;
	}
	uint64_t d;
	if (atomic_load(&s->state) == SIO_STATE_CLOSED) {
		ws_add(w, WS_UNKNOWN); /* its session is ending */
		d = s->drv_deadline;
	} else if (p->qlen == 0 && sio_session_can_input(s)) {
		memcpy(&p->cand, from, flen);
		p->clen = flen;
		p->cand_kind = pkt[0];
		s->drv_active = 1;
		s->drv_thread = pthread_self();
		sio_session_input(s, pkt, len);
		sodium_memzero(pkt, len); /* decrypted in place: plaintext */
		d = sio_session_settle(s);
		if (p->qlen > 0 && sio_session_can_input(s))
			d = 0;
		s->drv_active = 0;
	} else {
		if (sio_l_enqueue(p, pkt, len, from, flen) == 0)
			s->drv_backlog = 1;
		d = 0; /* the run reads the queue when the session can take it */
	}
	return done_with(w, s, d);
}

/* W owns CID: the datagram goes to its peer (a new one if admitted). */
static void deliver(struct lworker *w, const uint8_t *cid, uint8_t *pkt, size_t plen, const uint8_t *cookie,
		    const struct sockaddr *from, socklen_t flen, uint64_t now)
{
	pthread_mutex_lock(&w->mu);
	struct lpeer *p = sio_l_lookup(w, cid);
	int fresh = !p;
	if (!p) {
		/* (only this thread adds or frees peers it has not handed to
		 * the program: the new one stays until it is used below) */
		pthread_mutex_unlock(&w->mu);
		p = sio_l_peer_new(w, cid, pkt, plen, cookie, from, flen, now);
		if (!p)
			return;
		pthread_mutex_lock(&w->mu);
	}
	sio_session *s = p->s;
	if (!s || atomic_load(&p->detached) || atomic_load(&p->failed)) {
		pthread_mutex_unlock(&w->mu);
		ws_add(w, WS_UNKNOWN); /* its session is ending */
		return;
	}
	w->cur = s;
	rq_remove(w, s); /* (it runs now) */
	pthread_mutex_unlock(&w->mu);
	int gone = feed(w, p, s, pkt, plen, from, flen);
	if (!fresh || gone)
		return;
	/* A new peer whose first message failed its checks (a forged
	 * signature: admission verifies none) gives its half-open slot and
	 * its memory back at once, so that a flood of them cannot keep them.
	 * If its message had to wait in its queue (its session could not take
	 * it yet), run it now. (P stays valid: one message cannot establish
	 * it, so the program cannot hold it yet.) */
	pthread_mutex_lock(&w->mu);
	int again = p->s == s && s->drv_queued && !w->cur;
	if (again) {
		rq_remove(w, s);
		w->cur = s;
	}
	pthread_mutex_unlock(&w->mu);
	if (again && run(w, s))
		return;
	sio_l_reap_dud(w, p);
}

/* Hands a datagram to its owner O (a copy: the buffer is W's). */
static void hand_over(struct lworker *w, struct lworker *o, const uint8_t *buf, size_t len,
		      const struct sockaddr *from, socklen_t flen)
{
	struct lhand *h = malloc(sizeof(*h) + len);
	if (!h) {
		ws_add(w, WS_QUEUE);
		return;
	}
	h->next = NULL;
	h->len = len;
	h->flen = flen;
	memcpy(&h->from, from, flen);
	memcpy(h->data, buf, len);
	pthread_mutex_lock(&o->mu);
	if (o->nin >= SIO_L_INBOX_MAX || o->stop) {
		pthread_mutex_unlock(&o->mu);
		free(h);
		ws_add(w, WS_QUEUE);
		return;
	}
	if (o->in_tail)
		o->in_tail->next = h;
	else
		o->in_head = h;
	o->in_tail = h;
	o->nin++;
	wake_locked(o);
	pthread_mutex_unlock(&o->mu);
	ws_add(w, WS_HANDOFFS);
}

/* One datagram read by W (or handed to it: HANDED). */
static void route(struct lworker *w, uint8_t *buf, size_t len, const struct sockaddr *from, socklen_t flen,
		  uint64_t now, int handed)
{
	struct sio_listener *l = w->l;
	const uint8_t *cid, *cookie;
	const uint8_t *pkt;
	size_t plen;
	if (sio_l_parse(buf, len, &cid, &pkt, &plen, &cookie) < 0) {
		sio_l_count(l, &l->st.drop_malformed);
		return;
	}
	struct lworker *o = l->w[sio_l_owner(l, cid)];
	if (o != w && !handed) {
		hand_over(w, o, buf, len, from, flen);
		return;
	}
	deliver(w, cid, (uint8_t *)pkt, plen, cookie, from, flen, now);
}

/* Reads one batch from W's socket and routes it. Returns datagrams read. */
static int read_batch(struct lworker *w)
{
	struct mmsghdr m[RBATCH];
	struct iovec iov[RBATCH];
	struct sockaddr_storage from[RBATCH];
	for (int i = 0; i < RBATCH; i++) {
		iov[i].iov_base = w->rbuf + (size_t)i * RSLOT;
		iov[i].iov_len = RSLOT;
		memset(&m[i].msg_hdr, 0, sizeof(m[i].msg_hdr));
		m[i].msg_hdr.msg_iov = &iov[i];
		m[i].msg_hdr.msg_iovlen = 1;
		m[i].msg_hdr.msg_name = &from[i];
		m[i].msg_hdr.msg_namelen = sizeof(from[i]);
	}
	int n;
	do
		n = recvmmsg(w->fd, m, RBATCH, MSG_DONTWAIT, NULL);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return 0;
	uint64_t now = mono_ns();
	for (int i = 0; i < n; i++) {
		if (m[i].msg_hdr.msg_flags & MSG_TRUNC) {
			sio_l_count(w->l, &w->l->st.drop_malformed);
			continue;
		}
		route(w, w->rbuf + (size_t)i * RSLOT, m[i].msg_len, (const struct sockaddr *)&from[i],
		      m[i].msg_hdr.msg_namelen, now, 0);
	}
	return n;
}

/* ---- the worker's turn --------------------------------------------------- */

/* Runs up to RUN_MAX sessions from the run queue and the due timers. */
static void run_due(struct lworker *w)
{
	uint64_t now = mono_ns();
	for (int i = 0; i < RUN_MAX; i++) {
		pthread_mutex_lock(&w->mu);
		sio_session *s = w->rq_head;
		if (s) {
			w->rq_head = s->drv_next;
			if (!w->rq_head)
				w->rq_tail = NULL;
			s->drv_queued = 0;
		} else if (w->hn > 0 && w->heap[0]->drv_due <= now) {
			s = w->heap[0];
			h_remove(w, s);
		}
		if (!s) {
			pthread_mutex_unlock(&w->mu);
			return;
		}
		w->cur = s;
		pthread_mutex_unlock(&w->mu);
		run(w, s);
	}
}

/* Whether W reads a socket: its own, or (worker 0) the program's. Workers
 * that share the program's socket leave it to worker 0, which hands them
 * their datagrams in the order it read them: two readers of one socket
 * would let a peer's later datagram overtake an earlier one. */
static int reads(const struct lworker *w)
{
	return w->idx == 0 || w->own_fd;
}

void sio_l_worker_turn(struct lworker *w)
{
	/* input first: a datagram's answer goes out before timers run */
	for (int i = 0; reads(w) && i < RROUNDS; i++)
		if (read_batch(w) < RBATCH)
			break;
	pthread_mutex_lock(&w->mu);
	struct lhand *h = w->in_head;
	w->in_head = w->in_tail = NULL;
	w->nin = 0;
	pthread_mutex_unlock(&w->mu);
	if (h) {
		uint64_t now = mono_ns();
		while (h) {
			struct lhand *n = h->next;
			route(w, h->data, h->len, (const struct sockaddr *)&h->from, h->flen, now, 1);
			sodium_memzero(h->data, h->len);
			free(h);
			h = n;
		}
	}
	run_due(w);
	uint64_t now = mono_ns();
	if (now - w->last_sweep >= SWEEP_NS) {
		w->last_sweep = now;
		sio_l_sweep(w, now);
	}
}

/* mu held: nanoseconds until W has something to do (0: now). */
static uint64_t idle_ns(struct lworker *w, uint64_t now)
{
	if (w->rq_head || w->in_head)
		return 0;
	uint64_t until = w->last_sweep + SWEEP_NS;
	if (w->hn > 0 && w->heap[0]->drv_due < until)
		until = w->heap[0]->drv_due;
	return until > now ? until - now : 0;
}

int sio_l_worker_timeout_ms(struct lworker *w)
{
	pthread_mutex_lock(&w->mu);
	uint64_t ns = idle_ns(w, mono_ns());
	pthread_mutex_unlock(&w->mu);
	return ns == 0 ? 0 : (int)((ns + 999999u) / 1000000u);
}

static void *worker_main(void *arg)
{
	struct lworker *w = arg;
	sio_drv_self = w->l;
	for (;;) {
		sio_l_worker_turn(w);
		pthread_mutex_lock(&w->mu);
		if (w->stop) {
			pthread_mutex_unlock(&w->mu);
			break;
		}
		uint64_t ns = idle_ns(w, mono_ns());
		if (ns == 0) {
			pthread_mutex_unlock(&w->mu);
			continue;
		}
		w->sleeping = 1;
		pthread_mutex_unlock(&w->mu);
		/* to the deadline itself: a merge delay is tens of microseconds */
		struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
		struct pollfd pf[2] = {{reads(w) ? w->fd : -1, POLLIN, 0}, {w->efd, POLLIN, 0}};
		int r = ppoll(pf, 2, &ts, NULL);
		pthread_mutex_lock(&w->mu);
		w->sleeping = 0;
		if (r > 0 && (pf[1].revents & POLLIN)) {
			efd_drain(w->efd);
			w->signalled = 0;
		}
		pthread_mutex_unlock(&w->mu);
	}
	return NULL;
}

/* ---- sockets ------------------------------------------------------------- */

/* The reuseport program: the socket index is the connection id's first four
 * bytes (after the mark byte) modulo N, as sio_l_owner() computes. A
 * datagram too short to hold them gets index 0. */
static int attach_steering(int fd, unsigned n)
{
	struct sock_filter code[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 1),
		BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, n),
		BPF_STMT(BPF_RET | BPF_A, 0),
	};
	struct sock_fprog prog = {(unsigned short)(sizeof(code) / sizeof(code[0])), code};
	return setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog));
}

/* A socket bound where L's is, in its reuseport group; -1 if not possible. */
static int sibling(int fd)
{
	struct sockaddr_storage a;
	socklen_t al = sizeof(a);
	if (getsockname(fd, (struct sockaddr *)&a, &al) != 0)
		return -1;
	int s = socket(a.ss_family, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s < 0)
		return -1;
	int one = 1, v = 0;
	socklen_t vl = sizeof(v);
	if (a.ss_family == AF_INET6 && getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, &vl) == 0)
		(void)setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &v, sizeof(v));
	vl = sizeof(v);
	if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, &vl) == 0) {
		v /= 2; /* the kernel reports twice what was asked */
		/* beyond net.core.rmem_max only with CAP_NET_ADMIN, as the
		 * program's own socket may have got it */
		if (setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &v, sizeof(v)) != 0)
			(void)setsockopt(s, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
	}
	vl = sizeof(v);
	if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, &vl) == 0) {
		v /= 2;
		(void)setsockopt(s, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
	}
	if (setsockopt(s, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
	    bind(s, (struct sockaddr *)&a, al) != 0) {
		close(s);
		return -1;
	}
	return s;
}

static int reuseport_udp(int fd)
{
	int v = 0;
	socklen_t vl = sizeof(v);
	struct sockaddr_storage a;
	socklen_t al = sizeof(a);
	return getsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &v, &vl) == 0 && v &&
	       getsockname(fd, (struct sockaddr *)&a, &al) == 0 &&
	       (a.ss_family == AF_INET || a.ss_family == AF_INET6);
}

static void worker_free(struct lworker *w)
{
	if (!w)
		return;
	if (w->own_fd && w->fd >= 0)
		close(w->fd);
	if (w->efd >= 0)
		close(w->efd);
	if (w->epfd >= 0)
		close(w->epfd);
	for (struct lhand *h = w->in_head, *n; h; h = n) {
		n = h->next;
		sodium_memzero(h->data, h->len);
		free(h);
	}
	free(w->heap);
	free(w->ht);
	free(w->rbuf);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cond);
	free(w);
}

int sio_l_workers_new(struct sio_listener *l, unsigned n)
{
	if (n < 1)
		n = 1;
	if (n > 256)
		n = 256;
	l->w = calloc(n, sizeof(*l->w));
	if (!l->w)
		return SIO_ENOMEM;
	int reuse = n > 1 && reuseport_udp(l->fd);
	size_t hsize = 256;
	while (hsize < l->lo.max_sessions / n && hsize < (1u << 20))
		hsize <<= 1;
	for (unsigned i = 0; i < n; i++) {
		struct lworker *w = calloc(1, sizeof(*w));
		if (!w)
			return SIO_ENOMEM;
		l->w[i] = w;
		l->nw = i + 1;
		w->l = l;
		w->idx = i;
		w->fd = l->fd;
		w->efd = w->epfd = -1;
		pthread_mutex_init(&w->mu, NULL);
		pthread_cond_init(&w->cond, NULL);
		w->drv.schedule = d_schedule;
		w->drv.release = d_release;
		w->drv.process = d_process;
		w->drv.pool = l;
		w->drv.loop = l->mode == 2;
		w->hsize = hsize;
		w->ht = calloc(hsize, sizeof(*w->ht));
		w->rbuf = malloc((size_t)RBATCH * RSLOT);
		w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		w->last_sweep = mono_ns();
		if (!w->ht || !w->rbuf)
			return SIO_ENOMEM;
		if (w->efd < 0)
			return SIO_EIO;
		if (i > 0 && reuse) {
			int s = sibling(l->fd);
			if (s < 0) {
				reuse = 0; /* the ones made so far stay: fine */
			} else {
				w->fd = s;
				w->own_fd = 1;
			}
		}
	}
	/* every worker reads its own socket: steer by connection id */
	int all_own = n > 1;
	for (unsigned i = 1; i < n; i++)
		all_own &= l->w[i]->own_fd;
	l->steered = all_own && attach_steering(l->fd, n) == 0;
	if (l->mode == 2) {
		struct lworker *w = l->w[0];
		w->epfd = epoll_create1(EPOLL_CLOEXEC);
		struct epoll_event ev = {.events = EPOLLIN, .data.fd = w->fd};
		if (w->epfd < 0 || epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->fd, &ev) != 0)
			return SIO_EIO;
		ev.data.fd = w->efd;
		if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->efd, &ev) != 0)
			return SIO_EIO;
		/* the loop is told of work through the eventfd: a signal is due
		 * whenever work arrives (the loop's thread never "sleeps" here) */
		w->sleeping = 1;
	}
	return 0;
}

int sio_l_workers_start(struct sio_listener *l)
{
	for (unsigned i = 0; i < l->nw; i++) {
		if (pthread_create(&l->w[i]->thread, NULL, worker_main, l->w[i]) != 0) {
			sio_l_workers_stop(l);
			return SIO_ENOMEM;
		}
		l->w[i]->started = 1;
	}
	return 0;
}

void sio_l_workers_stop(struct sio_listener *l)
{
	for (unsigned i = 0; i < l->nw; i++) {
		struct lworker *w = l->w[i];
		pthread_mutex_lock(&w->mu);
		w->stop = 1;
		efd_signal(w->efd);
		pthread_mutex_unlock(&w->mu);
	}
	for (unsigned i = 0; i < l->nw; i++) {
		if (l->w[i]->started)
			pthread_join(l->w[i]->thread, NULL);
		l->w[i]->started = 0;
	}
}

void sio_l_workers_free(struct sio_listener *l)
{
	for (unsigned i = 0; l->w && i < l->nw; i++)
		worker_free(l->w[i]);
	free(l->w);
	l->w = NULL;
	l->nw = 0;
}
