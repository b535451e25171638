/* Memory per idle listener session: one process runs a sio_listener in
 * event-loop mode and accepts N peers; a child process runs the N clients
 * (event-loop sessions, one UDP socket each). The listener process's
 * resident memory before the peers and once all N are established and idle,
 * divided by N, is the figure reported; then again after 2.5 s of idling
 * (sessions return their buffers after 1 s of quiet), after malloc_trim,
 * and the heap in use per session.
 *
 *   bench_listener [N]   (default 10000, lowered to what RLIMIT_NOFILE allows:
 *                         a peer session holds 4 descriptors on each side)
 */
#include <arpa/inet.h>
#include <malloc.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <secureio.h>

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

static int udp_bound(struct sockaddr_in *a)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in x = {0};
	x.sin_family = AF_INET;
	x.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	bind(fd, (struct sockaddr *)&x, sizeof(x));
	socklen_t l = sizeof(x);
	getsockname(fd, (struct sockaddr *)&x, &l);
	if (a)
		*a = x;
	int big = 4 << 20;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	return fd;
}

static void clients(int n, const struct sockaddr_in *srv, const uint8_t srv_pk[32], int done_fd)
{
	sio_identity *id;
	sio_remote *r;
	sio_identity_generate(&id);
	sio_remote_from_public_key(&r, srv_pk);
	sio_session **s = calloc((size_t)n, sizeof(*s));
	sio_options o;
	memset(&o, 0, sizeof(o));
	o.listener_peer = 1;
	o.keepalive_ns = -1;
	for (int base = 0; base < n; base += 100) {
		int end = base + 100 < n ? base + 100 : n;
		for (int i = base; i < end; i++) {
			sio_transport t;
			int fd = udp_bound(NULL);
			sio_transport_fd(&t, fd, fd);
			memcpy(&t.peer, srv, sizeof(*srv));
			t.peer_len = sizeof(*srv);
			t.close_fds = 1;
			if (sio_session_new(&s[i], id, r, &t, &o, NULL) != 0 || sio_session_start_loop(s[i]) != 0) {
				fprintf(stderr, "client %d: cannot start\n", i);
				exit(1);
			}
		}
		for (int iter = 0; iter < 100000; iter++) {
			int left = 0;
			for (int i = base; i < end; i++) {
				sio_session_process(s[i]);
				left += sio_session_state(s[i]) < SIO_STATE_ESTABLISHED;
			}
			if (!left)
				break;
			usleep(500);
		}
	}
	if (write(done_fd, "x", 1) != 1)
		exit(1);
	pause(); /* idle until the parent ends us */
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 10000;
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	/* 5 descriptors per peer and some spare; raising the hard limit works
	 * for root (CAP_SYS_RESOURCE), else the soft limit goes to the hard. */
	rlim_t want = (rlim_t)n * 5 + 64;
	struct rlimit up = {want, want > rl.rlim_max ? want : rl.rlim_max};
	if (setrlimit(RLIMIT_NOFILE, &up) != 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	getrlimit(RLIMIT_NOFILE, &rl);
	int maxn = (int)((rl.rlim_cur - 64) / 5);
	if (n > maxn) {
		printf("RLIMIT_NOFILE %llu: %d peers at most (asked %d)\n", (unsigned long long)rl.rlim_cur, maxn, n);
		n = maxn;
	}
	sio_init();
	sio_identity *id;
	sio_identity_generate(&id);
	uint8_t pk[32];
	sio_identity_public_key(id, pk);
	struct sockaddr_in sa;
	int sfd = udp_bound(&sa);
	int pp[2];
	if (pipe(pp) != 0)
		return 1;
	long before = rss_kib();
	size_t heap0 = mallinfo2().uordblks;
	pid_t pid = fork();
	if (pid == 0) {
		close(pp[0]);
		clients(n, &sa, pk, pp[1]);
		_exit(0);
	}
	close(pp[1]);
	sio_options so;
	memset(&so, 0, sizeof(so));
	so.keepalive_ns = -1;
	sio_listener_options lo;
	memset(&lo, 0, sizeof(lo));
	lo.session_opts = &so;
	lo.max_half_open = 4096;
	lo.cookie_threshold = -1;
	lo.max_memory = UINT64_MAX; /* measured here, not capped: the budget reserves worst cases */
	sio_listener *l;
	if (sio_listener_new(&l, id, sfd, NULL, &lo) != 0 || sio_listener_start_loop(l) != 0)
		return 1;
	sio_session **acc = calloc((size_t)n, sizeof(*acc));
	int got = 0;
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (got < n) {
		struct pollfd pf = {sfd, POLLIN, 0};
		int to = sio_listener_timeout_ms(l);
		poll(&pf, 1, to < 0 || to > 20 ? 20 : to);
		sio_listener_process(l);
		while (got < n && sio_listener_accept(l, &acc[got], 0) == 0)
			got++;
		int st;
		if (waitpid(pid, &st, WNOHANG) == pid) {
			fprintf(stderr, "clients exited early\n");
			return 1;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	char c;
	if (read(pp[0], &c, 1) != 1)
		return 1;
	long after = rss_kib();
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("listener: %d idle sessions established in %.1f s; resident %ld KiB before, %ld KiB after\n", n,
	       secs, before, after);
	printf("per idle session: %.1f KiB; 10000 sessions: %.0f MiB\n", (double)(after - before) / n,
	       (double)(after - before) / n * 10000 / 1024);
	/* Idle for 2.5 s, the sessions driven as an event loop would (every
	 * 100 ms here): after SIO_TRIM_NS (1 s) of quiet each one returns the
	 * buffers its handshake needed. What the allocator keeps of them for
	 * reuse shows in the first figure, what sessions really hold in the
	 * second (malloc_trim gives free pages back). */
	for (int k = 0; k < 25; k++) {
		usleep(100 * 1000);
		sio_listener_process(l);
		for (int i = 0; i < got; i++)
			sio_session_process(acc[i]);
	}
	long idle = rss_kib();
	size_t heap = mallinfo2().uordblks;
	malloc_trim(0);
	long trimmed = rss_kib();
	printf("after 2.5 s idle: %.1f KiB resident per session (%.1f after malloc_trim), heap in use "
	       "%.1f KiB per session\n",
	       (double)(idle - before) / n, (double)(trimmed - before) / n,
	       (double)(heap - heap0) / 1024 / n);
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	for (int i = 0; i < got; i++)
		sio_session_free(acc[i]);
	sio_listener_free(l);
	sio_identity_free(id);
	return 0;
}
