/* Attacks on a worker-pool listener from the network (issue #17's design),
 * against the public API, loopback only (127.0.0.1-3):
 *
 * - badsig: one host without any valid key, knowing only an allowed public
 *   key, sends first key-exchange messages of the right layout whose
 *   signatures do not verify, each under a fresh connection id (all naming
 *   one worker), and echoes the cookies the listener asks for. Every such
 *   exchange fails at the signature check; it must be freed at once, not
 *   held until the half-open timeout, or a few hundred datagrams lock every
 *   legitimate newcomer out (drop_half_open) for as long as the attacker
 *   repeats them.
 * - amp: clients whose datagrams carry a victim's address (127.0.0.2),
 *   under ids naming every worker: at most 3 times the bytes back.
 * - hijack: under a live peer's id, another allowed key's first message, a
 *   stranger's, junk, from other ports and addresses: nothing moves,
 *   nothing reaches them, the session keeps its key and its data.
 * - flood: junk and forged key exchanges at full speed (cookies echoed),
 *   ids naming one worker, then every worker: the caps hold, newcomers get
 *   in, memory stays within the budget.
 * - lifetimes: the program frees its sessions and the clients vanish while
 *   datagrams for them keep arriving (handed between workers on a shared
 *   socket), then the listener is freed mid-flood (for ASan and TSan).
 *
 * Run with an argument to run one probe only. No timing assertions: only
 * generous deadlines. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "lib/lclient.h"
#include "secureio.h"

static sio_identity *srv_id, *ida, *idb;
static uint8_t srv_pk[32], pka[32], pkb[32];

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* A UDP socket bound to 127.0.0.HOST (any port), SO_REUSEPORT when REUSE. */
static int udp_bound(struct sockaddr_in *addr, int host, int reuse)
{
	return udp_loopback_on(addr, 0x7f000000u | (uint32_t)host, reuse ? UDP_REUSEPORT : 0, 0);
}

static sio_listener *listener_open(struct sockaddr_in *sa, sio_listener_options *lo, const sio_remote *allowed)
{
	int fd = udp_bound(sa, 1, 1);
	if (fd < 0)
		return NULL;
	lo->close_fd = 1;
	sio_listener *l = NULL;
	if (sio_listener_new(&l, srv_id, fd, allowed, lo) != 0 || sio_listener_start(l) != 0) {
		CHECK(0);
		sio_listener_free(l);
		return NULL;
	}
	return l;
}

/* A real client (its own UDP socket, cookies handled). */
static int client_open(sio_session **c, sio_identity *id, const struct sockaddr_in *sa)
{
	sio_remote *srv = NULL;
	if (sio_remote_from_public_key(&srv, srv_pk) != 0)
		return -1;
	int r = lclient_new(c, id, srv, udp_bound(NULL, 1, 0), sa, sizeof(*sa), NULL);
	sio_remote_free(srv);
	return r ? r : sio_session_start(*c);
}

/* The first datagram a client of identity ID sends (prefix included). */
static size_t first_datagram(sio_identity *id, uint8_t *out, size_t cap)
{
	struct sockaddr_in cap_sa;
	int cfd = udp_bound(&cap_sa, 1, 0);
	sio_session *c = NULL;
	size_t n = 0;
	if (client_open(&c, id, &cap_sa) == 0) {
		struct pollfd pf = {cfd, POLLIN, 0};
		if (poll(&pf, 1, 10000) == 1) {
			ssize_t r = recv(cfd, out, cap, 0);
			n = r > 0 ? (size_t)r : 0;
		}
	}
	sio_session_free(c);
	close(cfd);
	return n;
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* Sends a first message under CID from FD (echoing cookie COOKIE, if not
 * NULL). */
static void send_first(int fd, const struct sockaddr_in *sa, const uint8_t *msg, size_t mlen,
		       const uint8_t cid[8], const uint8_t *cookie)
{
	uint8_t d[9 + 17 + 256];
	size_t n = 9;
	d[0] = 0x20;
	memcpy(d + 1, cid, 8);
	if (cookie) {
		d[n++] = 0x22;
		memcpy(d + n, cookie, 16);
		n += 16;
	}
	memcpy(d + n, msg, mlen);
	sendto(fd, d, n + mlen, 0, (const struct sockaddr *)sa, sizeof(*sa));
}


/* ---- a callback transport with a chosen connection id ------------------- */

/* Sends from fd (the prefix added), counts what it sent; recv reads rfd
 * (-1: nothing ever arrives, as for a victim whose address was used). */
struct cbt {
	atomic_int fd, rfd; /* (test_hijack moves them under a live session) */
	struct sockaddr_in srv;
	uint8_t prefix[9];
	atomic_ullong sent;
};

static ssize_t cbt_send(void *ctx, const void *buf, size_t len)
{
	struct cbt *t = ctx;
	uint8_t d[70000];
	if (len + 9 > sizeof(d))
		return -EMSGSIZE;
	memcpy(d, t->prefix, 9);
	memcpy(d + 9, buf, len);
	ssize_t r = sendto(t->fd, d, len + 9, MSG_DONTWAIT, (struct sockaddr *)&t->srv, sizeof(t->srv));
	if (r < 0)
		return -errno;
	atomic_fetch_add(&t->sent, (unsigned long long)r);
	return (ssize_t)len;
}

static ssize_t cbt_recv(void *ctx, void *buf, size_t len)
{
	struct cbt *t = ctx;
	if (t->rfd < 0)
		return -EAGAIN;
	ssize_t r = recv(t->rfd, buf, len, MSG_DONTWAIT);
	return r < 0 ? -errno : r;
}

static int cbt_client(sio_session **c, sio_identity *id, struct cbt *t)
{
	sio_transport tr;
	memset(&tr, 0, sizeof(tr));
	tr.kind = SIO_TRANSPORT_DATAGRAM;
	tr.read_fd = tr.write_fd = -1;
	tr.poll_fd = -1;
	tr.send = cbt_send;
	tr.recv = cbt_recv;
	tr.ctx = t;
	sio_options o;
	memset(&o, 0, sizeof(o));
	o.kx_retry_ns = 200000000;
	o.send_delay_ns = -1;
	sio_remote *srv = NULL;
	if (sio_remote_from_public_key(&srv, srv_pk) != 0)
		return -1;
	int r = sio_session_new(c, id, srv, &tr, &o, NULL);
	sio_remote_free(srv);
	return r ? r : sio_session_start(*c);
}

/* Bytes waiting on FD, read within MS milliseconds of quiet. */
static uint64_t drain(int fd, int ms)
{
	uint64_t n = 0;
	struct pollfd pf = {fd, POLLIN, 0};
	while (poll(&pf, 1, ms) == 1) {
		uint8_t b[70000];
		ssize_t r = recv(fd, b, sizeof(b), 0);
		if (r > 0)
			n += (uint64_t)r;
	}
	return n;
}

/* ---- amplification toward an address that never answers ----------------- */

/* Clients whose datagrams carry a victim's address (here they are sent from
 * the victim's socket on 127.0.0.2, which only counts what it gets), under
 * connection ids naming every worker, retrying for 3 s: what the listener
 * sends there stays within 3 times what it received from there. */
static void test_amp(void)
{
	enum { NC = 8, WORKERS = 4 };
	sio_listener_options lo;
	memset(&lo, 0, sizeof(lo));
	lo.workers = WORKERS;
	lo.cookie_threshold = -1;
	struct sockaddr_in sa;
	sio_listener *l = listener_open(&sa, &lo, NULL);
	int victim = udp_bound(NULL, 2, 0);
	if (!l || victim < 0) {
		CHECK(0);
		sio_listener_free(l);
		return;
	}
	static struct cbt t[NC];
	sio_session *c[NC];
	sio_identity *ids[NC];
	for (int i = 0; i < NC; i++) {
		memset(&t[i], 0, sizeof(t[i]));
		t[i].fd = victim;
		t[i].rfd = -1;
		t[i].srv = sa;
		t[i].prefix[0] = 0x20;
		randombytes_buf(t[i].prefix + 1, 8);
		put_be32(t[i].prefix + 1, (uint32_t)i); /* worker i % 4 */
		CHECK_OK(sio_identity_generate(&ids[i]));
		CHECK_OK(cbt_client(&c[i], ids[i], &t[i]));
	}
	uint64_t back = 0;
	uint64_t end = now_ms() + 3000;
	while (now_ms() < end)
		back += drain(victim, 50);
	for (int i = 0; i < NC; i++)
		sio_session_free(c[i]);
	back += drain(victim, 300);
	uint64_t sent = 0;
	for (int i = 0; i < NC; i++) {
		sent += atomic_load(&t[i].sent);
		sio_identity_free(ids[i]);
	}
	sio_listener_stats st;
	sio_listener_stats_get(l, &st);
	printf("amp: %d clients from 127.0.0.2 over %d workers: %llu bytes in, %llu back (x%.2f), "
	       "amp_limited %llu, half_open %llu, handoffs %llu\n",
	       NC, WORKERS, (unsigned long long)sent, (unsigned long long)back,
	       sent ? (double)back / (double)sent : 0.0, (unsigned long long)st.amp_limited,
	       (unsigned long long)st.half_open, (unsigned long long)st.handoffs);
	CHECK(sent > 0);
	CHECK(back <= 3 * sent);
	close(victim);
	sio_listener_free(l);
}

/* ---- roaming and hijacking under a live peer's connection id ------------ */

/* A's session is live. Then, under A's connection id, from other ports and
 * from 127.0.0.3: B's first message (an allowed key: a takeover attempt), a
 * stranger's first message and garbage data packets. Nothing moves, no
 * reply reaches those ports, A's session keeps its key and its data. Last,
 * A itself (a key holder) sends one authenticated packet from 127.0.0.2
 * and goes quiet: only printed, what the listener then sends there (an
 * authenticated data packet validates the address it came from: a peer
 * may point its own session's traffic at another address; docs/SECURITY.md,
 * "Not promised"). */
static void test_hijack(void)
{
	enum { WORKERS = 4, EVIL = 12 };
	sio_remote *allowed = NULL;
	CHECK_OK(sio_remote_from_public_key(&allowed, pka));
	CHECK_OK(sio_remote_add(allowed, pkb));
	sio_listener_options lo;
	memset(&lo, 0, sizeof(lo));
	lo.workers = WORKERS;
	lo.cookie_threshold = -1;
	struct sockaddr_in sa;
	sio_listener *l = listener_open(&sa, &lo, allowed);
	static struct cbt ta;
	memset(&ta, 0, sizeof(ta));
	ta.fd = ta.rfd = udp_bound(NULL, 1, 0);
	ta.srv = sa;
	ta.prefix[0] = 0x20;
	randombytes_buf(ta.prefix + 1, 8);
	sio_session *c = NULL, *s = NULL;
	CHECK_OK(cbt_client(&c, ida, &ta));
	CHECK_OK(sio_listener_accept(l, &s, 30000));
	if (!l || !c || !s) {
		sio_session_free(c);
		sio_listener_free(l);
		sio_remote_free(allowed);
		return;
	}
	char b[64];
	CHECK_EQ(sio_write(c, "hello", 5), 5);
	CHECK_EQ(sio_read_timeout(s, b, sizeof(b), 20000), 5);
	uint8_t fb[512];
	size_t fbl = first_datagram(idb, fb, sizeof(fb)); /* B's own first message */
	sio_identity *stranger = NULL;
	CHECK_OK(sio_identity_generate(&stranger));
	uint8_t fs[512];
	size_t fsl = first_datagram(stranger, fs, sizeof(fs));
	CHECK(fbl == 184 && fsl == 184);
	memcpy(fb + 1, ta.prefix + 1, 8);
	memcpy(fs + 1, ta.prefix + 1, 8);
	int evil[EVIL];
	for (int e = 0; e < EVIL; e++) {
		evil[e] = udp_bound(NULL, e % 2 ? 3 : 1, 0);
		uint8_t junk[300];
		memcpy(junk, ta.prefix, 9);
		randombytes_buf(junk + 9, sizeof(junk) - 9);
		junk[9] = (uint8_t)(0x40 | (junk[9] & 0x3f));
		sendto(evil[e], fb, fbl, 0, (struct sockaddr *)&sa, sizeof(sa));
		sendto(evil[e], fs, fsl, 0, (struct sockaddr *)&sa, sizeof(sa));
		sendto(evil[e], junk, sizeof(junk), 0, (struct sockaddr *)&sa, sizeof(sa));
	}
	for (int k = 0; k < 5; k++) {
		CHECK_EQ(sio_write(c, "still A", 7), 7);
		CHECK_EQ(sio_read_timeout(s, b, sizeof(b), 20000), 7);
		CHECK_EQ(sio_write(s, "to A", 4), 4);
		CHECK_EQ(sio_read_timeout(c, b, sizeof(b), 20000), 4);
	}
	uint64_t leaked = 0;
	for (int e = 0; e < EVIL; e++) {
		leaked += drain(evil[e], e ? 0 : 200);
		close(evil[e]);
	}
	uint8_t rk[32];
	CHECK_OK(sio_session_remote_key(s, rk));
	CHECK(memcmp(rk, pka, 32) == 0);
	CHECK_EQ(sio_session_state(s), SIO_STATE_ESTABLISHED);
	sio_listener_stats st;
	sio_listener_stats_get(l, &st);
	printf("hijack: B's and a stranger's first messages, junk, under A's id from %d ports: "
	       "%llu bytes to them, roams %llu, accepted %llu, sessions %llu, half_open %llu\n",
	       EVIL, (unsigned long long)leaked, (unsigned long long)st.roams,
	       (unsigned long long)st.accepted, (unsigned long long)st.sessions,
	       (unsigned long long)st.half_open);
	CHECK_EQ(leaked, 0);
	CHECK_EQ(st.roams, 0);
	CHECK_EQ(st.accepted, 1);

	/* A key holder points its session at 127.0.0.2 with one packet */
	int victim = udp_bound(NULL, 2, 0);
	int old_fd = atomic_load(&ta.fd);
	atomic_store(&ta.rfd, -1);
	atomic_store(&ta.fd, victim);
	unsigned long long before = atomic_load(&ta.sent);
	CHECK_EQ(sio_write(c, "moved", 5), 5);
	CHECK_EQ(sio_read_timeout(s, b, sizeof(b), 20000), 5);
	unsigned long long in = atomic_load(&ta.sent) - before;
	sio_session_free(c); /* quiet from now on */
	static uint8_t big[1200];
	for (int k = 0; k < 200; k++)
		sio_write(s, big, sizeof(big));
	uint64_t got = drain(victim, 500);
	sio_listener_stats_get(l, &st);
	printf("hijack: one authenticated packet from 127.0.0.2 (%llu bytes): roams %llu, then %llu bytes "
	       "sent there (x%.0f)\n",
	       in, (unsigned long long)st.roams, (unsigned long long)got, in ? (double)got / (double)in : 0.0);
	close(victim);
	close(old_fd);
	sio_session_free(s);
	sio_identity_free(stranger);
	sio_listener_free(l);
	sio_remote_free(allowed);
}

/* ---- floods aimed at one worker and at all of them ----------------------- */

static long rss_kib(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long pages = 0, res = 0;
	if (f) {
		if (fscanf(f, "%ld %ld", &pages, &res) != 2)
			res = 0;
		fclose(f);
	}
	return res * (sysconf(_SC_PAGESIZE) / 1024);
}

struct flood {
	struct sockaddr_in sa;
	atomic_int stop;
	uint32_t worker_mod; /* cids: worker (value % 4 == target), 0 = any */
	int target;
	uint8_t (*kx)[175]; /* valid first messages of fresh identities */
	int nkx;
	int forge; /* each sent with a random sender session id: bad signature */
	atomic_ullong sent;
};

/* Junk and key exchanges (with cookies echoed) from 4 sockets. */
static void *flood_main(void *arg)
{
	struct flood *f = arg;
	int fd[4];
	for (int i = 0; i < 4; i++)
		fd[i] = udp_bound(NULL, 1 + i % 3, 0);
	uint32_t seq = 0;
	while (!atomic_load(&f->stop)) {
		for (int k = 0; k < 64; k++, seq++) {
			uint8_t d[9 + 300], cid[8];
			randombytes_buf(cid, 8);
			if (f->worker_mod)
				put_be32(cid, (seq * f->worker_mod) + (uint32_t)f->target);
			int s = (int)(seq % 4);
			if (f->nkx && seq % 2 == 0) {
				uint8_t m[175];
				memcpy(m, f->kx[(seq / 2) % (uint32_t)f->nkx], 175);
				if (f->forge)
					randombytes_buf(m + 2, 16);
				send_first(fd[s], &f->sa, m, 175, cid, NULL);
			} else {
				d[0] = 0x20;
				memcpy(d + 1, cid, 8);
				randombytes_buf(d + 9, 300);
				sendto(fd[s], d, 9 + (seq % 300), 0, (struct sockaddr *)&f->sa, sizeof(f->sa));
			}
			atomic_fetch_add(&f->sent, 1);
		}
		/* cookies asked for: echoed (an attacker with a real address) */
		for (int s = 0; s < 4; s++) {
			uint8_t r[2048];
			ssize_t n;
			while ((n = recv(fd[s], r, sizeof(r), MSG_DONTWAIT)) > 0) {
				if (n != 25 || r[0] != 0x21 || !f->nkx)
					continue;
				uint8_t m[175];
				memcpy(m, f->kx[seq++ % (uint32_t)f->nkx], 175);
				if (f->forge)
					randombytes_buf(m + 2, 16);
				send_first(fd[s], &f->sa, m, 175, r + 1, r + 9);
			}
		}
	}
	for (int i = 0; i < 4; i++)
		close(fd[i]);
	return NULL;
}

/* FORGE: the key exchanges carry bad signatures (each exchange fails at
 * once), else valid ones of NKX fresh identities, each resent under fresh
 * ids (replays, refused) and again once its exchange expired: then the
 * memory budget stays full and newcomers compete with the flood for the
 * slots that free up (a probe, not part of the regression run). */
static void test_flood_workers(int forge)
{
	enum { WORKERS = 4, HALF = 128, NC = 6 };
	int NKX = forge ? 16 : 200;
	static uint8_t kx[200][175];
	for (int i = 0; i < NKX; i++) {
		sio_identity *id = NULL;
		uint8_t d[512];
		CHECK_OK(sio_identity_generate(&id));
		size_t n = first_datagram(id, d, sizeof(d));
		CHECK(n == 184);
		memcpy(kx[i], d + 9, 175);
		sio_identity_free(id);
	}
	for (int mode = 0; mode < 2; mode++) {
		sio_listener_options lo;
		memset(&lo, 0, sizeof(lo));
		lo.workers = WORKERS;
		lo.max_half_open = HALF;
		lo.max_memory = 64ull << 20;
		struct sockaddr_in sa;
		sio_listener *l = listener_open(&sa, &lo, NULL);
		if (!l)
			return;
		long rss0 = rss_kib(), rss_max = rss0;
		static struct flood f;
		memset(&f, 0, sizeof(f));
		f.sa = sa;
		f.worker_mod = mode == 0 ? WORKERS : 0; /* one worker, then all */
		f.kx = kx;
		f.nkx = NKX;
		f.forge = forge;
		pthread_t th;
		CHECK_OK(pthread_create(&th, NULL, flood_main, &f));
		sio_session *c[NC], *s[NC];
		int acc = 0;
		uint64_t max_half = 0, max_mem = 0;
		for (int i = 0; i < NC; i++) {
			CHECK_OK(client_open(&c[i], i % 2 ? ida : idb, &sa));
			sleep_ms(300);
			sio_listener_stats st;
			sio_listener_stats_get(l, &st);
			if (st.half_open > max_half)
				max_half = st.half_open;
			if (st.memory > max_mem)
				max_mem = st.memory;
			long r = rss_kib();
			if (r > rss_max)
				rss_max = r;
		}
		/* a client whose attempt timed out under the flood tries again
		 * with a new session, as a real one would */
		uint64_t end = now_ms() + (forge ? 60000 : 20000);
		while (acc < NC && now_ms() < end) {
			if (sio_listener_accept(l, &s[acc], 200) == 0)
				acc++;
			for (int i = 0; i < NC; i++) {
				if (sio_session_state(c[i]) != SIO_STATE_CLOSED)
					continue;
				sio_session_free(c[i]);
				CHECK_OK(client_open(&c[i], i % 2 ? ida : idb, &sa));
			}
			sio_listener_stats st;
			sio_listener_stats_get(l, &st);
			if (st.half_open > max_half)
				max_half = st.half_open;
			if (st.memory > max_mem)
				max_mem = st.memory;
		}
		atomic_store(&f.stop, 1);
		pthread_join(th, NULL);
		sio_listener_stats st;
		sio_listener_stats_get(l, &st);
		printf("flood (%s, %s key exchanges): %llu datagrams; legit accepted %d/%d; half_open max %llu (cap %d), memory max "
		       "%llu MiB (budget 64), RSS %ld -> max %ld KiB; cookies %llu, drop_half_open %llu, "
		       "drop_memory %llu, drop_malformed %llu, drop_unknown %llu, drop_queue %llu, handoffs %llu, "
		       "expired %llu\n",
		       mode == 0 ? "ids naming worker 0" : "ids naming every worker", forge ? "forged" : "valid",
		       (unsigned long long)atomic_load(&f.sent), acc, NC, (unsigned long long)max_half, HALF,
		       (unsigned long long)(max_mem >> 20), rss0, rss_max, (unsigned long long)st.cookies_sent,
		       (unsigned long long)st.drop_half_open, (unsigned long long)st.drop_memory,
		       (unsigned long long)st.drop_malformed, (unsigned long long)st.drop_unknown,
		       (unsigned long long)st.drop_queue, (unsigned long long)st.handoffs,
		       (unsigned long long)st.expired);
		/* Spread over every worker, the flood leaves them CPU: all but
		 * one legitimate peer at least get in (one may still be
		 * retrying on a loaded machine). Aimed at one worker's socket
		 * at the full speed of a core, each forged message costs that
		 * worker a session start (admission verifies no signature) and
		 * the kernel drops most datagrams there, legitimate ones
		 * included: how many get in then depends on the machine's
		 * speed (4 of 6 under ASan), which docs/SECURITY.md states
		 * ("Not promised"); the caps below must hold either way. */
		if (forge && mode == 1)
			CHECK(acc >= NC - 1);
		CHECK(max_half <= HALF);
		CHECK(max_mem <= lo.max_memory);
		for (int i = 0; i < NC; i++)
			sio_session_free(c[i]);
		for (int i = 0; i < acc; i++)
			sio_session_free(s[i]);
		sio_listener_free(l);
	}
}

/* ---- lifetimes: frees while datagrams for the peers keep arriving --------- */

struct replayer {
	struct sockaddr_in sa;
	atomic_int stop;
	struct cbt *t;
	int n;
};

/* Datagrams under the peers' connection ids (garbage data packets and
 * key-exchange-looking ones) from 3 ports, as fast as it goes. */
static void *replay_main(void *arg)
{
	struct replayer *r = arg;
	int fd[3];
	for (int i = 0; i < 3; i++)
		fd[i] = udp_bound(NULL, 1, 0);
	uint32_t k = 0;
	while (!atomic_load(&r->stop)) {
		uint8_t d[400];
		struct cbt *t = &r->t[k % (uint32_t)r->n];
		memcpy(d, t->prefix, 9);
		randombytes_buf(d + 9, sizeof(d) - 9);
		d[9] = k % 3 ? (uint8_t)(0x40 | (d[9] & 0x3f)) : 0x80;
		sendto(fd[k % 3], d, k % 3 ? sizeof(d) : 184, 0, (struct sockaddr *)&r->sa, sizeof(r->sa));
		k++;
		if (k % 256 == 0) {
			uint8_t b[2048];
			for (int i = 0; i < 3; i++)
				while (recv(fd[i], b, sizeof(b), MSG_DONTWAIT) > 0)
					;
		}
	}
	for (int i = 0; i < 3; i++)
		close(fd[i]);
	return NULL;
}

static void test_lifetimes(void)
{
	enum { NC = 16, WORKERS = 4 };
	for (int shared = 0; shared < 2; shared++) {
		sio_listener_options lo;
		memset(&lo, 0, sizeof(lo));
		lo.workers = WORKERS;
		lo.cookie_threshold = -1;
		lo.close_fd = 1;
		struct sockaddr_in sa;
		/* shared: one socket without SO_REUSEPORT, every worker reads it
		 * and hands over what is not its own */
		int fd = udp_bound(&sa, 1, !shared);
		sio_listener *l = NULL;
		CHECK_OK(sio_listener_new(&l, srv_id, fd, NULL, &lo));
		CHECK_OK(sio_listener_start(l));
		static struct cbt t[NC];
		sio_session *c[NC], *s[NC];
		sio_identity *ids[NC];
		for (int i = 0; i < NC; i++) {
			memset(&t[i], 0, sizeof(t[i]));
			t[i].fd = t[i].rfd = udp_bound(NULL, 1, 0);
			t[i].srv = sa;
			t[i].prefix[0] = 0x20;
			randombytes_buf(t[i].prefix + 1, 8);
			CHECK_OK(sio_identity_generate(&ids[i]));
			CHECK_OK(cbt_client(&c[i], ids[i], &t[i]));
		}
		int acc = 0;
		for (int i = 0; i < NC; i++)
			if (sio_listener_accept(l, &s[acc], 30000) == 0)
				acc++;
		CHECK_EQ(acc, NC);
		static struct replayer r;
		memset(&r, 0, sizeof(r));
		r.sa = sa;
		r.t = t;
		r.n = NC;
		pthread_t th;
		CHECK_OK(pthread_create(&th, NULL, replay_main, &r));
		/* the program frees its sessions one by one, the clients too
		 * (vanishing peers), while datagrams for them keep coming */
		for (int i = 0; i < acc; i++) {
			if (i % 2)
				sio_write(s[i], "bye", 3);
			sio_session_free(s[i]);
			if (i % 4 == 0) {
				sio_session_free(c[i]);
				c[i] = NULL;
			}
			sleep_ms(20);
		}
		/* fresh exchanges in flight, then the listener goes mid-flood */
		for (int i = 0; i < NC; i++) {
			if (!c[i])
				continue;
			sio_session_free(c[i]);
			randombytes_buf(t[i].prefix + 1, 8);
			c[i] = NULL;
			if (i % 2)
				CHECK_OK(cbt_client(&c[i], ids[i], &t[i]));
		}
		sleep_ms(100);
		sio_listener_stats st;
		sio_listener_stats_get(l, &st);
		sio_listener_free(l);
		sleep_ms(100);
		atomic_store(&r.stop, 1);
		pthread_join(th, NULL);
		printf("lifetimes (%s): %d sessions freed under a flood of datagrams for them; handoffs %llu, "
		       "drop_unknown %llu, drop_queue %llu, half_open %llu at the listener's free\n",
		       shared ? "one shared socket" : "SO_REUSEPORT", acc, (unsigned long long)st.handoffs,
		       (unsigned long long)st.drop_unknown, (unsigned long long)st.drop_queue,
		       (unsigned long long)st.half_open);
		for (int i = 0; i < NC; i++) {
			sio_session_free(c[i]);
			close(t[i].fd);
			sio_identity_free(ids[i]);
		}
	}
}

/* ---- bad signatures hold no half-open slot ------------------------------ */

static void test_badsig(void)
{
	enum { HALF = 64, WORKERS = 4 };
	sio_remote *allowed = NULL;
	CHECK_OK(sio_remote_from_public_key(&allowed, pka));
	CHECK_OK(sio_remote_add(allowed, pkb));
	sio_listener_options lo;
	memset(&lo, 0, sizeof(lo));
	lo.workers = WORKERS;
	lo.max_half_open = HALF;
	/* long enough that only a failure, never the timeout, frees a slot
	 * while this test runs */
	lo.half_open_timeout_ns = 120000000000ll;
	struct sockaddr_in sa;
	sio_listener *l = listener_open(&sa, &lo, allowed);
	uint8_t first[512];
	size_t fl = first_datagram(ida, first, sizeof(first));
	CHECK(fl == 9 + 175);
	if (!l || fl != 9 + 175) {
		sio_listener_free(l);
		sio_remote_free(allowed);
		return;
	}
	const uint8_t *msg = first + 9;
	int evil = udp_bound(NULL, 1, 0);
	/* 4 x HALF forged messages: A's identity, its layout, a sender session
	 * id of our own (so no two are alike), the signature no longer
	 * matching; connection ids all naming worker 0 */
	int echoed = 0;
	uint32_t peak = 0;
	static uint8_t forged[4 * HALF][175];
	for (int round = 0; round < 4; round++) {
		/* a burst of HALF, then the cookies asked for are echoed */
		for (uint32_t k = 0; k < HALF; k++) {
			uint32_t i = (uint32_t)round * HALF + k;
			uint8_t cid[8];
			memcpy(forged[i], msg, 175);
			randombytes_buf(forged[i] + 2, 16);
			put_be32(cid, WORKERS * (i + 1));
			memcpy(cid + 4, &i, 4);
			send_first(evil, &sa, forged[i], 175, cid, NULL);
		}
		struct pollfd pf = {evil, POLLIN, 0};
		while (poll(&pf, 1, 200) == 1) {
			uint8_t r[2048];
			ssize_t n = recv(evil, r, sizeof(r), 0);
			uint32_t i;
			memcpy(&i, r + 5, 4);
			if (n == 25 && r[0] == 0x21 && i < 4 * HALF) {
				send_first(evil, &sa, forged[i], 175, r + 1, r + 9);
				echoed++;
			}
		}
		sio_listener_stats st;
		sio_listener_stats_get(l, &st);
		CHECK(st.half_open <= HALF);
		if (st.half_open > peak)
			peak = (uint32_t)st.half_open;
	}
	/* the failed exchanges go (the sweep runs every 100 ms) */
	sio_listener_stats st;
	uint64_t until = now_ms() + 30000;
	do {
		sleep_ms(20);
		sio_listener_stats_get(l, &st);
	} while (st.half_open > 0 && now_ms() < until);
	printf("badsig: %u forged first messages, %d cookies echoed, half_open peak %u, then %llu; "
	       "expired %llu, drop_half_open %llu, cookies_sent %llu\n",
	       4 * HALF, echoed, peak, (unsigned long long)st.half_open, (unsigned long long)st.expired,
	       (unsigned long long)st.drop_half_open, (unsigned long long)st.cookies_sent);
	CHECK_EQ(st.half_open, 0);
	/* a legitimate newcomer gets in */
	sio_session *c = NULL, *s = NULL;
	CHECK_OK(client_open(&c, idb, &sa));
	CHECK_OK(sio_listener_accept(l, &s, 30000));
	if (s && c) {
		uint8_t rk[32];
		CHECK_OK(sio_session_remote_key(s, rk));
		CHECK(memcmp(rk, pkb, 32) == 0);
	}
	sio_session_free(c);
	sio_session_free(s);
	close(evil);
	sio_listener_free(l);
	sio_remote_free(allowed);
}

int main(int argc, char **argv)
{
	alarm(300);
	CHECK_OK(sio_init());
	CHECK_OK(sio_identity_generate(&srv_id));
	CHECK_OK(sio_identity_generate(&ida));
	CHECK_OK(sio_identity_generate(&idb));
	sio_identity_public_key(srv_id, srv_pk);
	sio_identity_public_key(ida, pka);
	sio_identity_public_key(idb, pkb);
	const char *only = argc > 1 ? argv[1] : NULL;
	if (!only || strcmp(only, "badsig") == 0)
		test_badsig();
	if (!only || strcmp(only, "amp") == 0)
		test_amp();
	if (!only || strcmp(only, "hijack") == 0)
		test_hijack();
	if (!only || strcmp(only, "flood") == 0)
		test_flood_workers(1);
	if (only && strcmp(only, "floodvalid") == 0)
		test_flood_workers(0);
	if (!only || strcmp(only, "lifetimes") == 0)
		test_lifetimes();
	sio_identity_free(ida);
	sio_identity_free(idb);
	sio_identity_free(srv_id);
	return check_done("test_listener_attacks");
}
