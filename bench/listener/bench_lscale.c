/* Traffic spread over cores (issue #17): aggregate throughput a listener
 * delivers to the program with lo.workers = 1 and with lo.workers = the
 * number of online cores, measured in the same run, for 100 and 1000
 * active peers sending 1300-byte messages; the ratio, and fairness (the
 * busiest and the least served peer's delivered counts).
 *
 * Clients must cost the machine little, or they take the cores the
 * listener should scale on. A child process runs them: each client does a
 * real key exchange over its own UDP socket (a custom transport that adds
 * the listener's connection-id prefix itself), then, before the measured
 * window, writes all its messages while the transport captures the sealed
 * datagrams instead of sending them. In the window the child only replays
 * those datagrams with sendmmsg, round robin over the peers (each sent
 * once, so the sessions' replay protection takes them; no flow control in
 * the protocol waits for acknowledgements). The parent process is the
 * listener: its handlers count messages and bytes per peer; its CPU time
 * is measured apart from the child's. See docs/BENCHMARKS.md.
 *
 *   bench_lscale [-q] [-p PEERS,...] [-w WORKERS,...] [-s SENDERS] [-n PACKETS]
 *     -q  quick: 100000 packets per run
 *     -p  peer counts (default 100,1000)
 *     -w  worker counts (default 1,<online cores>)
 *     -s  sending threads in the client process (default: online cores)
 *     -n  datagrams pre-built per run (default 300000, about 440 MB)
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

static int udp_bound(struct sockaddr_in *addr, int reuse)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int one = 1, big = 4 << 20;
	if (fd < 0)
		return -1;
	if (reuse)
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	struct sockaddr_in a;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		close(fd);
		return -1;
	}
	socklen_t l = sizeof(a);
	getsockname(fd, (struct sockaddr *)&a, &l);
	if (addr)
		*addr = a;
	return fd;
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
			c->fd = udp_bound(NULL, 0);
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
	 * parent has its window */
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
	(void)xread(rfd, &b, 1);
	_exit(0);
}

/* ---- the parent: the listener and the program's handlers ------------------- */

struct slot {
	atomic_uint_fast64_t msgs, bytes;
};
static struct slot *slots;
static atomic_int nslots;
static int maxslots;

static void on_msg(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	(void)s;
	(void)type;
	(void)d;
	struct slot *sl = ctx;
	atomic_fetch_add_explicit(&sl->msgs, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&sl->bytes, len, memory_order_relaxed);
}

static void on_session(sio_listener *l, sio_session *s, void *ctx)
{
	(void)l;
	(void)ctx;
	int k = atomic_fetch_add(&nslots, 1);
	if (k < maxslots)
		sio_set_handler(s, TYPE, on_msg, NULL, &slots[k]);
}

struct result {
	double mps, mbps, window, cpu, fair, offered;
	uint64_t min, max, delivered, drop_queue, handoffs, workers;
};

static sio_identity *srv_id;

static int run(int peers, int workers, int senders, size_t total, struct result *res)
{
	int p2c[2], c2p[2];
	if (pipe(p2c) || pipe(c2p))
		return -1;
	size_t per_peer = total / (size_t)peers;
	if (per_peer < 16)
		per_peer = 16;
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		close(p2c[1]);
		close(c2p[0]);
		child_main(peers, per_peer, senders, p2c[0], c2p[1]);
	}
	close(p2c[0]);
	close(c2p[1]);
	maxslots = 2 * peers + 64;
	slots = calloc((size_t)maxslots, sizeof(*slots));
	atomic_store(&nslots, 0);
	struct sockaddr_in sa;
	int sfd = udp_bound(&sa, 1);
	sio_listener_options lo;
	memset(&lo, 0, sizeof(lo));
	lo.workers = workers;
	lo.close_fd = 1;
	lo.cookie_threshold = -1; /* the custom transport does not take cookies */
	lo.on_session = on_session;
	lo.max_memory = (uint64_t)peers * (8u << 20);
	sio_listener *l = NULL;
	int rc = -1;
	sio_session **acc = calloc((size_t)peers, sizeof(*acc));
	if (!slots || !acc || sfd < 0 || sio_listener_new(&l, srv_id, sfd, NULL, &lo) != 0 ||
	    sio_listener_start(l) != 0)
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
	b = 'G';
	if (xwrite(p2c[1], &b, 1))
		goto out;
	/* warm-up 0.2 s, then the window: until the child has sent
	 * everything (at most 10 s) */
	struct pollfd pf = {c2p[0], POLLIN, 0};
	if (poll(&pf, 1, 200) != 0) {
		fprintf(stderr, "bench_lscale: too few packets for a window (-n)\n");
		goto out;
	}
	uint64_t *a = calloc((size_t)peers, sizeof(uint64_t));
	double ta = now_s(), ca = cpu_s();
	for (int i = 0; i < peers && i < atomic_load(&nslots); i++)
		a[i] = atomic_load(&slots[i].msgs);
	(void)poll(&pf, 1, 10000);
	double tb = now_s(), cb = cpu_s();
	uint64_t sum = 0, mn = UINT64_MAX, mx = 0;
	int n = atomic_load(&nslots);
	for (int i = 0; i < peers && i < n; i++) {
		uint64_t d = atomic_load(&slots[i].msgs) - a[i];
		sum += d;
		mn = d < mn ? d : mn;
		mx = d > mx ? d : mx;
	}
	free(a);
	b = 'S';
	(void)xwrite(p2c[1], &b, 1);
	res->offered = 0;
	if (xread(c2p[0], &b, 1) == 0 && b == 'D')
		(void)xread(c2p[0], &res->offered, sizeof(res->offered));
	sio_listener_stats st;
	sio_listener_stats_get(l, &st);
	res->window = tb - ta;
	res->delivered = sum;
	res->mps = (double)sum / res->window;
	res->mbps = res->mps * MSG / 1e6;
	res->cpu = (cb - ca) / res->window;
	res->min = mn;
	res->max = mx;
	res->fair = mn ? (double)mx / (double)mn : 0;
	res->drop_queue = st.drop_queue;
	res->handoffs = st.handoffs;
	res->workers = st.workers;
	rc = 0;
out:
	close(p2c[1]);
	close(c2p[0]);
	if (rc)
		kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	for (int i = 0; i < peers; i++)
		sio_session_free(acc[i]);
	free(acc);
	sio_listener_free(l);
	free(slots);
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

int main(int argc, char **argv)
{
	int ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
	int peers[8] = {100, 1000}, np = 2;
	int workers[8] = {1, ncpu > 1 ? ncpu : 2}, nw = 2;
	size_t total = 300000;
	int senders = ncpu > 1 ? ncpu : 1, opt;
	while ((opt = getopt(argc, argv, "qp:w:n:s:")) != -1) {
		switch (opt) {
		case 'q':
			total = 100000;
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
		default:
			fprintf(stderr, "usage: bench_lscale [-q] [-p PEERS,...] [-w WORKERS,...] [-s SENDERS] [-n PACKETS]\n");
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
	       "%d sending threads\n",
	       ncpu, total, MSG, senders);
	int fails = 0;
	for (int p = 0; p < np; p++) {
		struct result r[8];
		memset(r, 0, sizeof(r));
		for (int w = 0; w < nw; w++) {
			if (run(peers[p], workers[w], senders, total, &r[w]) != 0) {
				printf("lscale peers %d workers %d: FAILED\n", peers[p], workers[w]);
				fails++;
				continue;
			}
			printf("lscale peers %d workers %d: %.0f msg/s %.1f MB/s delivered (window %.2f s, "
			       "%llu msgs; offered %.0f datagrams/s%s), listener CPU %.2f cores, per peer "
			       "min %llu max %llu (x%.2f; 0: starved), drop_queue %llu, workers %llu, handoffs %llu\n",
			       peers[p], workers[w], r[w].mps, r[w].mbps, r[w].window,
			       (unsigned long long)r[w].delivered, r[w].offered,
			       r[w].mps >= 0.9 * r[w].offered ? ": sender-bound" : "",
			       r[w].cpu, (unsigned long long)r[w].min,
			       (unsigned long long)r[w].max, r[w].fair, (unsigned long long)r[w].drop_queue,
			       (unsigned long long)r[w].workers, (unsigned long long)r[w].handoffs);
			fflush(stdout);
		}
		if (nw >= 2 && r[0].mps > 0 && r[nw - 1].mps > 0) {
			double worst = 0;
			for (int w = 0; w < nw; w++)
				worst = r[w].fair > worst || r[w].fair == 0 ? r[w].fair : worst;
			/* 0: some peer got nothing in a window (starved) */
			printf("lscale peers %d: workers %d / workers %d = %.2fx (target >= 1.6x), "
			       "fairness max/min %.2f (target <= 2)\n",
			       peers[p], workers[nw - 1], workers[0], r[nw - 1].mps / r[0].mps, worst);
		}
	}
	sio_identity_free(srv_id);
	return fails ? 1 : 0;
}
