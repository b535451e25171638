/* Memory per idle listener session and the time to establish them
 * (docs/BENCHMARKS.md, "Listener at scale").
 *
 * This process runs one sio_listener on 127.0.0.1 (blocking style with its
 * worker pool by default, event-loop style with --loop) and accepts N peers.
 * The peers are real client sessions in child processes, at most --per-proc
 * of them in each (so that every child stays well inside its descriptor
 * limit and vm.max_map_count), each peer with its own identity and its own
 * UDP socket. At most --parallel children establish at once; a child that has
 * established all its sessions keeps them (idle: no keepalives, no renewal
 * within the run) and the next child starts. A first small child calibrates:
 * from what its peers cost the listener (descriptors, mappings, threads,
 * resident memory) and itself, N is lowered to what the limits and the free
 * memory allow, and the line says which limit capped it.
 *
 * Figures: listener resident memory after minus before (before: listener
 * started, no peer), divided by N; time from the first child's start to the
 * Nth session accepted, and this process's CPU time meanwhile (wall time
 * follows the machine's load, CPU time much less); the listener's own
 * budget (sio_listener_stats.memory); then again after 2.5 s of idling
 * (sessions return their handshake's buffers after 1 s of quiet), after
 * malloc_trim (what the allocator kept for reuse), and the heap in use.
 *
 *   bench_listener [options] [N]     (default N 10000)
 *     --loop            event-loop style (sio_listener_start_loop)
 *     --workers K       lo.workers (default 0: one per core)
 *     --per-proc M      client sessions per child process (default 5000)
 *     --parallel P      children establishing at once (default: online cores)
 *     --window W        handshakes in flight per child (default 64)
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <secureio.h>

#include "lib/lclient.h" /* tests/lib: loopback UDP sockets, listener clients */

#define CALIBRATION 500 /* peers of the first, lone child */

/* ---- small helpers -------------------------------------------------------- */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long rss_kib_of(const char *statm)
{
	FILE *f = fopen(statm, "r");
	long pages = 0, res = 0;
	if (f) {
		if (fscanf(f, "%ld %ld", &pages, &res) != 2)
			res = 0;
		fclose(f);
	}
	return res * (sysconf(_SC_PAGESIZE) / 1024);
}

static long rss_kib(void)
{
	return rss_kib_of("/proc/self/statm");
}

static long count_lines(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	long n = 0;
	int c;
	while ((c = getc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

static long count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	long n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n - 1; /* the directory's own descriptor */
}

/* "Threads:" of /proc/self/status. */
static long count_threads(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	if (!f)
		return -1;
	char line[256];
	long n = -1;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "Threads: %ld", &n) == 1)
			break;
	fclose(f);
	return n;
}

static long read_long(const char *path)
{
	FILE *f = fopen(path, "r");
	long v = -1;
	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

/* Tasks of the whole system (4th field of /proc/loadavg: running/total). */
static long system_tasks(void)
{
	FILE *f = fopen("/proc/loadavg", "r");
	double a, b, c;
	long run = 0, total = -1;
	if (f) {
		if (fscanf(f, "%lf %lf %lf %ld/%ld", &a, &b, &c, &run, &total) != 5)
			total = -1;
		fclose(f);
	}
	return total;
}

static long mem_available_kib(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	if (!f)
		return -1;
	char line[256];
	long v = -1;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "MemAvailable: %ld kB", &v) == 1)
			break;
	fclose(f);
	return v;
}

/* Raises RLIMIT_NOFILE to WANT (at most fs.nr_open): the hard limit too when
 * the process may (CAP_SYS_RESOURCE), else the soft one up to the hard.
 * Returns the soft limit in force. */
static rlim_t raise_nofile(rlim_t want)
{
	long nr_open = read_long("/proc/sys/fs/nr_open");
	if (nr_open > 0 && want > (rlim_t)nr_open)
		want = (rlim_t)nr_open;
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < want) {
		struct rlimit up = {want, rl.rlim_max > want ? rl.rlim_max : want};
		if (setrlimit(RLIMIT_NOFILE, &up) != 0) {
			rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
			setrlimit(RLIMIT_NOFILE, &rl);
		}
	}
	getrlimit(RLIMIT_NOFILE, &rl);
	return rl.rlim_cur;
}

/* Drives event-loop sessions registered in an epoll set: the ones whose
 * descriptor is ready, and every second the ones whose timer is due. */
struct driver {
	int ep;
	sio_session **s;
	size_t n, cap;
	double last_sweep;
};

static int driver_init(struct driver *d)
{
	memset(d, 0, sizeof *d);
	d->ep = epoll_create1(EPOLL_CLOEXEC);
	return d->ep < 0 ? -1 : 0;
}

/* Adds S (index in d->s); a session without a descriptor of its own (the
 * listener's peers on a design where they have none) is only swept. */
static int driver_add(struct driver *d, sio_session *s)
{
	if (d->n == d->cap) {
		size_t nc = d->cap ? d->cap * 2 : 1024;
		sio_session **ns = realloc(d->s, nc * sizeof(*ns));
		if (!ns)
			return -1;
		d->s = ns;
		d->cap = nc;
	}
	d->s[d->n] = s;
	int fd = sio_session_fd(s);
	if (fd >= 0) {
		struct epoll_event ev = {.events = EPOLLIN, .data.u64 = d->n};
		(void)epoll_ctl(d->ep, EPOLL_CTL_ADD, fd, &ev); /* EEXIST: shared, swept */
	}
	d->n++;
	return 0;
}

static void driver_run(struct driver *d, int timeout_ms)
{
	struct epoll_event ev[256];
	int k = epoll_wait(d->ep, ev, 256, timeout_ms);
	for (int i = 0; i < k; i++)
		if (ev[i].data.u64 < d->n)
			sio_session_process(d->s[ev[i].data.u64]);
	double t = now_s();
	if (t - d->last_sweep >= 1.0) {
		d->last_sweep = t;
		for (size_t i = 0; i < d->n; i++)
			if (sio_session_timeout_ms(d->s[i]) == 0)
				sio_session_process(d->s[i]);
	}
}

/* ---- the client processes ------------------------------------------------- */

struct report {
	int established, failed;
	long rss_kib; /* the child's resident memory once done */
	long fds, maps; /* its descriptors and mappings then */
	double seconds;
};

/* Child IDX: COUNT client sessions to SRV, WINDOW key exchanges in flight.
 * Reports on REPORT_FD once all are established (or failed), then keeps them
 * until CONTROL_FD ends (the parent closed it, or died). */
static void client_proc(int idx, int count, int window, const struct sockaddr_in *srv,
			const uint8_t srv_pk[32], int report_fd, int control_fd)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	raise_nofile((rlim_t)count * 6 + 256);
	double t0 = now_s();
	/* Each child binds its own loopback address: one address has fewer
	 * ephemeral ports (~28000) than the run has peers. */
	uint32_t addr = (127u << 24) | (1u << 16) | ((uint32_t)(idx / 250) << 8) | (uint32_t)(1 + idx % 250);
	sio_remote *r;
	if (sio_remote_from_public_key(&r, srv_pk) != 0)
		_exit(2);
	sio_options o;
	memset(&o, 0, sizeof(o));
	o.listener_peer = 1;
	o.keepalive_ns = -1;
	o.dead_peer_ns = -1;
	o.kx_interval_ns = 3600ll * 1000000000ll; /* no renewal while measured */
	sio_session **s = calloc((size_t)count, sizeof(*s));
	int *inflight = calloc((size_t)window, sizeof(int));
	struct driver d;
	if (!s || !inflight || driver_init(&d) != 0)
		_exit(2);
	struct epoll_event cev = {.events = EPOLLIN, .data.u64 = UINT64_MAX};
	epoll_ctl(d.ep, EPOLL_CTL_ADD, control_fd, &cev);
	int next = 0, nin = 0, ok = 0, failed = 0;
	while (ok + failed < count) {
		while (nin < window && next < count) {
			sio_identity *id;
			int fd = udp_loopback_on(NULL, addr, 0, 0);
			if (fd < 0 || sio_identity_generate(&id) != 0) {
				fprintf(stderr, "client %d.%d: socket: %s\n", idx, next, strerror(errno));
				_exit(2);
			}
			int rc = lclient_new(&s[next], id, r, fd, srv, sizeof(*srv), &o);
			sio_identity_free(id);
			if (rc == 0)
				rc = sio_session_start_loop(s[next]);
			if (rc != 0 || driver_add(&d, s[next]) != 0) {
				fprintf(stderr, "client %d.%d: cannot start: %s\n", idx, next, sio_strerror(rc));
				_exit(2);
			}
			inflight[nin++] = next++;
		}
		int to = 50;
		for (int i = 0; i < nin; i++) {
			int t = sio_session_timeout_ms(s[inflight[i]]);
			if (t >= 0 && t < to)
				to = t;
		}
		struct epoll_event ev[256];
		int k = epoll_wait(d.ep, ev, 256, to);
		for (int i = 0; i < k; i++) {
			if (ev[i].data.u64 == UINT64_MAX)
				_exit(0); /* the parent gave up */
			sio_session_process(s[ev[i].data.u64]);
		}
		for (int i = 0; i < nin;) {
			sio_session *x = s[inflight[i]];
			if (sio_session_timeout_ms(x) == 0)
				sio_session_process(x);
			sio_state st = sio_session_state(x);
			if (st >= SIO_STATE_ESTABLISHED) {
				if (st >= SIO_STATE_CLOSING)
					failed++;
				else
					ok++;
				inflight[i] = inflight[--nin];
			} else {
				i++;
			}
		}
	}
	struct report rep = {ok, failed, rss_kib(), count_fds(), count_lines("/proc/self/maps"), now_s() - t0};
	if (write(report_fd, &rep, sizeof rep) != (ssize_t)sizeof rep)
		_exit(2);
	/* Idle: answer whatever comes (the listener's last packets of the
	 * exchange), nothing else; until the parent closes the control pipe. */
	for (;;) {
		struct epoll_event ev[256];
		int k = epoll_wait(d.ep, ev, 256, 1000);
		for (int i = 0; i < k; i++) {
			if (ev[i].data.u64 == UINT64_MAX)
				_exit(0);
			sio_session_process(s[ev[i].data.u64]);
		}
		for (int i = 0; i < count; i++)
			if (sio_session_timeout_ms(s[i]) == 0)
				sio_session_process(s[i]);
	}
}

/* ---- the listener side ------------------------------------------------------ */

struct child {
	pid_t pid;
	int report_fd, control_fd;
	int count;
	int reported;
	struct report rep;
};

static struct {
	sio_listener *l;
	int loop;
	sio_session **acc;
	int got, want;
	struct driver d; /* loop style: the accepted sessions */
} L;

/* Takes established peers for up to TIMEOUT_MS. */
static void pump(int timeout_ms)
{
	if (!L.loop) {
		sio_session *s;
		int rc = sio_listener_accept(L.l, &s, timeout_ms);
		while (rc == 0) {
			if (L.got < L.want)
				L.acc[L.got++] = s;
			else
				sio_session_free(s);
			rc = sio_listener_accept(L.l, &s, 0);
		}
		return;
	}
	struct pollfd pf[2] = {{sio_listener_fd(L.l), POLLIN, 0}, {L.d.ep, POLLIN, 0}};
	int to = sio_listener_timeout_ms(L.l);
	if (to < 0 || to > timeout_ms)
		to = timeout_ms;
	poll(pf, 2, to);
	sio_listener_process(L.l);
	sio_session *s;
	while (sio_listener_accept(L.l, &s, 0) == 0) {
		if (L.got < L.want) {
			L.acc[L.got++] = s;
			driver_add(&L.d, s);
		} else {
			sio_session_free(s);
		}
	}
	driver_run(&L.d, 0);
}

/* Client processes are forked by a spawner process that was forked before
 * the listener existed: a fork of the listener itself would copy its
 * threads' state and its address space (whose shared pages would then count
 * in the clients' resident memory). The parent sends a request with the two
 * pipe ends of the client over a UNIX socket (SCM_RIGHTS). */
struct spawn_req {
	int idx, count, window;
};

static int spawner_sock = -1;

static void spawner(int sock, const struct sockaddr_in *srv, const uint8_t pk[32])
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	signal(SIGCHLD, SIG_IGN); /* clients are reaped by the kernel */
	for (;;) {
		struct spawn_req rq;
		char cbuf[CMSG_SPACE(2 * sizeof(int))];
		struct iovec iov = {&rq, sizeof rq};
		struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
				    .msg_controllen = sizeof cbuf};
		ssize_t r = recvmsg(sock, &mh, 0);
		if (r != (ssize_t)sizeof rq)
			_exit(0); /* the parent is done */
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		if (!cm || cm->cmsg_type != SCM_RIGHTS)
			_exit(2);
		int fds[2];
		memcpy(fds, CMSG_DATA(cm), sizeof fds);
		pid_t pid = fork();
		if (pid == 0) {
			close(sock);
			client_proc(rq.idx, rq.count, rq.window, srv, pk, fds[0], fds[1]);
			_exit(0);
		}
		close(fds[0]);
		close(fds[1]);
	}
}

static int start_spawner(const struct sockaddr_in *srv, const uint8_t pk[32])
{
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) != 0)
		return -1;
	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		close(sp[0]);
		spawner(sp[1], srv, pk);
		_exit(0);
	}
	close(sp[1]);
	spawner_sock = sp[0];
	return 0;
}

static int start_child(struct child *c, int idx, int count, int window)
{
	int rp[2], cp[2];
	if (pipe2(rp, O_CLOEXEC) != 0 || pipe2(cp, O_CLOEXEC) != 0)
		return -1;
	struct spawn_req rq = {idx, count, window};
	int fds[2] = {rp[1], cp[0]};
	char cbuf[CMSG_SPACE(sizeof fds)];
	memset(cbuf, 0, sizeof cbuf);
	struct iovec iov = {&rq, sizeof rq};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			    .msg_controllen = sizeof cbuf};
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof fds);
	memcpy(CMSG_DATA(cm), fds, sizeof fds);
	if (sendmsg(spawner_sock, &mh, 0) != (ssize_t)sizeof rq) {
		perror("bench_listener: spawner");
		return -1;
	}
	close(rp[1]);
	close(cp[0]);
	c->pid = 1;
	c->report_fd = rp[0];
	c->control_fd = cp[1];
	c->count = count;
	c->reported = 0;
	return 0;
}

/* Reads the reports that arrived; returns -1 if a child died before its
 * report. */
static int poll_children(struct child *ch, int nch)
{
	for (int i = 0; i < nch; i++) {
		if (ch[i].reported || ch[i].pid <= 0)
			continue;
		struct pollfd pf = {ch[i].report_fd, POLLIN, 0};
		if (poll(&pf, 1, 0) <= 0)
			continue;
		ssize_t r = read(ch[i].report_fd, &ch[i].rep, sizeof ch[i].rep);
		if (r != (ssize_t)sizeof ch[i].rep) {
			fprintf(stderr, "bench_listener: client process %d ended without its report\n", i);
			return -1;
		}
		ch[i].reported = 1;
	}
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: bench_listener [--loop] [--workers K] [--per-proc M] [--parallel P] "
			"[--window W] [N]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	int n = 10000, workers = 0, per_proc = 5000, window = 64;
	long nc = sysconf(_SC_NPROCESSORS_ONLN);
	int parallel = nc > 0 ? (int)nc : 1;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--loop"))
			L.loop = 1;
		else if (!strcmp(a, "--workers") && i + 1 < argc)
			workers = atoi(argv[++i]);
		else if (!strcmp(a, "--per-proc") && i + 1 < argc)
			per_proc = atoi(argv[++i]);
		else if (!strcmp(a, "--parallel") && i + 1 < argc)
			parallel = atoi(argv[++i]);
		else if (!strcmp(a, "--window") && i + 1 < argc)
			window = atoi(argv[++i]);
		else if (a[0] != '-')
			n = atoi(a);
		else
			usage();
	}
	if (n < 1 || per_proc < 1 || parallel < 1 || window < 1 || workers < 0)
		usage();
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);

	rlim_t nofile = raise_nofile((rlim_t)read_long("/proc/sys/fs/nr_open"));
	if (sio_init() != 0)
		return 1;
	sio_identity *id;
	if (sio_identity_generate(&id) != 0)
		return 1;
	uint8_t pk[32];
	sio_identity_public_key(id, pk);

	/* SO_REUSEPORT before bind: a listener with a worker pool may open one
	 * socket per worker on the same address. */
	struct sockaddr_in sa;
	int sfd = udp_loopback(&sa, UDP_REUSEPORT | UDP_RCVBUF_FORCE, 32 << 20);
	if (sfd < 0) {
		perror("bench_listener: bind");
		return 1;
	}

	if (start_spawner(&sa, pk) != 0) {
		perror("bench_listener: spawner");
		return 1;
	}

	sio_options so;
	memset(&so, 0, sizeof(so));
	so.keepalive_ns = -1;
	so.dead_peer_ns = -1;
	so.kx_interval_ns = 3600ll * 1000000000ll;
	sio_listener_options lo;
	memset(&lo, 0, sizeof(lo));
	lo.session_opts = &so;
	lo.max_sessions = (uint32_t)n + 1024;
	/* well above what the clients keep in flight (parallel x window); not
	 * far above: the event-loop listener sizes a per-call array by it */
	lo.max_half_open = (uint32_t)(4 * parallel * window > 4096 ? 4 * parallel * window : 4096);
	lo.cookie_threshold = -1;
	lo.max_memory = UINT64_MAX; /* measured here, not capped: the budget reserves worst cases */
	lo.workers = workers;
	lo.close_fd = 1;
	if (sio_listener_new(&L.l, id, sfd, NULL, &lo) != 0) {
		fprintf(stderr, "bench_listener: sio_listener_new failed\n");
		return 1;
	}
	int rc = L.loop ? sio_listener_start_loop(L.l) : sio_listener_start(L.l);
	if (rc != 0 || (L.loop && driver_init(&L.d) != 0)) {
		fprintf(stderr, "bench_listener: cannot start the listener: %s\n", sio_strerror(rc));
		return 1;
	}
	L.want = n;
	L.acc = calloc((size_t)n, sizeof(*L.acc));
	int chcap = 64;
	struct child *ch = calloc((size_t)chcap, sizeof(*ch));
	if (!L.acc || !ch)
		return 1;

	sio_listener_stats st;
	sio_listener_stats_get(L.l, &st);
	long max_map = read_long("/proc/sys/vm/max_map_count");
	long pid_max = read_long("/proc/sys/kernel/pid_max");
	long threads_max = read_long("/proc/sys/kernel/threads-max");
	printf("style: %s, workers %d (stats: %llu), %d sessions asked, clients: processes of <= %d "
	       "sessions, %d establishing at once, %d handshakes in flight each\n",
	       L.loop ? "event loop (sio_listener_start_loop)" : "blocking (sio_listener_start)", workers,
	       (unsigned long long)st.workers, n, per_proc, parallel, window);
	printf("limits: RLIMIT_NOFILE %llu (fs.nr_open %ld), vm.max_map_count %ld, kernel.pid_max %ld, "
	       "kernel.threads-max %ld, MemAvailable %ld MiB\n",
	       (unsigned long long)nofile, read_long("/proc/sys/fs/nr_open"), max_map, pid_max, threads_max,
	       mem_available_kib() / 1024);

	long before = rss_kib(), maps0 = count_lines("/proc/self/maps"), fds0 = count_fds(),
	     thr0 = count_threads();
	size_t heap0 = mallinfo2().uordblks;
	double t0 = now_s(), t_last = t0, t_done = 0;
	struct timespec c0, c1;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
	int nch = 0, running = 0, assigned = 0, last_got = 0, fail = 0;
	const char *capped = NULL;
	char capmsg[512] = "";

	/* calibration: one small child alone */
	int first = n < CALIBRATION ? n : CALIBRATION;
	if (start_child(&ch[nch++], 0, first, window) != 0)
		return 1;
	assigned = first;
	running = 1;
	int calibrated = 0;
	while (L.got < L.want) {
		pump(20);
		if (poll_children(ch, nch) != 0) {
			fail = 1;
			break;
		}
		running = 0;
		for (int i = 0; i < nch; i++)
			running += !ch[i].reported;
		if (!calibrated && ch[0].reported && L.got >= first) {
			calibrated = 1;
			/* What one peer costs the listener and a client, and how
			 * many the limits allow. */
			double g = L.got;
			double fd_per = (double)(count_fds() - fds0) / g;
			double map_per = (double)(count_lines("/proc/self/maps") - maps0) / g;
			double thr_per = (double)(count_threads() - thr0) / g;
			double lkib = (double)(rss_kib() - before) / g;
			double ckib = (double)ch[0].rep.rss_kib / ch[0].count;
			printf("calibration (%d peers): per peer in the listener %.2f descriptors, %.2f mappings, "
			       "%.2f threads, %.1f KiB resident; %.1f KiB resident per client session\n",
			       L.got, fd_per, map_per, thr_per, lkib, ckib);
			int cap = n;
			long memav = mem_available_kib();
			struct {
				const char *what;
				double room, per;
			} lim[] = {
				{"RLIMIT_NOFILE (descriptors)", (double)nofile - (double)count_fds() - 64, fd_per},
				{"vm.max_map_count (mappings)", (double)max_map - (double)count_lines("/proc/self/maps") - 256,
				 map_per},
				{"kernel.pid_max / threads-max (threads, system-wide)",
				 (double)(pid_max < threads_max ? pid_max : threads_max) - (double)system_tasks() - 256,
				 thr_per},
				{"memory (MemAvailable, 80 %, listener + clients)", 0.8 * (double)memav,
				 lkib + ckib},
			};
			for (size_t k = 0; k < sizeof lim / sizeof lim[0]; k++) {
				if (lim[k].per <= 0.001)
					continue;
				double more = lim[k].room / lim[k].per;
				int c = L.got + (more > 0 ? (int)more : 0);
				if (c < cap) {
					cap = c;
					capped = lim[k].what;
					snprintf(capmsg, sizeof capmsg, "%.0f more at %.2f each", lim[k].room, lim[k].per);
				}
			}
			/* the clients' own limits: they are raised like ours */
			double cfd = (double)ch[0].rep.fds / ch[0].count, cmap = (double)ch[0].rep.maps / ch[0].count;
			int pp = per_proc;
			if (cfd > 0 && ((double)nofile - 256) / cfd < pp)
				pp = (int)(((double)nofile - 256) / cfd);
			if (cmap > 0 && ((double)max_map - 1024) / cmap < pp)
				pp = (int)(((double)max_map - 1024) / cmap);
			printf("client processes: %.2f descriptors and %.2f mappings per client session: %d sessions "
			       "per process%s\n",
			       cfd, cmap, pp < 1 ? 1 : pp, pp < per_proc ? " (lowered to fit their limits)" : "");
			per_proc = pp < 1 ? 1 : pp;
			if (cap < n) {
				printf("CAPPED: %d sessions asked, %d fit: limited by %s (%s)\n", n, cap, capped, capmsg);
				L.want = n = cap;
			}
		}
		if (calibrated) {
			while (running < parallel && assigned < n) {
				if (nch == chcap) {
					struct child *nc2 = realloc(ch, (size_t)chcap * 2 * sizeof(*ch));
					if (!nc2)
						return 1;
					ch = nc2;
					memset(ch + chcap, 0, (size_t)chcap * sizeof(*ch));
					chcap *= 2;
				}
				int cnt = n - assigned < per_proc ? n - assigned : per_proc;
				if (start_child(&ch[nch], nch, cnt, window) != 0) {
					fail = 1;
					break;
				}
				nch++;
				assigned += cnt;
				running++;
			}
		}
		double t = now_s();
		if (L.got != last_got) {
			last_got = L.got;
			t_last = t;
		} else if (t - t_last > 20) {
			sio_listener_stats_get(L.l, &st);
			printf("STALLED: %d of %d sessions after %.0f s without progress; listener: %llu half open, "
			       "%llu expired, drop_memory %llu, drop_sessions %llu, drop_half_open %llu; "
			       "%ld descriptors, %ld mappings, %ld threads in this process\n",
			       L.got, L.want, t - t_last, (unsigned long long)st.half_open,
			       (unsigned long long)st.expired, (unsigned long long)st.drop_memory,
			       (unsigned long long)st.drop_sessions, (unsigned long long)st.drop_half_open,
			       count_fds(), count_lines("/proc/self/maps"), count_threads());
			fail = 1;
			break;
		}
	}
	t_done = now_s();
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
	/* every child's report (its side may settle after ours) */
	for (double t = now_s(); !fail && t < t_done + 30; t = now_s()) {
		running = 0;
		for (int i = 0; i < nch; i++)
			running += !ch[i].reported;
		if (!running)
			break;
		pump(20);
		if (poll_children(ch, nch) != 0)
			fail = 1;
	}
	/* let the last exchanges' packets settle */
	for (double t = now_s(); t < t_done + 1; t = now_s())
		pump(20);
	long after = rss_kib();
	sio_listener_stats_get(L.l, &st);
	int cfail = 0;
	long crss = 0;
	for (int i = 0; i < nch; i++) {
		cfail += ch[i].rep.failed;
		crss += ch[i].rep.rss_kib;
	}
	double secs = t_done - t0;
	int got = L.got;
	if (got > 0) {
		printf("established: %d sessions in %.1f s = %.0f sessions/s (%d client processes; %d client "
		       "key exchanges failed)\n",
		       got, secs, got / secs, nch, cfail);
		double cpu = (double)(c1.tv_sec - c0.tv_sec) + (double)(c1.tv_nsec - c0.tv_nsec) / 1e9;
		printf("listener CPU while establishing: %.1f s = %.0f us per session (this process: the "
		       "listener and the loop accepting; the clients are other processes)\n",
		       cpu, cpu * 1e6 / got);
		printf("resident memory per idle session: %.1f KiB (listener RSS %ld KiB before, %ld KiB after, "
		       "%d sessions)\n",
		       (double)(after - before) / got, before, after, got);
		/* idle: after SIO_TRIM_NS (1 s) of quiet each session returns
		 * the buffers its handshake needed; what the allocator keeps of
		 * them shows in the first figure, what sessions hold in the
		 * second (malloc_trim gives free pages back) and the third */
		for (double t = now_s(); t < t_done + 3.5; t = now_s())
			pump(20);
		long idle = rss_kib();
		size_t heap = mallinfo2().uordblks;
		malloc_trim(0);
		long trimmed = rss_kib();
		printf("after 2.5 s idle: %.1f KiB resident per session (%.1f after malloc_trim), heap in use "
		       "%.1f KiB per session\n",
		       (double)(idle - before) / got, (double)(trimmed - before) / got,
		       (double)(heap - heap0) / 1024 / got);
		printf("listener budget (sio_listener_stats.memory): %.1f MiB reserved = %.1f KiB per session\n",
		       (double)st.memory / 1048576.0, (double)st.memory / 1024.0 / got);
		printf("per session in the listener: %.2f descriptors, %.2f mappings, %.2f threads "
		       "(workers %llu, handoffs %llu)\n",
		       (double)(count_fds() - fds0) / got, (double)(count_lines("/proc/self/maps") - maps0) / got,
		       (double)(count_threads() - thr0) / got, (unsigned long long)st.workers,
		       (unsigned long long)st.handoffs);
		printf("client side: %.1f KiB resident per client session (all client processes)\n",
		       (double)crss / got);
	}
	for (int i = 0; i < nch; i++)
		close(ch[i].control_fd);
	close(spawner_sock); /* the spawner ends; its clients end with their pipes */
	while (wait(NULL) > 0)
		;
	double f0 = now_s();
	for (int i = 0; i < got; i++)
		sio_session_free(L.acc[i]);
	sio_listener_free(L.l);
	if (got > 0)
		printf("freed: %d sessions and the listener in %.1f s\n", got, now_s() - f0);
	sio_identity_free(id);
	free(L.acc);
	free(L.d.s);
	free(ch);
	return fail || got == 0 ? 1 : 0;
}
