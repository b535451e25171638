/* Traffic spread over cores (issue #17): aggregate throughput a listener
 * delivers to the program with lo.workers = 1 and with lo.workers = the
 * number of online cores, measured in the same run, for 100 and 1000
 * active peers sending 1300-byte messages; the ratio, and fairness (the
 * busiest and the least served peer's delivered counts).
 *
 * Clients must cost the machine little, or they take the cores the
 * listener should scale on. A child process runs them: each client does a
 * real key exchange over its own UDP socket (a custom transport that adds
 * the listener's connection-id prefix itself), then writes all its
 * messages while the transport captures the sealed datagrams instead of
 * sending them. The child then only replays those datagrams with
 * sendmmsg, round robin over the peers (each sent once, so the sessions'
 * replay protection takes them; no flow control in the protocol waits for
 * acknowledgements). The parent process is the listener: its handlers
 * count messages per peer and per worker thread. Two measurements:
 *
 *  live   the listener reads while the child sends; the window is the
 *         sending time. On a machine whose cores the senders share (and
 *         loopback sendmmsg also does the receive side's enqueue in the
 *         sender's context) this is often the senders' limit: a line says
 *         "sender-bound" then.
 *  drain  a gate is closed before sending: each worker thread's handler
 *         blocks on the first message it sees, so the workers stop reading
 *         and the datagrams pile up in their sockets' receive queues
 *         (sized for the whole run: SO_RCVBUFFORCE, or what SO_RCVBUF
 *         gives, and then fewer datagrams). Once the child is done and the
 *         queues stopped growing, the gate opens and the figure is the
 *         messages delivered divided by the time from the gate opening to
 *         the last delivery: the senders are out of the window and the
 *         cores are the listener's. Fairness: each peer's messages
 *         delivered when half of the queued ones were.
 *
 * See docs/BENCHMARKS.md.
 *
 *   bench_lscale [-q] [-m live,drain] [-r ROUNDS] [-p PEERS,...] [-w WORKERS,...]
 *                [-s SENDERS] [-n PACKETS] [-c PERF_CONTROL_FIFO]
 *     -q  quick: 100000 packets per run
 *     -m  measurements (default live,drain)
 *     -r  drain rounds, each worker count once per round (default 3);
 *         the summary compares the medians
 *     -p  peer counts (default 100,1000)
 *     -w  worker counts (default 1,<online cores>)
 *     -s  sending threads in the client process, live (default: online
 *         cores; a drain sends from one)
 *     -n  datagrams pre-built per run (default 300000, about 440 MB)
 *     -c  a FIFO of `perf record --control fifo:FIFO -D -1`: "enable" is
 *         written to it when a drain's gate opens, "disable" when the
 *         drain ends, so perf samples the drains only
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <secureio.h>

#include "lib/lclient.h" /* tests/lib: loopback UDP sockets */

#define MSG 1300
#define TYPE 3u
#define STRIDE 1472 /* room for a 1452-byte packet and the 9-byte prefix */
#define MAXPEERS 100000

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* CPU time the whole machine spent busy (every process, and time the
 * hypervisor gave to others: steal), from /proc/stat, in seconds. */
static double machine_busy_s(void)
{
	unsigned long long v[8] = {0};
	FILE *fp = fopen("/proc/stat", "r");
	if (!fp)
		return 0;
	int n = fscanf(fp, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
		       &v[5], &v[6], &v[7]);
	fclose(fp);
	if (n < 8)
		return 0;
	/* user nice system idle iowait irq softirq steal */
	return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}

static int xread(int fd, void *b, size_t n)
{
	return read(fd, b, n) == (ssize_t)n ? 0 : -1;
}

static int xwrite(int fd, const void *b, size_t n)
{
	return write(fd, b, n) == (ssize_t)n ? 0 : -1;
}

/* ---- the child: clients that pre-build their traffic, then replay it ----- */

enum { TX_SEND, TX_CAPTURE, TX_DISCARD };

struct cli {
	sio_session *s;
	int fd;
	struct sockaddr_in srv;
	uint8_t prefix[9];
	int mode;
	uint8_t *pkts; /* captured datagrams, STRIDE apart */
	uint16_t *len;
	size_t n, cap, next;
};

static ssize_t cli_send(void *ctx, const void *buf, size_t len)
{
	struct cli *c = ctx;
	if (len + sizeof(c->prefix) > STRIDE)
		return -EMSGSIZE;
	if (c->mode == TX_DISCARD)
		return (ssize_t)len;
	if (c->mode == TX_CAPTURE) {
		if (c->n == c->cap)
			return -EAGAIN;
		uint8_t *d = c->pkts + c->n * STRIDE;
		memcpy(d, c->prefix, sizeof(c->prefix));
		memcpy(d + sizeof(c->prefix), buf, len);
		c->len[c->n++] = (uint16_t)(len + sizeof(c->prefix));
		return (ssize_t)len;
	}
	uint8_t d[STRIDE];
	memcpy(d, c->prefix, sizeof(c->prefix));
	memcpy(d + sizeof(c->prefix), buf, len);
	ssize_t r = sendto(c->fd, d, len + sizeof(c->prefix), MSG_DONTWAIT, (struct sockaddr *)&c->srv,
			   sizeof(c->srv));
	return r < 0 ? -errno : (ssize_t)len;
}

static ssize_t cli_recv(void *ctx, void *buf, size_t len)
{
	struct cli *c = ctx;
	ssize_t r = recv(c->fd, buf, len, MSG_DONTWAIT);
	return r < 0 ? -errno : r;
}

static atomic_int stop_send;

struct sender {
	struct cli *cl;
	int n;
	uint64_t sent;
	atomic_int done;
};

static void *sender_thread(void *arg)
{
	struct sender *sd = arg;
	struct mmsghdr mm[4];
	struct iovec iov[4];
	size_t left = 1;
	while (left && !atomic_load_explicit(&stop_send, memory_order_relaxed)) {
		left = 0;
		for (int i = 0; i < sd->n; i++) {
			struct cli *c = &sd->cl[i];
			unsigned k = 0;
			while (k < 4 && c->next + k < c->n) {
				iov[k].iov_base = c->pkts + (c->next + k) * STRIDE;
				iov[k].iov_len = c->len[c->next + k];
				memset(&mm[k], 0, sizeof(mm[k]));
				mm[k].msg_hdr.msg_iov = &iov[k];
				mm[k].msg_hdr.msg_iovlen = 1;
				mm[k].msg_hdr.msg_name = &c->srv;
				mm[k].msg_hdr.msg_namelen = sizeof(c->srv);
				k++;
			}
			if (!k)
				continue;
			int r = sendmmsg(c->fd, mm, k, 0);
			if (r > 0) {
				c->next += (size_t)r;
				sd->sent += (uint64_t)r;
			}
			left += c->n - c->next;
		}
	}
	atomic_store(&sd->done, 1);
	return NULL;
}

static void child_main(int peers, size_t per_peer, int senders, int rfd, int wfd)
{
	struct sockaddr_in sa;
	uint8_t spk[32];
	if (xread(rfd, &sa, sizeof(sa)) || xread(rfd, spk, 32) || sio_init() != 0)
		_exit(1);
	sio_remote *srv = NULL;
	sio_identity *id = NULL;
	if (sio_remote_from_public_key(&srv, spk) != 0 || sio_identity_generate(&id) != 0)
		_exit(1);
	struct cli *cl = calloc((size_t)peers, sizeof(*cl));
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (!cl || ep < 0)
		_exit(1);
	sio_options o;
	memset(&o, 0, sizeof(o));
	o.kx_retry_ns = 200000000;
	o.send_delay_ns = -1; /* every message leaves at once: one per packet */
	o.keepalive_ns = -1;  /* nothing but the messages in the captured traffic */
	/* key exchanges: at most 128 in progress */
	int started = 0, est = 0;
	double deadline = now_s() + 300;
	while (est < peers && now_s() < deadline) {
		while (started < peers && started - est < 128) {
			struct cli *c = &cl[started++];
			c->fd = udp_loopback(NULL, UDP_SNDBUF, 4 << 20);
			c->srv = sa;
			c->prefix[0] = 0x20; /* docs/PROTOCOL.md, "Listener" */
			for (int k = 1; k < 9; k++)
				c->prefix[k] = (uint8_t)random();
			sio_transport t;
			memset(&t, 0, sizeof(t));
			t.kind = SIO_TRANSPORT_DATAGRAM;
			t.read_fd = t.write_fd = -1;
			t.poll_fd = c->fd;
			t.send = cli_send;
			t.recv = cli_recv;
			t.ctx = c;
			if (sio_session_new(&c->s, id, srv, &t, &o, NULL) != 0 ||
			    sio_session_start_loop(c->s) != 0)
				_exit(2);
			struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
			epoll_ctl(ep, EPOLL_CTL_ADD, sio_session_fd(c->s), &ev);
			sio_session_process(c->s);
		}
		struct epoll_event evs[256];
		int k = epoll_wait(ep, evs, 256, 5);
		for (int i = 0; i < k; i++)
			sio_session_process(((struct cli *)evs[i].data.ptr)->s);
		est = 0;
		for (int i = 0; i < started; i++) {
			if (sio_session_timeout_ms(cl[i].s) == 0)
				sio_session_process(cl[i].s);
			est += sio_session_state(cl[i].s) == SIO_STATE_ESTABLISHED;
		}
	}
	if (est < peers) {
		fprintf(stderr, "bench_lscale: %d of %d peers established\n", est, peers);
		_exit(3);
	}
	/* pre-build: every message sealed now, captured, not sent */
	uint8_t m[MSG];
	memset(m, 0x5a, sizeof(m));
	for (int i = 0; i < peers; i++) {
		struct cli *c = &cl[i];
		c->cap = per_peer + 64;
		c->pkts = malloc(c->cap * STRIDE);
		c->len = malloc(c->cap * sizeof(*c->len));
		if (!c->pkts || !c->len)
			_exit(4);
		c->mode = TX_CAPTURE;
		for (size_t w = 0; w < per_peer;) {
			int r = sio_write_message(c->s, TYPE, m, sizeof(m));
			if (r == 0)
				w++;
			else if (r != SIO_EAGAIN)
				_exit(5);
			if (r != 0 || w % 32 == 0)
				sio_session_process(c->s);
		}
		for (int k = 0; k < 100 && c->n < per_peer; k++)
			sio_session_process(c->s);
		c->mode = TX_DISCARD;
	}
	char b = 'R';
	if (xwrite(wfd, &b, 1) || xread(rfd, &b, 1) || b != 'G')
		_exit(6);
	/* replay: SENDERS threads, each round robin over its share of the
	 * peers, up to 4 datagrams per peer and call; stopped when the
	 * parent has its window (live), or when all is sent (drain: the
	 * parent writes nothing until then) */
	pthread_t th[16];
	struct sender sd[16];
	atomic_store(&stop_send, 0);
	double t0 = now_s();
	for (int k = 0; k < senders; k++) {
		sd[k].cl = cl + k * peers / senders;
		sd[k].n = (k + 1) * peers / senders - k * peers / senders;
		sd[k].sent = 0;
		pthread_create(&th[k], NULL, sender_thread, &sd[k]);
	}
	struct pollfd pf = {rfd, POLLIN, 0};
	int running = senders;
	while (running) {
		running = 0;
		for (int k = 0; k < senders; k++)
			running += !atomic_load(&sd[k].done);
		if (running && poll(&pf, 1, 5) == 1)
			atomic_store(&stop_send, 1);
	}
	uint64_t sent = 0;
	for (int k = 0; k < senders; k++) {
		pthread_join(th[k], NULL);
		sent += sd[k].sent;
	}
	double rate = (double)sent / (now_s() - t0);
	b = 'D';
	(void)xwrite(wfd, &b, 1);
	(void)xwrite(wfd, &rate, sizeof(rate));
	(void)xwrite(wfd, &sent, sizeof(sent));
	(void)xread(rfd, &b, 1);
	_exit(0);
}

/* ---- the parent: the listener and the program's handlers ------------------- */

/* Counters: one per peer, one per worker thread, each on its own cache line
 * (a line shared by peers of two workers would slow two workers, not one).
 * A worker thread takes the next free wstat at its first message. */
struct slot {
	_Alignas(64) atomic_uint_fast64_t msgs;
};
struct wstat {
	_Alignas(64) atomic_uint_fast64_t msgs;
	atomic_uint_fast64_t last_ns; /* CLOCK_MONOTONIC of its last delivery */
};
#define MAXW 256
static struct slot *slots;
static atomic_int nslots;
static int maxslots;
static struct wstat wst[MAXW];
static atomic_int nwst;
static _Thread_local struct wstat *my_wst;

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The drain's gate: while it is closed, a worker thread's first message
 * blocks its handler (so the worker reads nothing more) until it opens. */
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static atomic_int gate_closed;
static unsigned gate_gen; /* gate_mu */
static int gated;         /* gate_mu: workers waiting at the gate */
static _Thread_local unsigned my_gate;

static void gate_wait(void)
{
	pthread_mutex_lock(&gate_mu);
	if (atomic_load(&gate_closed) && my_gate != gate_gen) {
		my_gate = gate_gen;
		gated++;
		while (atomic_load(&gate_closed))
			pthread_cond_wait(&gate_cv, &gate_mu);
		gated--;
	}
	pthread_mutex_unlock(&gate_mu);
}

static void gate_close(void)
{
	pthread_mutex_lock(&gate_mu);
	gate_gen++;
	atomic_store(&gate_closed, 1);
	pthread_mutex_unlock(&gate_mu);
}

/* Returns how many workers were waiting. */
static int gate_open(void)
{
	pthread_mutex_lock(&gate_mu);
	int n = gated;
	atomic_store(&gate_closed, 0);
	pthread_cond_broadcast(&gate_cv);
	pthread_mutex_unlock(&gate_mu);
	return n;
}

static void on_msg(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	(void)s;
	(void)type;
	(void)d;
	(void)len;
	struct slot *sl = ctx;
	if (atomic_load_explicit(&gate_closed, memory_order_relaxed))
		gate_wait();
	struct wstat *w = my_wst;
	if (!w) {
		int k = atomic_fetch_add(&nwst, 1);
		w = my_wst = &wst[k < MAXW ? k : MAXW - 1];
	}
	atomic_fetch_add_explicit(&sl->msgs, 1, memory_order_relaxed);
	/* only this thread writes W */
	atomic_store_explicit(&w->msgs, atomic_load_explicit(&w->msgs, memory_order_relaxed) + 1,
			      memory_order_relaxed);
	atomic_store_explicit(&w->last_ns, now_ns(), memory_order_relaxed);
}

static void on_session(sio_listener *l, sio_session *s, void *ctx)
{
	(void)l;
	(void)ctx;
	int k = atomic_fetch_add(&nslots, 1);
	if (k < maxslots)
		sio_set_handler(s, TYPE, on_msg, NULL, &slots[k]);
}

static uint64_t wst_sum(void)
{
	uint64_t n = 0;
	int k = atomic_load(&nwst);
	for (int i = 0; i < k && i < MAXW; i++)
		n += atomic_load_explicit(&wst[i].msgs, memory_order_relaxed);
	return n;
}

/* The listener's sockets: every UDP socket bound to PORT in this network
 * namespace (the listener's reuseport group). Bytes queued in their receive
 * buffers and datagrams the kernel dropped on them (/proc/net/udp). */
static int port_stat(uint16_t port, uint64_t *queued, uint64_t *drops)
{
	FILE *fp = fopen("/proc/net/udp", "r");
	char line[512];
	int n = 0;
	*queued = *drops = 0;
	while (fp && fgets(line, sizeof(line), fp)) {
		unsigned lport;
		unsigned long rxq, dr;
		if (sscanf(line, " %*d: %*x:%x %*s %*x %*x:%lx %*s %*s %*u %*u %*u %*d %*s %lu", &lport, &rxq,
			   &dr) != 3 ||
		    lport != port)
			continue;
		*queued += rxq;
		*drops += dr;
		n++;
	}
	if (fp)
		fclose(fp);
	return n;
}

/* What a queued 1309-byte datagram costs a socket's receive buffer on
 * loopback (its skb's truesize), as the drain lines print it measured:
 * used to size the buffer, and the run when the buffer cannot grow. */
#define DGRAM_COST 2304

struct result {
	double mps, mbps, window, cpu, fair, offered, machine;
	uint64_t min, max, delivered, drop_queue, handoffs, workers;
	/* drain only */
	uint64_t sent, kdrops, lost, queued_bytes, wmsgs[MAXW];
	double wtime[MAXW];
	int nw, gated, forced;
	long rcvbuf;
};

static sio_identity *srv_id;
static FILE *perf_ctl;

static void perf_say(const char *what)
{
	if (perf_ctl) {
		fprintf(perf_ctl, "%s\n", what);
		fflush(perf_ctl);
	}
}

/* One run: PEERS clients, a listener with WORKERS workers; DRAIN picks the
 * measurement (see the top of the file). */
static int run(int peers, int workers, int senders, size_t total, int drain, struct result *res)
{
	int p2c[2], c2p[2];
	memset(res, 0, sizeof(*res));
	struct sockaddr_in sa;
	int sfd = udp_loopback(&sa, UDP_REUSEPORT | UDP_SNDBUF, 4 << 20);
	if (sfd < 0)
		return -1;
	if (drain) {
		/* room for every datagram of the run in one socket (the one
		 * of a single worker), with a margin; the worker sockets get
		 * the same (sibling() in src/listener/worker.c) */
		uint64_t want = (uint64_t)total * DGRAM_COST * 3 / 2;
		int v = want > (1u << 30) ? (1 << 30) : (int)want, got = 0;
		socklen_t gl = sizeof(got);
		res->forced = setsockopt(sfd, SOL_SOCKET, SO_RCVBUFFORCE, &v, sizeof(v)) == 0;
		if (!res->forced)
			(void)setsockopt(sfd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
		getsockopt(sfd, SOL_SOCKET, SO_RCVBUF, &got, &gl);
		res->rcvbuf = got;
		size_t fit = (size_t)got / DGRAM_COST * 9 / 10;
		if (fit < total) {
			printf("lscale peers %d workers %d drain: %s gives %d bytes: about %zu datagrams fit, "
			       "the drain sends that many, not %zu\n",
			       peers, workers, res->forced ? "SO_RCVBUFFORCE" : "SO_RCVBUFFORCE refused, SO_RCVBUF",
			       got, fit, total);
			total = fit;
		}
	}
	if (pipe(p2c) || pipe(c2p)) {
		close(sfd);
		return -1;
	}
	size_t per_peer = total / (size_t)peers;
	if (per_peer < 16)
		per_peer = 16;
	fflush(stdout);
	if (perf_ctl)
		fflush(perf_ctl);
	pid_t pid = fork();
	if (pid == 0) {
		close(p2c[1]);
		close(c2p[0]);
		close(sfd);
		/* a drain's datagrams are sent before its window, by one
		 * thread: each socket's queue then holds the peers in strict
		 * round robin (two threads racing would queue one thread's
		 * peers ahead of the other's, and the half-drain fairness
		 * would measure that race, not the workers) */
		child_main(peers, per_peer, drain ? 1 : senders, p2c[0], c2p[1]);
	}
	close(p2c[0]);
	close(c2p[1]);
	maxslots = 2 * peers + 64;
	slots = aligned_alloc(64, (size_t)maxslots * sizeof(*slots));
	if (slots)
		memset(slots, 0, (size_t)maxslots * sizeof(*slots));
	atomic_store(&nslots, 0);
	memset(wst, 0, sizeof(wst));
	atomic_store(&nwst, 0);
	sio_listener_options lo;
	memset(&lo, 0, sizeof(lo));
	lo.workers = workers;
	lo.close_fd = 1;
	lo.cookie_threshold = -1; /* the custom transport does not take cookies */
	lo.on_session = on_session;
	lo.max_memory = (uint64_t)peers * (8u << 20);
	sio_listener *l = NULL;
	int rc = -1;
	uint64_t *a = calloc((size_t)peers, sizeof(uint64_t));
	uint64_t *h = calloc((size_t)peers, sizeof(uint64_t));
	sio_session **acc = calloc((size_t)peers, sizeof(*acc));
	if (!slots || !acc || !a || !h || sio_listener_new(&l, srv_id, sfd, NULL, &lo) != 0) {
		close(sfd);
		goto out;
	}
	if (sio_listener_start(l) != 0)
		goto out;
	uint8_t pk[32];
	sio_identity_public_key(srv_id, pk);
	if (xwrite(p2c[1], &sa, sizeof(sa)) || xwrite(p2c[1], pk, 32))
		goto out;
	int nacc = 0;
	double deadline = now_s() + 300;
	while (nacc < peers && now_s() < deadline)
		if (sio_listener_accept(l, &acc[nacc], 200) == 0)
			nacc++;
	char b;
	if (nacc < peers || xread(c2p[0], &b, 1) || b != 'R') {
		fprintf(stderr, "bench_lscale: %d of %d peers accepted\n", nacc, peers);
		goto out;
	}
	uint16_t port = ntohs(sa.sin_port);
	uint64_t q0, dr0;
	port_stat(port, &q0, &dr0);
	if (drain)
		gate_close();
	b = 'G';
	if (xwrite(p2c[1], &b, 1))
		goto out;
	struct pollfd pf = {c2p[0], POLLIN, 0};
	int n = atomic_load(&nslots);
	if (n > peers)
		n = peers;
	uint64_t sum = 0, mn = UINT64_MAX, mx = 0;
	if (!drain) {
		/* live: warm-up 0.2 s, then the window: until the child has
		 * sent everything (at most 10 s) */
		if (poll(&pf, 1, 200) != 0) {
			fprintf(stderr, "bench_lscale: too few packets for a window (-n)\n");
			goto out;
		}
		double ta = now_s(), ca = cpu_s();
		for (int i = 0; i < n; i++)
			a[i] = atomic_load(&slots[i].msgs);
		(void)poll(&pf, 1, 10000);
		double tb = now_s(), cb = cpu_s();
		for (int i = 0; i < n; i++) {
			uint64_t d = atomic_load(&slots[i].msgs) - a[i];
			sum += d;
			mn = d < mn ? d : mn;
			mx = d > mx ? d : mx;
		}
		b = 'S';
		(void)xwrite(p2c[1], &b, 1);
		if (xread(c2p[0], &b, 1) == 0 && b == 'D')
			(void)xread(c2p[0], &res->offered, sizeof(res->offered));
		res->window = tb - ta;
		res->cpu = (cb - ca) / res->window;
	} else {
		/* drain: the child sends everything, the queues fill */
		if (poll(&pf, 1, 120000) != 1 || xread(c2p[0], &b, 1) || b != 'D' ||
		    xread(c2p[0], &res->offered, sizeof(res->offered)) ||
		    xread(c2p[0], &res->sent, sizeof(res->sent))) {
			fprintf(stderr, "bench_lscale: the clients did not finish sending\n");
			gate_open();
			goto out;
		}
		/* until the kernel has queued it all (loopback may finish the
		 * enqueue in a softirq after sendmmsg returned) */
		uint64_t q = 0, dr = 0, lastq = UINT64_MAX;
		for (int i = 0, still = 0; i < 500 && still < 3; i++) {
			port_stat(port, &q, &dr);
			still = q == lastq ? still + 1 : 0;
			lastq = q;
			usleep(10000);
		}
		res->queued_bytes = q;
		res->kdrops = dr - dr0;
		for (int i = 0; i < n; i++)
			a[i] = atomic_load(&slots[i].msgs);
		uint64_t w0[MAXW] = {0};
		for (int i = 0; i < MAXW; i++)
			w0[i] = atomic_load(&wst[i].msgs);
		uint64_t expect = res->sent - res->kdrops;
		uint64_t before = wst_sum(), half = before + (expect > before ? (expect - before) / 2 : 0);
		double ca = cpu_s(), ma = machine_busy_s();
		uint64_t t0 = now_ns();
		perf_say("enable");
		res->gated = gate_open();
		/* until everything the kernel kept is delivered, or nothing
		 * moved for a second (something was lost: reported) */
		uint64_t last = before, tprog = t0, tend;
		int halfway = 0;
		for (;;) {
			uint64_t got = wst_sum(), t = now_ns();
			if (!halfway && got >= half) {
				for (int i = 0; i < n; i++)
					h[i] = atomic_load(&slots[i].msgs) - a[i];
				halfway = 1;
			}
			if (got >= expect)
				break;
			if (got != last) {
				last = got;
				tprog = t;
			} else if (t - tprog > 1000000000ull) {
				break;
			}
			struct timespec ms = {0, 1000000};
			nanosleep(&ms, NULL);
		}
		tend = now_ns();
		double cb = cpu_s(), mb = machine_busy_s();
		perf_say("disable");
		uint64_t tlast = t0;
		res->nw = atomic_load(&nwst);
		for (int i = 0; i < res->nw && i < MAXW; i++) {
			uint64_t ti = atomic_load(&wst[i].last_ns);
			res->wmsgs[i] = atomic_load(&wst[i].msgs) - w0[i];
			res->wtime[i] = res->wmsgs[i] && ti > t0 ? (double)(ti - t0) / 1e9 : 0;
			tlast = ti > tlast ? ti : tlast;
		}
		uint64_t got = wst_sum();
		res->lost = expect > got ? expect - got : 0;
		sum = got - before;
		res->window = (double)(tlast - t0) / 1e9;
		res->cpu = (cb - ca) / ((double)(tend - t0) / 1e9);
		res->machine = (mb - ma) / ((double)(tend - t0) / 1e9);
		for (int i = 0; i < n; i++) {
			uint64_t d = halfway ? h[i] : atomic_load(&slots[i].msgs) - a[i];
			mn = d < mn ? d : mn;
			mx = d > mx ? d : mx;
		}
		b = 'S';
		(void)xwrite(p2c[1], &b, 1);
	}
	sio_listener_stats st;
	sio_listener_stats_get(l, &st);
	res->delivered = sum;
	res->mps = res->window > 0 ? (double)sum / res->window : 0;
	res->mbps = res->mps * MSG / 1e6;
	res->min = mn;
	res->max = mx;
	res->fair = mn ? (double)mx / (double)mn : 0;
	res->drop_queue = st.drop_queue;
	res->handoffs = st.handoffs;
	res->workers = st.workers;
	rc = 0;
out:
	if (rc && atomic_load(&gate_closed))
		gate_open();
	close(p2c[1]);
	close(c2p[0]);
	if (rc)
		kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	for (int i = 0; acc && i < peers; i++)
		sio_session_free(acc[i]);
	free(acc);
	sio_listener_free(l);
	free(slots);
	free(a);
	free(h);
	slots = NULL;
	return rc;
}

static int parse_list(const char *s, int *out, int max)
{
	int n = 0;
	while (*s && n < max) {
		out[n++] = atoi(s);
		const char *c = strchr(s, ',');
		if (!c)
			break;
		s = c + 1;
	}
	return n;
}

static void print_live(int peers, int workers, const struct result *r)
{
	printf("lscale peers %d workers %d live: %.0f msg/s %.1f MB/s delivered (window %.2f s, "
	       "%llu msgs; offered %.0f datagrams/s%s), listener CPU %.2f cores, per peer "
	       "min %llu max %llu (x%.2f; 0: starved), drop_queue %llu, workers %llu, handoffs %llu\n",
	       peers, workers, r->mps, r->mbps, r->window, (unsigned long long)r->delivered, r->offered,
	       r->mps >= 0.9 * r->offered ? ": sender-bound" : "", r->cpu, (unsigned long long)r->min,
	       (unsigned long long)r->max, r->fair, (unsigned long long)r->drop_queue,
	       (unsigned long long)r->workers, (unsigned long long)r->handoffs);
}

static void print_drain(int peers, int workers, const struct result *r)
{
	uint64_t inq = r->sent - r->kdrops - r->lost;
	printf("lscale peers %d workers %d drain: %llu datagrams sent (offered %.0f/s), %llu dropped by "
	       "the kernel, %.0f bytes per queued datagram, rcvbuf %ld (%s); delivered %llu in %.3f s "
	       "from gate open: %.0f msg/s %.1f MB/s, listener CPU %.2f cores (others %.2f), %.0f msg per "
	       "listener CPU-second; per worker",
	       peers, workers, (unsigned long long)r->sent, r->offered, (unsigned long long)r->kdrops,
	       inq ? (double)r->queued_bytes / (double)inq : 0, r->rcvbuf,
	       r->forced ? "SO_RCVBUFFORCE" : "SO_RCVBUF", (unsigned long long)r->delivered, r->window,
	       r->mps, r->mbps, r->cpu, r->machine > r->cpu ? r->machine - r->cpu : 0,
	       r->cpu > 0 ? r->mps / r->cpu : 0);
	for (int i = 0; i < r->nw && i < MAXW; i++)
		printf(" %llu in %.3f s", (unsigned long long)r->wmsgs[i], r->wtime[i]);
	printf("; per peer at half drain min %llu max %llu (x%.2f; 0: starved); gated %d, lost %llu, "
	       "drop_queue %llu, workers %llu, handoffs %llu\n",
	       (unsigned long long)r->min, (unsigned long long)r->max, r->fair, r->gated,
	       (unsigned long long)r->lost, (unsigned long long)r->drop_queue,
	       (unsigned long long)r->workers, (unsigned long long)r->handoffs);
}

/* Other work below this many cores leaves a round "quiet". */
#define QUIET 0.15

static double median(double *v, int n)
{
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
			double t = v[j];
			v[j] = v[j - 1];
			v[j - 1] = t;
		}
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The worst fairness of runs R[0..N) (0: some peer starved). */
static double worst_fair(const struct result *r, int n)
{
	double worst = 0;
	for (int w = 0; w < n; w++)
		worst = r[w].fair > worst || r[w].fair == 0 ? r[w].fair : worst;
	return worst;
}

int main(int argc, char **argv)
{
	int ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
	int peers[8] = {100, 1000}, np = 2;
	int workers[8] = {1, ncpu > 1 ? ncpu : 2}, nw = 2;
	int do_live = 1, do_drain = 1, reps = 3;
	size_t total = 300000;
	int senders = ncpu > 1 ? ncpu : 1, opt;
	while ((opt = getopt(argc, argv, "qm:r:p:w:n:s:c:")) != -1) {
		switch (opt) {
		case 'q':
			total = 100000;
			break;
		case 'm':
			do_live = strstr(optarg, "live") != NULL;
			do_drain = strstr(optarg, "drain") != NULL;
			break;
		case 'r':
			reps = atoi(optarg) < 1 ? 1 : atoi(optarg) > 8 ? 8 : atoi(optarg);
			break;
		case 'p':
			np = parse_list(optarg, peers, 8);
			break;
		case 'w':
			nw = parse_list(optarg, workers, 8);
			break;
		case 's':
			senders = atoi(optarg) < 1 ? 1 : atoi(optarg) > 16 ? 16 : atoi(optarg);
			break;
		case 'n':
			total = (size_t)strtoull(optarg, NULL, 10);
			break;
		case 'c':
			perf_ctl = fopen(optarg, "w");
			if (!perf_ctl) {
				perror(optarg);
				return 2;
			}
			break;
		default:
			fprintf(stderr, "usage: bench_lscale [-q] [-m live,drain] [-r ROUNDS] [-p PEERS,...] [-w WORKERS,...] "
					"[-s SENDERS] [-n PACKETS] [-c PERF_CONTROL_FIFO]\n");
			return 2;
		}
	}
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	signal(SIGPIPE, SIG_IGN);
	if (sio_init() != 0 || sio_identity_generate(&srv_id) != 0)
		return 1;
	printf("bench_lscale: %d online cores, %zu datagrams of one %d-byte message pre-built per run, "
	       "%d sending threads live, 1 before a drain\n",
	       ncpu, total, MSG, senders);
	int fails = 0;
	static struct result live[8], dr[8][8];
	for (int p = 0; p < np; p++) {
		int live_ok = do_live, drain_ok = do_drain;
		for (int w = 0; do_live && w < nw; w++) {
			if (run(peers[p], workers[w], senders, total, 0, &live[w]) != 0) {
				printf("lscale peers %d workers %d live: FAILED\n", peers[p], workers[w]);
				fails++;
				live_ok = 0;
				continue;
			}
			print_live(peers[p], workers[w], &live[w]);
			fflush(stdout);
		}
		/* drains: REPS rounds, each worker count once per round, so
		 * a burst of other load on the machine hits one round, not
		 * one worker count */
		for (int k = 0; do_drain && k < reps; k++)
			for (int w = 0; w < nw; w++) {
				if (run(peers[p], workers[w], senders, total, 1, &dr[k][w]) != 0) {
					printf("lscale peers %d workers %d drain: FAILED\n", peers[p], workers[w]);
					fails++;
					drain_ok = 0;
					continue;
				}
				print_drain(peers[p], workers[w], &dr[k][w]);
				/* a drain delivers every datagram the kernel kept */
				fails += dr[k][w].lost > 0;
				fflush(stdout);
			}
		if (nw >= 2 && live_ok && live[0].mps > 0) {
			int sb = 0;
			for (int w = 0; w < nw; w++)
				sb |= live[w].mps >= 0.9 * live[w].offered;
			printf("lscale peers %d live: workers %d / workers %d = %.2fx, fairness max/min %.2f "
			       "(%s)\n",
			       peers[p], workers[nw - 1], workers[0], live[nw - 1].mps / live[0].mps,
			       worst_fair(live, nw),
			       sb ? "sender-bound: the senders' limit on this machine, not compared with the target"
				  : "senders and listener share the cores: not compared with the target");
		}
		if (nw >= 2 && drain_ok) {
			double m[8], e[8], lo = 1e9, hi = 0, worst = 0;
			for (int w = 0; w < nw; w++) {
				double v[8], c[8];
				for (int k = 0; k < reps; k++) {
					v[k] = dr[k][w].mps;
					c[k] = dr[k][w].cpu > 0 ? dr[k][w].mps / dr[k][w].cpu : 0;
					double f = worst_fair(&dr[k][w], 1);
					worst = f > worst || f == 0 ? f : worst;
				}
				m[w] = median(v, reps);
				e[w] = median(c, reps);
			}
			for (int k = 0; k < reps; k++) {
				double x = dr[k][0].mps > 0 ? dr[k][nw - 1].mps / dr[k][0].mps : 0;
				lo = x < lo ? x : lo;
				hi = x > hi ? x : hi;
			}
			if (m[0] > 0 && e[0] > 0)
				printf("lscale peers %d drain: workers %d / workers %d = %.2fx (medians of %d rounds: "
				       "%.0f / %.0f msg/s; rounds %.2f-%.2fx) (target >= 1.6x), fairness max/min at "
				       "half drain %.2f (target <= 2): the figure compared with the targets (senders "
				       "out of the window, the cores are the listener's); per listener CPU-second "
				       "%.0f / %.0f msg = %.2f (1.00: no cost to spreading)\n",
				       peers[p], workers[nw - 1], workers[0], m[nw - 1] / m[0], reps, m[nw - 1], m[0],
				       lo, hi, worst, e[nw - 1], e[0], e[nw - 1] / e[0]);
			/* the runs in which other work took (almost) nothing,
			 * each worker count's apart: on a shared machine few
			 * rounds are quiet in both of their runs */
			double q[8];
			int nq[8], allq = 1;
			for (int w = 0; w < nw; w++) {
				double v[8];
				nq[w] = 0;
				for (int k = 0; k < reps; k++)
					if (dr[k][w].machine - dr[k][w].cpu <= QUIET)
						v[nq[w]++] = dr[k][w].mps;
				q[w] = nq[w] ? median(v, nq[w]) : 0;
				allq &= nq[w] > 0;
			}
			if (allq && q[0] > 0)
				printf("lscale peers %d drain, quiet runs only (others <= %.2f cores): workers %d / "
				       "workers %d = %.2fx (medians of %d and %d runs of %d: %.0f / %.0f msg/s)\n",
				       peers[p], QUIET, workers[nw - 1], workers[0], q[nw - 1] / q[0], nq[nw - 1], nq[0],
				       reps, q[nw - 1], q[0]);
			else
				printf("lscale peers %d drain: too few quiet runs (others <= %.2f cores) to compare\n",
				       peers[p], QUIET);
		}
		fflush(stdout);
	}
	sio_identity_free(srv_id);
	if (perf_ctl)
		fclose(perf_ctl);
	return fails ? 1 : 0;
}
