/* Listener at scale, written against the public API only (issue #17: a
 * fixed pool of worker threads, one SO_REUSEPORT socket per worker):
 *
 * - 1000 peers through a 2-worker listener whose UDP socket has
 *   SO_REUSEPORT set before its bind, in blocking and in event-loop style.
 *   Each client sends 20 messages of assorted sizes (8 to 5000 bytes: the
 *   largest are fragmented), contents derived from (peer, index); the
 *   accepted sessions check every one (once, in order, intact, from the
 *   peer whose key the session proved) and answer each with a reply derived
 *   from (peer, index), which the clients check the same way. Then the
 *   listener's counters: every peer accepted and live, nothing dropped.
 * - Roaming between worker sockets: a peer whose source port changes
 *   several times (new ports hash to either worker's socket) keeps its
 *   session and its data both ways, one roam counted per move; forged and
 *   replayed copies of its packets sent from many other ports move nothing
 *   and get nothing back.
 *
 * Clients are event-loop sessions driven by two threads (1000 client
 * threads would crowd 2 cores); at most 16 client messages per thread are
 * in flight, so that the listener's socket buffer does not overflow on
 * loopback (nothing is retransmitted: a datagram the kernel dropped is a
 * lost message). On an overloaded machine it still may: the kernel's own
 * per-socket drop counters then bound how many messages may be missing
 * (see kernel_drops). Under ThreadSanitizer, 200 peers. No timing
 * assertions: only generous deadlines. */
#include <arpa/inet.h>
#include <errno.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "lib/lclient.h"
#include "secureio.h"

#define MAXPEERS 1000
#define NMSG 20
#define TYPE_DATA 7u
#define NTHREADS 2
#define WINDOW 3    /* messages a client may have in flight */
#define THREAD_CAP 16 /* messages in flight per client thread */
#define DEADLINE_MS 120000

/* ThreadSanitizer runs 1000 peers (and, today, 1000 session threads) far
 * too slowly for the kernel's socket buffers: 200 there (test_listener_churn
 * is the TSan test of the worker pool); SIO_TEST_PEERS sets it too */
#if defined(__SANITIZE_THREAD__)
#define SIO_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SIO_TSAN 1
#endif
#endif
#ifdef SIO_TSAN
static int npeers = 200;
#else
static int npeers = MAXPEERS;
#endif
static sio_identity *srv_id;
static uint8_t srv_pk[32];

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- message contents ---------------------------------------------------- */

/* Sizes by index: small ones, 1300-byte ones (one packet each) and 5000-byte
 * ones (four fragments). Every message is at least 8 bytes: peer, index. */
static size_t msg_size(int idx)
{
	static const size_t sz[10] = {8, 1300, 64, 5000, 300, 1300, 17, 1300, 999, 12};
	return sz[idx % 10];
}

/* Message IDX of PEER in direction DIR (0 client to server, 1 reply). */
static void msg_fill(uint8_t *b, int peer, int idx, int dir, size_t len)
{
	uint32_t p = (uint32_t)peer, i = (uint32_t)idx | (uint32_t)dir << 31;
	memcpy(b, &p, 4);
	memcpy(b + 4, &i, 4);
	uint32_t x = p * 2654435761u ^ i * 40503u ^ 0x9e3779b9u;
	for (size_t j = 8; j < len; j++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		b[j] = (uint8_t)x;
	}
}

static int msg_check(const uint8_t *d, size_t len, int peer, int idx, int dir)
{
	uint8_t want[5000];
	if (len != msg_size(idx))
		return -1;
	msg_fill(want, peer, idx, dir, len);
	return memcmp(d, want, len) == 0 ? 0 : -1;
}

/* ---- descriptors and kernel drops ---------------------------------------- */

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;
	if (!d)
		return -1;
	while (readdir(d))
		n++;
	closedir(d);
	return n - 3; /* ".", "..", the directory's own descriptor */
}

/* Datagrams the kernel dropped at the receive buffers of this process's
 * UDP sockets (the listener's, its workers', the clients'): the drops
 * column of /proc/net/udp for the socket inodes among our descriptors.
 * Nothing is retransmitted, so on an overloaded machine a full buffer
 * loses messages; the test then allows that many missing messages, and
 * no more, and never a corrupt, duplicated or reordered one. */
static uint64_t kernel_drops(void)
{
	static unsigned long ino[4 * MAXPEERS + 256];
	size_t n = 0;
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	while (d && (e = readdir(d)) && n < sizeof(ino) / sizeof(ino[0])) {
		char path[300], link[64];
		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		ssize_t k = readlink(path, link, sizeof(link) - 1);
		if (k <= 0)
			continue;
		link[k] = 0;
		if (sscanf(link, "socket:[%lu]", &ino[n]) == 1)
			n++;
	}
	if (d)
		closedir(d);
	uint64_t drops = 0;
	const char *files[2] = {"/proc/net/udp", "/proc/net/udp6"};
	for (int f = 0; f < 2; f++) {
		FILE *fp = fopen(files[f], "r");
		char line[512];
		while (fp && fgets(line, sizeof(line), fp)) {
			unsigned long inode, dr;
			if (sscanf(line, " %*d: %*s %*s %*x %*s %*s %*s %*u %*u %lu %*d %*s %lu", &inode, &dr) != 2)
				continue;
			for (size_t i = 0; i < n; i++)
				if (ino[i] == inode)
					drops += dr;
		}
		if (fp)
			fclose(fp);
	}
	return drops;
}

/* ---- server side ------------------------------------------------------------ */

struct srv_slot {
	int peer;    /* -1 until the first message names it */
	int next;    /* index expected next */
	atomic_int got, bad, gaps;
};

static struct srv_slot slots[2 * MAXPEERS];
static atomic_int nslots, slots_over;
static atomic_int seen[MAXPEERS];
static uint8_t peer_pk[MAXPEERS][32];
static atomic_int reply_fail;

/* Handler of every accepted session: checks the message and answers it. */
static void srv_msg(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	struct srv_slot *sl = ctx;
	uint32_t p, i;
	if (len < 8) {
		atomic_fetch_add(&sl->bad, 1);
		return;
	}
	memcpy(&p, d, 4);
	memcpy(&i, d + 4, 4);
	if (sl->peer < 0) {
		uint8_t pk[32];
		if (p >= (uint32_t)npeers || sio_session_remote_key(s, pk) != 0 ||
		    memcmp(pk, peer_pk[p], 32) != 0 || atomic_exchange(&seen[p], 1) != 0) {
			atomic_fetch_add(&sl->bad, 1); /* another peer's data, or a peer twice */
			return;
		}
		sl->peer = (int)p;
	}
	if ((int)p == sl->peer && (int)i > sl->next && (int)i < NMSG) {
		/* messages missing: allowed only if the kernel dropped
		 * datagrams (checked at the end) */
		atomic_fetch_add(&sl->gaps, (int)i - sl->next);
		sl->next = (int)i;
	}
	if ((int)p != sl->peer || (int)i != sl->next || msg_check(d, len, sl->peer, sl->next, 0) != 0) {
		atomic_fetch_add(&sl->bad, 1);
		return;
	}
	sl->next++;
	atomic_fetch_add(&sl->got, 1);
	uint8_t r[5000];
	size_t rl = msg_size((int)i);
	msg_fill(r, (int)p, (int)i, 1, rl);
	if (sio_write_message(s, type, r, rl) != 0)
		atomic_fetch_add(&reply_fail, 1);
}

static void on_session(sio_listener *l, sio_session *s, void *ctx)
{
	(void)l;
	(void)ctx;
	int k = atomic_fetch_add(&nslots, 1);
	if (k >= 2 * MAXPEERS) {
		atomic_fetch_add(&slots_over, 1);
		return;
	}
	slots[k].peer = -1;
	slots[k].next = 0;
	atomic_store(&slots[k].got, 0);
	atomic_store(&slots[k].bad, 0);
	sio_set_handler(s, TYPE_DATA, srv_msg, NULL, &slots[k]);
}

/* ---- clients: event-loop sessions, a few threads -------------------------- */

struct client {
	sio_identity *id;
	sio_session *s;
	int idx;
	int started, established, fin;
	int sent, got, bad;
	int next, gaps;  /* reply expected next; replies missing */
	uint64_t last_rx; /* last reply (or start of its traffic) */
	struct cthread *th;
};

struct cthread {
	pthread_t t;
	struct client *c; /* its clients */
	int n;
	int inflight;
	sio_remote *srv;
	struct sockaddr_in sa;
	int failed_start;
	atomic_int done;
};

static struct client clients[MAXPEERS];

static void cli_msg(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	(void)s;
	(void)type;
	struct client *c = ctx;
	uint32_t i = 0;
	if (len >= 8)
		memcpy(&i, d + 4, 4);
	i &= 0x7fffffffu;
	if ((int)i > c->next && (int)i < c->sent) { /* replies missing */
		c->gaps += (int)i - c->next;
		c->th->inflight -= (int)i - c->next;
		c->next = (int)i;
	}
	if (c->next >= c->sent || msg_check(d, len, c->idx, c->next, 1) != 0) {
		c->bad++;
		return;
	}
	c->next++;
	c->got++;
	c->last_rx = now_ms();
	c->th->inflight--;
}

static int client_start(struct cthread *th, struct client *c)
{
	int fd = udp_loopback(NULL, 0, 0);
	if (fd < 0 || lclient_new(&c->s, c->id, th->srv, fd, &th->sa, sizeof(th->sa), NULL) != 0)
		return -1;
	sio_set_handler(c->s, TYPE_DATA, cli_msg, NULL, c);
	c->th = th;
	return sio_session_start_loop(c->s);
}

/* Writes what the client's window and its thread's cap allow. */
static void client_send(struct client *c)
{
	int wrote = 0;
	uint64_t t = now_ms();
	if (c->sent > c->next && t > c->last_rx + 10000) {
		/* no reply for 10 s: the rest is lost (allowed only if the
		 * kernel dropped datagrams): go on */
		c->gaps += c->sent - c->next;
		c->th->inflight -= c->sent - c->next;
		c->next = c->sent;
	}
	if (c->sent == c->next)
		c->last_rx = t;
	while (c->established && c->sent < NMSG && c->sent - c->next < WINDOW &&
	       c->th->inflight < THREAD_CAP) {
		uint8_t m[5000];
		size_t len = msg_size(c->sent);
		msg_fill(m, c->idx, c->sent, 0, len);
		if (sio_write_message(c->s, TYPE_DATA, m, len) != 0) {
			c->bad++;
			break;
		}
		c->sent++;
		c->th->inflight++;
		wrote = 1;
	}
	if (wrote)
		sio_session_process(c->s);
}

static void *client_thread(void *arg)
{
	struct cthread *th = arg;
	int ep = epoll_create1(EPOLL_CLOEXEC);
	int started = 0, pending = 0, finished = 0, rr = 0;
	uint64_t end = now_ms() + DEADLINE_MS, sweep = 0;
	while (finished < th->n && now_ms() < end) {
		/* key exchanges in batches: at most 64 in progress per thread */
		while (started < th->n && pending < 64) {
			struct client *c = &th->c[started++];
			if (client_start(th, c) != 0) {
				th->failed_start++;
				finished++;
				continue;
			}
			c->started = 1;
			pending++;
			struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
			epoll_ctl(ep, EPOLL_CTL_ADD, sio_session_fd(c->s), &ev);
			sio_session_process(c->s);
		}
		struct epoll_event evs[128];
		int k = epoll_wait(ep, evs, 128, 5);
		for (int i = 0; i < k; i++) {
			struct client *c = evs[i].data.ptr;
			sio_session_process(c->s);
		}
		uint64_t t = now_ms();
		int do_sweep = t >= sweep;
		if (do_sweep)
			sweep = t + 5;
		/* timers, establishment, and writes the cap now allows (round
		 * robin so that no client waits behind the others) */
		for (int j = 0; j < started; j++) {
			struct client *c = &th->c[(rr + j) % started];
			if (!c->started)
				continue;
			if (do_sweep && sio_session_timeout_ms(c->s) == 0)
				sio_session_process(c->s);
			if (!c->established && sio_session_state(c->s) == SIO_STATE_ESTABLISHED) {
				c->established = 1;
				pending--;
			}
			if (!c->established && sio_session_state(c->s) == SIO_STATE_CLOSED) {
				c->started = 0; /* failed: counted below */
				pending--;
				finished++;
				continue;
			}
			client_send(c);
			if (!c->fin && c->next == NMSG) {
				c->fin = 1;
				finished++;
			}
		}
		rr++;
	}
	close(ep);
	atomic_store(&th->done, 1);
	return NULL;
}

/* ---- the 1000-peer run ------------------------------------------------------- */

static void run_scale(int loop)
{
	uint64_t t0 = now_ms();
	memset(slots, 0, sizeof(slots));
	atomic_store(&nslots, 0);
	for (int i = 0; i < npeers; i++)
		atomic_store(&seen[i], 0);
	atomic_store(&reply_fail, 0);

	struct sockaddr_in sa;
	int sfd = udp_loopback(&sa, UDP_REUSEPORT, 4 << 20);
	CHECK(sfd >= 0);
	sio_listener_options lo;
	memset(&lo, 0, sizeof(lo));
	lo.workers = 2;
	lo.close_fd = 1;
	lo.on_session = on_session;
	lo.max_memory = (uint64_t)npeers * (8u << 20); /* the test's peers, not the machine's RAM */
	sio_listener *l = NULL;
	CHECK_OK(sio_listener_new(&l, srv_id, sfd, NULL, &lo));
	if (!l)
		return;
	CHECK_OK(loop ? sio_listener_start_loop(l) : sio_listener_start(l));

	struct cthread th[NTHREADS];
	memset(th, 0, sizeof(th));
	for (int t = 0; t < NTHREADS; t++) {
		th[t].c = &clients[t * npeers / NTHREADS];
		th[t].n = (t + 1) * npeers / NTHREADS - t * npeers / NTHREADS;
		th[t].sa = sa;
		CHECK_OK(sio_remote_from_public_key(&th[t].srv, srv_pk));
	}
	for (int i = 0; i < npeers; i++) {
		clients[i].idx = i;
		clients[i].s = NULL;
		clients[i].started = clients[i].established = clients[i].fin = 0;
		clients[i].sent = clients[i].got = clients[i].bad = 0;
		clients[i].next = clients[i].gaps = 0;
	}
	for (int t = 0; t < NTHREADS; t++)
		CHECK(pthread_create(&th[t].t, NULL, client_thread, &th[t]) == 0);

	/* the program's side: accept every peer (and, in event-loop style,
	 * drive the listener and the accepted sessions) */
	static sio_session *acc[MAXPEERS + 16];
	int nacc = 0, lfd = loop ? sio_listener_fd(l) : -1, peak_fds = 0;
	uint64_t end = now_ms() + DEADLINE_MS;
	if (!loop) {
		while (nacc < npeers && now_ms() < end)
			if (sio_listener_accept(l, &acc[nacc], 1000) == 0)
				nacc++;
		peak_fds = count_fds();
	} else {
		int ep = epoll_create1(EPOLL_CLOEXEC);
		struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
		CHECK_OK(epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev));
		uint64_t sweep = 0;
		for (;;) {
			/* until the clients are done: the last replies leave
			 * during later sio_listener_process() or
			 * sio_session_process() calls */
			int running = 0;
			for (int t = 0; t < NTHREADS; t++)
				running += !atomic_load(&th[t].done);
			if (!running)
				break;
			int to = sio_listener_timeout_ms(l);
			struct epoll_event evs[128];
			int k = epoll_wait(ep, evs, 128, to < 0 || to > 5 ? 5 : to);
			CHECK_OK(sio_listener_process(l));
			while (nacc < npeers + 16 && sio_listener_accept(l, &acc[nacc], 0) == 0) {
				/* today accepted sessions have their own descriptor;
				 * with the worker pool they may have none (-1) or
				 * share the listener's: both are fine here */
				int fd = sio_session_fd(acc[nacc]);
				struct epoll_event e = {.events = EPOLLIN, .data.u64 = (uint64_t)nacc + 1};
				if (fd >= 0 && fd != lfd)
					(void)epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
				nacc++;
			}
			for (int i = 0; i < k; i++)
				if (evs[i].data.u64)
					sio_session_process(acc[evs[i].data.u64 - 1]);
			uint64_t t = now_ms();
			if (t >= sweep) {
				sweep = t + 5;
				for (int i = 0; i < nacc; i++)
					if (sio_session_timeout_ms(acc[i]) == 0)
						sio_session_process(acc[i]);
			}
			if (nacc == npeers && !peak_fds)
				peak_fds = count_fds();
		}
		close(ep);
	}
	for (int t = 0; t < NTHREADS; t++)
		pthread_join(th[t].t, NULL);
	if (!peak_fds)
		peak_fds = count_fds();

	/* every peer accepted once, every message checked both ways */
	CHECK_EQ(atomic_load(&slots_over), 0);
	int srv_got = 0, srv_bad = 0, srv_gaps = 0, peers_seen = 0, cli_got = 0, cli_bad = 0,
	    cli_fin = 0, cli_gaps = 0;
	for (int i = 0; i < atomic_load(&nslots) && i < 2 * MAXPEERS; i++) {
		srv_got += atomic_load(&slots[i].got);
		srv_bad += atomic_load(&slots[i].bad);
		srv_gaps += atomic_load(&slots[i].gaps);
	}
	for (int i = 0; i < npeers; i++) {
		peers_seen += atomic_load(&seen[i]);
		cli_got += clients[i].got;
		cli_bad += clients[i].bad;
		cli_gaps += clients[i].gaps;
		cli_fin += clients[i].got == NMSG;
	}
	uint64_t kd = kernel_drops();
	CHECK_EQ(srv_bad, 0);
	CHECK_EQ(cli_bad, 0);
	CHECK_EQ(atomic_load(&reply_fail), 0);
	if (kd == 0) {
		CHECK_EQ(nacc, npeers);
		CHECK_EQ(srv_got, npeers * NMSG);
		CHECK_EQ(peers_seen, npeers);
		CHECK_EQ(cli_got, npeers * NMSG);
		CHECK_EQ(cli_fin, npeers);
	} else {
		/* an overloaded machine: each datagram dropped may lose one
		 * message or one reply, no more */
		printf("%s: the kernel dropped %llu datagrams at full socket buffers (machine "
		       "overloaded): %d messages and %d replies missing (%d and %d seen as gaps), "
		       "%d of %d peers complete\n",
		       loop ? "event-loop" : "blocking", (unsigned long long)kd, npeers * NMSG - srv_got,
		       srv_got - cli_got, srv_gaps, cli_gaps, cli_fin, npeers);
		int cli_sent = 0;
		for (int i = 0; i < npeers; i++)
			cli_sent += clients[i].sent;
		printf("%s: %d of %d peers accepted, %d messages sent\n", loop ? "event-loop" : "blocking",
		       nacc, npeers, cli_sent);
		CHECK((uint64_t)(cli_sent - cli_got) <= kd);
	}
	for (int t = 0; t < NTHREADS; t++)
		CHECK_EQ(th[t].failed_start, 0);

	/* on failure: the first few peers that did not finish, both sides */
	for (int i = 0, shown = 0; i < npeers && shown < 10; i++) {
		struct client *c = &clients[i];
		if (c->got == NMSG || !c->s || kd)
			continue;
		shown++;
		sio_stats cs;
		sio_session_stats(c->s, &cs);
		printf("client %d: sent %d got %d bad %d state %d; rx msgs %llu pkts %llu tx msgs %llu to %d\n", i, c->sent, c->got, c->bad,
		       (int)sio_session_state(c->s), (unsigned long long)cs.messages_received,
		       (unsigned long long)cs.packets_received, (unsigned long long)cs.messages_sent, sio_session_timeout_ms(c->s));
		for (int k = 0; k < nacc; k++) {
			uint8_t pk[32];
			if (sio_session_remote_key(acc[k], pk) == 0 && memcmp(pk, peer_pk[i], 32) == 0) {
				sio_stats ss;
				sio_session_stats(acc[k], &ss);
				printf("  server: rx %llu tx msgs %llu pkts %llu state %d timeout %d\n",
				       (unsigned long long)ss.messages_received, (unsigned long long)ss.messages_sent,
				       (unsigned long long)ss.packets_sent, (int)sio_session_state(acc[k]), sio_session_timeout_ms(acc[k]));
			}
		}
	}
	uint64_t sdrops = 0;
	for (int i = 0; i < nacc; i++) {
		sio_stats ss;
		sio_session_stats(acc[i], &ss);
		sdrops += ss.drop_malformed + ss.drop_decrypt + ss.drop_replay + ss.drop_too_old +
			  ss.drop_unknown_key + ss.drop_unknown_type + ss.drop_fragments;
	}
	CHECK_EQ(sdrops, 0);
	sio_listener_stats st;
	sio_listener_stats_get(l, &st);
	printf("%s: %d peers x %d messages each way in %llu ms; descriptors %d (limit %d); "
	       "workers %llu, handoffs %llu, half-open %llu, cookies %llu, drops: malformed %llu "
	       "unknown %llu queue %llu memory %llu\n",
	       loop ? "event-loop" : "blocking", npeers, NMSG, (unsigned long long)(now_ms() - t0),
	       peak_fds, (int)sysconf(_SC_OPEN_MAX), (unsigned long long)st.workers,
	       (unsigned long long)st.handoffs, (unsigned long long)st.half_open,
	       (unsigned long long)st.cookies_sent, (unsigned long long)st.drop_malformed,
	       (unsigned long long)st.drop_unknown, (unsigned long long)st.drop_queue,
	       (unsigned long long)st.drop_memory);
	if (kd == 0) {
		CHECK_EQ(st.sessions, npeers);
		CHECK_EQ(st.accepted, npeers);
		CHECK_EQ(st.half_open, 0);
		CHECK_EQ(st.drop_malformed + st.drop_unauthorized + st.drop_refused + st.drop_half_open +
				 st.drop_sessions + st.drop_queue + st.drop_replay + st.drop_memory,
			 0);
	} else {
		CHECK_EQ(st.sessions, nacc);
		CHECK_EQ(st.accepted, nacc);
	}
	CHECK_EQ(st.roams, 0);

	for (int i = 0; i < npeers; i++) {
		sio_session_free(clients[i].s);
		clients[i].s = NULL;
	}
	for (int i = 0; i < nacc; i++)
		sio_session_free(acc[i]);
	sio_listener_stats_get(l, &st);
	CHECK_EQ(st.sessions, 0);
	sio_listener_free(l);
	for (int t = 0; t < NTHREADS; t++)
		sio_remote_free(th[t].srv);
}

/* ---- roaming between worker sockets ------------------------------------------ */

/* A listener client over a custom transport, so that the test sees every
 * datagram it sends (to replay them): the callbacks add the connection-id
 * prefix themselves (docs/PROTOCOL.md, "Listener"), as the session only
 * does for descriptor transports. Roaming replaces the socket under the
 * same descriptor number; recv is polled (poll_fd -1), so no epoll
 * registration goes stale. */
struct cbt {
	int fd;
	struct sockaddr_in srv;
	uint8_t prefix[9];
	pthread_mutex_t mu;
	uint8_t last[2048]; /* the last datagram sent, prefix included */
	size_t last_len;
};

static ssize_t cbt_send(void *ctx, const void *buf, size_t len)
{
	struct cbt *t = ctx;
	uint8_t d[2048];
	if (len + sizeof(t->prefix) > sizeof(d))
		return -EMSGSIZE;
	memcpy(d, t->prefix, sizeof(t->prefix));
	memcpy(d + sizeof(t->prefix), buf, len);
	ssize_t r = sendto(t->fd, d, len + sizeof(t->prefix), MSG_DONTWAIT, (struct sockaddr *)&t->srv,
			   sizeof(t->srv));
	if (r < 0)
		return -errno;
	pthread_mutex_lock(&t->mu);
	memcpy(t->last, d, (size_t)r);
	t->last_len = (size_t)r;
	pthread_mutex_unlock(&t->mu);
	return (ssize_t)len;
}

static ssize_t cbt_recv(void *ctx, void *buf, size_t len)
{
	struct cbt *t = ctx;
	ssize_t r = recv(t->fd, buf, len, MSG_DONTWAIT);
	return r < 0 ? -errno : r;
}

static int exchange(sio_session *c, sio_session *s, const char *tag, int k)
{
	char m[64], b[64];
	int n = snprintf(m, sizeof(m), "%s %d c2s", tag, k);
	if (sio_write(c, m, (size_t)n) != n || sio_read_timeout(s, b, sizeof(b), 20000) != n ||
	    memcmp(b, m, (size_t)n) != 0)
		return -1;
	n = snprintf(m, sizeof(m), "%s %d s2c", tag, k);
	if (sio_write(s, m, (size_t)n) != n || sio_read_timeout(c, b, sizeof(b), 20000) != n ||
	    memcmp(b, m, (size_t)n) != 0)
		return -1;
	return 0;
}

/* MOVES times: the client's last datagram (authentic, already delivered)
 * and a forged one under its connection id are sent from 16 fresh ports
 * (with 4 workers, most of them reach another worker's socket than the
 * client's): nothing moves, nothing is sent to those ports, the data keeps
 * flowing; then the client itself moves to a new port: one roam each. */
static void test_roam_workers(void)
{
	enum { MOVES = 8, EVIL = 16 };
	struct sockaddr_in sa;
	int sfd = udp_loopback(&sa, UDP_REUSEPORT, 0);
	CHECK(sfd >= 0);
	sio_listener_options lo;
	memset(&lo, 0, sizeof(lo));
	lo.workers = 4;
	lo.close_fd = 1;
	lo.cookie_threshold = -1; /* the callbacks do not take cookie replies */
	sio_listener *l = NULL;
	CHECK_OK(sio_listener_new(&l, srv_id, sfd, NULL, &lo));
	if (!l)
		return;
	CHECK_OK(sio_listener_start(l));

	static struct cbt ct;
	memset(&ct, 0, sizeof(ct));
	pthread_mutex_init(&ct.mu, NULL);
	ct.fd = udp_loopback(NULL, 0, 0);
	ct.srv = sa;
	ct.prefix[0] = 0x20;
	randombytes_buf(ct.prefix + 1, 8);
	sio_transport t;
	memset(&t, 0, sizeof(t));
	t.kind = SIO_TRANSPORT_DATAGRAM;
	t.read_fd = t.write_fd = -1;
	t.poll_fd = -1;
	t.send = cbt_send;
	t.recv = cbt_recv;
	t.ctx = &ct;
	sio_options o;
	memset(&o, 0, sizeof(o));
	o.kx_retry_ns = 200000000;
	o.send_delay_ns = -1;
	sio_remote *srv = NULL;
	CHECK_OK(sio_remote_from_public_key(&srv, srv_pk));
	sio_session *c = NULL, *s = NULL;
	CHECK_OK(sio_session_new(&c, clients[0].id, srv, &t, &o, NULL));
	CHECK_OK(sio_session_start(c));
	CHECK_OK(sio_listener_accept(l, &s, 30000));
	if (!s || !c)
		return;
	CHECK_OK(exchange(c, s, "first", 0));

	for (int k = 0; k < MOVES; k++) {
		uint8_t rep[2048], forged[200];
		pthread_mutex_lock(&ct.mu);
		size_t rl = ct.last_len;
		memcpy(rep, ct.last, rl);
		pthread_mutex_unlock(&ct.mu);
		CHECK(rl > 9);
		memcpy(forged, ct.prefix, 9);
		randombytes_buf(forged + 9, sizeof(forged) - 9);
		forged[9] = rep[9]; /* the same kind of packet, garbage inside */
		int evil[EVIL];
		for (int e = 0; e < EVIL; e++) {
			evil[e] = udp_loopback(NULL, 0, 0);
			sendto(evil[e], rep, rl, 0, (struct sockaddr *)&sa, sizeof(sa));
			sendto(evil[e], forged, sizeof(forged), 0, (struct sockaddr *)&sa, sizeof(sa));
		}
		CHECK_OK(exchange(c, s, "attacked", k));
		sio_listener_stats st;
		sio_listener_stats_get(l, &st);
		CHECK_EQ(st.roams, k);
		int leaked = 0;
		for (int e = 0; e < EVIL; e++) {
			uint8_t b[2048];
			leaked += recv(evil[e], b, sizeof(b), MSG_DONTWAIT) >= 0;
			close(evil[e]);
		}
		CHECK_EQ(leaked, 0); /* nothing went to the attacker's ports */

		/* the client moves to a new source port */
		int nfd = udp_loopback(NULL, 0, 0);
		CHECK(dup2(nfd, ct.fd) == ct.fd);
		close(nfd);
		CHECK_OK(exchange(c, s, "moved", k));
		sio_listener_stats_get(l, &st);
		CHECK_EQ(st.roams, k + 1);
	}
	sio_stats ss;
	sio_listener_stats st;
	sio_session_stats(s, &ss);
	sio_listener_stats_get(l, &st);
	uint64_t drops = ss.drop_replay + ss.drop_too_old + ss.drop_decrypt + ss.drop_unknown_key +
			 ss.drop_malformed;
	printf("roaming over 4 workers: %d moves, %llu roams, %llu forged/replayed packets dropped "
	       "by the session (of %d sent)\n",
	       MOVES, (unsigned long long)st.roams, (unsigned long long)drops, 2 * EVIL * MOVES);
	CHECK(drops > 0);
	CHECK_EQ(ss.messages_received, 1 + 2 * MOVES);
	sio_session_free(c);
	sio_session_free(s);
	close(ct.fd);
	pthread_mutex_destroy(&ct.mu);
	sio_remote_free(srv);
	sio_listener_free(l);
}

int main(void)
{
	alarm(600);
	CHECK_OK(sio_init());
	/* 1000 clients, each a UDP socket, two eventfds and an epoll
	 * descriptor today, plus the accepted sessions' own: raise the soft
	 * descriptor limit to the hard one */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	const char *np = getenv("SIO_TEST_PEERS");
	if (np && atoi(np) >= 2 && atoi(np) <= MAXPEERS)
		npeers = atoi(np);
	CHECK_OK(sio_identity_generate(&srv_id));
	sio_identity_public_key(srv_id, srv_pk);
	for (int i = 0; i < npeers; i++) {
		CHECK_OK(sio_identity_generate(&clients[i].id));
		sio_identity_public_key(clients[i].id, peer_pk[i]);
	}
	test_roam_workers();
	run_scale(0);
	run_scale(1);
	for (int i = 0; i < npeers; i++)
		sio_identity_free(clients[i].id);
	sio_identity_free(srv_id);
	return check_done("test_listener_scale");
}
