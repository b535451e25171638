/* Tool rows: BENCH_STREAM_BYTES (1 GiB by default) through TCP loopback,
 * side by side:
 *  - StreamSio:            sio connect (stdin) -> sio listen (stdout), stream mode;
 *                          every child's stdin is /dev/null or a pipe of ours
 *                          (never the bench's own), and the listener's is a
 *                          pipe held open until the transfer ends
 *  - StreamSocat:          socat -u STDIN TCP -> socat -u TCP-LISTEN STDOUT, plain
 *  - StreamSocatTLSChaCha: the same over OPENSSL with TLS 1.2
 *                          ECDHE-RSA-CHACHA20-POLY1305 (self-signed cert)
 *  - StreamSpiped:         bench -> spiped -e -> spiped -d -> bench, over TCP
 * The bench feeds a repeating 1 MiB random pattern and checks every byte
 * that comes out; the clock runs from the first byte written to the last
 * byte read (process start-up and the handshakes included: a few ms of a
 * ~1 s run). One op = the whole transfer; MB/s is the figure to compare.
 * Missing tools skip their row with a message (bench/tools.sh installs them
 * as root). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

extern char **environ;

#define PATTERN (1u << 20)
#define CHUNK (256u << 10)

enum tool { T_SIO, T_SOCAT, T_SOCAT_TLS, T_SPIPED };

struct tool_st {
	enum tool kind;
	char dir[64];
	uint8_t *pattern;
};

static int have_cmd(const char *name)
{
	const char *path = getenv("PATH");
	char buf[4096];
	if (!path)
		path = "/usr/bin:/bin";
	while (*path) {
		size_t n = strcspn(path, ":");
		snprintf(buf, sizeof buf, "%.*s/%s", (int)n, path, name);
		if (access(buf, X_OK) == 0)
			return 1;
		path += n;
		if (*path == ':')
			path++;
	}
	return 0;
}

static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a;
	memset(&a, 0, sizeof a);
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t l = sizeof a;
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || getsockname(fd, (struct sockaddr *)&a, &l)) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return ntohs(a.sin_port);
}

/* Waits until something listens on 127.0.0.1:PORT (read from
 * /proc/net/tcp, so no connection is used up). */
static int wait_listening(int port, int timeout_ms)
{
	char want[32];
	snprintf(want, sizeof want, "0100007F:%04X", port);
	char any[32];
	snprintf(any, sizeof any, "00000000:%04X", port);
	for (int waited = 0; waited < timeout_ms; waited += 10) {
		FILE *f = fopen("/proc/net/tcp", "r");
		if (f) {
			char line[512];
			while (fgets(line, sizeof line, f)) {
				char local[64], remote[64];
				unsigned st;
				if (sscanf(line, " %*d: %63s %63s %x", local, remote, &st) == 3 && st == 0x0A &&
				    (!strcmp(local, want) || !strcmp(local, any))) {
					fclose(f);
					return 0;
				}
			}
			fclose(f);
		}
		usleep(10000);
	}
	return -1;
}

static pid_t spawn(char *const argv[], int in_fd, int out_fd, const char *errlog)
{
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	if (in_fd >= 0)
		posix_spawn_file_actions_adddup2(&fa, in_fd, 0);
	else
		posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	if (out_fd >= 0)
		posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
	else
		posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 2, errlog, O_WRONLY | O_CREAT | O_APPEND, 0600);
	pid_t pid;
	int r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	return r ? -1 : pid;
}

/* Waits for PID up to TIMEOUT_MS, then kills it. Returns the exit status,
 * or -1 if it had to be killed. */
static int reap(pid_t pid, int timeout_ms)
{
	if (pid <= 0)
		return 0;
	int st;
	for (int waited = 0; waited < timeout_ms; waited += 5) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
		usleep(5000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	return -1;
}

static int run_cmd(const char *cmd)
{
	int r = system(cmd);
	return r == 0 ? 0 : -1;
}

static void rm_tree(const char *dir)
{
	char cmd[256];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	(void)!system(cmd);
}

static int tool_setup(void **st, const struct bench_row *r)
{
	enum tool k = (enum tool)r->arg;
	const char *need = k == T_SIO ? NULL : k == T_SPIPED ? "spiped" : "socat";
	if (k == T_SIO && !bench_sio_path[0]) {
		bench_fail("the sio command is not built yet (no sio next to sio-bench; --sio PATH)");
		return 1;
	}
	if (need && !have_cmd(need)) {
		bench_fail("%s is not installed (bench/tools.sh installs it as root)", need);
		return 1;
	}
	if (k == T_SOCAT_TLS && !have_cmd("openssl")) {
		bench_fail("openssl is not installed");
		return 1;
	}
	struct tool_st *t = calloc(1, sizeof(*t));
	if (!t)
		return -1;
	t->kind = k;
	snprintf(t->dir, sizeof t->dir, "/tmp/sio-bench.XXXXXX");
	t->pattern = malloc(PATTERN);
	if (!t->pattern || !mkdtemp(t->dir)) {
		free(t->pattern);
		free(t);
		return -1;
	}
	randombytes_buf(t->pattern, PATTERN);
	*st = t;
	char cmd[9000];
	int rc = 0;
	if (k == T_SIO) {
		snprintf(cmd, sizeof cmd, "'%s' keygen -i '%s/a' >/dev/null 2>&1 && '%s' keygen -i '%s/b' >/dev/null 2>&1",
			 bench_sio_path, t->dir, bench_sio_path, t->dir);
		rc = run_cmd(cmd);
	} else if (k == T_SOCAT_TLS) {
		snprintf(cmd, sizeof cmd,
			 "cd '%s' && openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem "
			 "-days 2 -subj /CN=localhost >/dev/null 2>&1 && cat key.pem cert.pem > srv.pem",
			 t->dir);
		rc = run_cmd(cmd);
	} else if (k == T_SPIPED) {
		snprintf(cmd, sizeof cmd, "dd if=/dev/urandom of='%s/key' bs=32 count=1 2>/dev/null", t->dir);
		rc = run_cmd(cmd);
	}
	if (rc) {
		bench_fail("preparing keys failed (%s)", cmd);
		rm_tree(t->dir);
		free(t->pattern);
		free(t);
		return -1;
	}
	return 0;
}

static void tool_teardown(void *st)
{
	struct tool_st *t = st;
	rm_tree(t->dir);
	free(t->pattern);
	free(t);
}

struct feeder {
	int fd;
	const uint8_t *pattern;
	uint64_t total;
	int err;
};

static void *feed_main(void *arg)
{
	struct feeder *f = arg;
	uint64_t off = 0;
	while (off < f->total) {
		size_t p = (size_t)(off % PATTERN);
		size_t n = PATTERN - p < CHUNK ? PATTERN - p : CHUNK;
		if (n > f->total - off)
			n = (size_t)(f->total - off);
		ssize_t w = write(f->fd, f->pattern + p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			f->err = errno;
			break;
		}
		off += (uint64_t)w;
	}
	close(f->fd);
	return NULL;
}

/* Reads until TOTAL bytes arrived (or end/error/stall), checking content. */
static int drain(int fd, const uint8_t *pattern, uint64_t total, uint64_t *got)
{
	static uint8_t buf[CHUNK];
	uint64_t off = 0;
	while (off < total) {
		struct pollfd pfd = {fd, POLLIN, 0};
		int pr = poll(&pfd, 1, 30000);
		if (pr == 0) {
			bench_fail("no data for 30 s after %llu bytes", (unsigned long long)off);
			break;
		}
		ssize_t n = read(fd, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		for (size_t i = 0; i < (size_t)n;) {
			size_t p = (size_t)((off + i) % PATTERN);
			size_t k = PATTERN - p < (size_t)n - i ? PATTERN - p : (size_t)n - i;
			if (memcmp(buf + i, pattern + p, k)) {
				bench_fail("stream altered near byte %llu", (unsigned long long)(off + i));
				*got = off;
				return -2;
			}
			i += k;
		}
		off += (uint64_t)n;
	}
	*got = off;
	return off == total ? 0 : -1;
}

/* The last line the tools wrote to stderr (for failure messages). */
static const char *log_tail(const char *path)
{
	static char line[200];
	line[0] = 0;
	FILE *f = fopen(path, "r");
	if (!f)
		return "no stderr output";
	char buf[200];
	while (fgets(buf, sizeof buf, f))
		if (buf[0] != '\n')
			memcpy(line, buf, sizeof line);
	fclose(f);
	line[strcspn(line, "\n")] = 0;
	return line[0] ? line : "no stderr output";
}

static int tool_run(void *st, uint64_t n)
{
	struct tool_st *t = st;
	uint64_t total = bench_stream_bytes;
	int port = free_port(), port2 = free_port(), port3 = free_port();
	if (port < 0 || port2 < 0 || port3 < 0)
		return -1;
	char errlog[128], a1[512], a2[512], a3[512], a4[512], a5[64], a6[64];
	snprintf(errlog, sizeof errlog, "%s/stderr.log", t->dir);
	int in[2] = {-1, -1}, out[2] = {-1, -1};
	/* sio listen's stdin: a pipe the bench holds open until the end. A
	 * receiving sio keeps its stdin open (README, "Ending"): from /dev/null
	 * it would close the session at once and the sender's data with it. */
	int hold[2] = {-1, -1};
	pid_t lp = -1, cp = -1;
	int sink = -1, src = -1, ls = -1;
	int rc = -1;
	pthread_t feeder_th;
	int feeding = 0;
	struct feeder fd = {-1, t->pattern, total, 0};

	if (t->kind != T_SPIPED) {
		if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC))
			goto out;
		fcntl(in[1], F_SETPIPE_SZ, 1 << 20);
		fcntl(out[0], F_SETPIPE_SZ, 1 << 20);
		char *largv[12], *cargv[12];
		int li = 0, ci = 0;
		if (t->kind == T_SIO) {
			snprintf(a1, sizeof a1, "%s/b", t->dir);
			snprintf(a2, sizeof a2, "%s/a/id_ed25519.pub", t->dir);
			snprintf(a3, sizeof a3, "%s/a", t->dir);
			snprintf(a4, sizeof a4, "%s/b/id_ed25519.pub", t->dir);
			snprintf(a5, sizeof a5, "tcp:127.0.0.1:%d", port);
			/* one way, like socat -u: since each direction ends on its
			 * own (README, "Ending"), a sender whose stdin ended waits for
			 * the peer's stream to end too, and the listener's held stdin
			 * never ends before the sender exits */
			char *l[] = {bench_sio_path, "listen", "-q", "--recv-only", "-i", a1, "-r", a2,
				     a5, NULL};
			char *c[] = {bench_sio_path, "connect", "-q", "--send-only", "-i", a3, "-r", a4,
				     a5, NULL};
			for (; l[li]; li++)
				largv[li] = l[li];
			for (; c[ci]; ci++)
				cargv[ci] = c[ci];
		} else if (t->kind == T_SOCAT) {
			snprintf(a1, sizeof a1, "TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr", port);
			snprintf(a2, sizeof a2, "TCP:127.0.0.1:%d", port);
			char *l[] = {"socat", "-u", a1, "STDOUT", NULL};
			char *c[] = {"socat", "-u", "STDIN", a2, NULL};
			for (; l[li]; li++)
				largv[li] = l[li];
			for (; c[ci]; ci++)
				cargv[ci] = c[ci];
		} else {
			const char *tls = "openssl-min-proto-version=TLS1.2,openssl-max-proto-version=TLS1.2,"
					  "cipher=ECDHE-RSA-CHACHA20-POLY1305";
			snprintf(a1, sizeof a1, "OPENSSL-LISTEN:%d,bind=127.0.0.1,reuseaddr,cert=%s/srv.pem,verify=0,%s",
				 port, t->dir, tls);
			snprintf(a2, sizeof a2, "OPENSSL:127.0.0.1:%d,verify=0,%s", port, tls);
			char *l[] = {"socat", "-u", a1, "STDOUT", NULL};
			char *c[] = {"socat", "-u", "STDIN", a2, NULL};
			for (; l[li]; li++)
				largv[li] = l[li];
			for (; c[ci]; ci++)
				cargv[ci] = c[ci];
		}
		largv[li] = NULL;
		cargv[ci] = NULL;
		if (t->kind == T_SIO && pipe2(hold, O_CLOEXEC))
			goto out;
		lp = spawn(largv, hold[0], out[1], errlog);
		if (hold[0] >= 0) {
			close(hold[0]);
			hold[0] = -1;
		}
		close(out[1]);
		out[1] = -1;
		if (lp < 0 || wait_listening(port, 10000)) {
			bench_fail("%s did not start listening: %s", largv[0], log_tail(errlog));
			goto out;
		}
		bench_start();
		cp = spawn(cargv, in[0], -1, errlog);
		close(in[0]);
		in[0] = -1;
		if (cp < 0) {
			bench_stop();
			goto out;
		}
		fd.fd = in[1];
		in[1] = -1;
		sink = out[0];
		out[0] = -1;
	} else {
		struct sockaddr_in a;
		memset(&a, 0, sizeof a);
		a.sin_family = AF_INET;
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		a.sin_port = htons((uint16_t)port3);
		int one = 1;
		ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 4))
			goto out;
		snprintf(a1, sizeof a1, "[127.0.0.1]:%d", port2);
		snprintf(a2, sizeof a2, "[127.0.0.1]:%d", port3);
		snprintf(a3, sizeof a3, "[127.0.0.1]:%d", port);
		snprintf(a4, sizeof a4, "%s/key", t->dir);
		snprintf(a5, sizeof a5, "-d");
		snprintf(a6, sizeof a6, "-e");
		char *d[] = {"spiped", a5, "-F", "-s", a1, "-t", a2, "-k", a4, NULL};
		char *e[] = {"spiped", a6, "-F", "-s", a3, "-t", a1, "-k", a4, NULL};
		lp = spawn(d, -1, -1, errlog);
		cp = spawn(e, -1, -1, errlog);
		if (lp < 0 || cp < 0 || wait_listening(port2, 10000) || wait_listening(port, 10000)) {
			bench_fail("spiped did not start: %s", log_tail(errlog));
			goto out;
		}
		bench_start();
		src = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		a.sin_port = htons((uint16_t)port);
		if (src < 0 || connect(src, (struct sockaddr *)&a, sizeof a)) {
			bench_stop();
			bench_fail("connect to spiped: %s", strerror(errno));
			goto out;
		}
		struct pollfd pfd = {ls, POLLIN, 0};
		if (poll(&pfd, 1, 10000) != 1 || (sink = accept(ls, NULL, NULL)) < 0) {
			bench_stop();
			bench_fail("spiped did not connect through");
			goto out;
		}
		fd.fd = src;
		src = -1;
	}
	if (pthread_create(&feeder_th, NULL, feed_main, &fd)) {
		bench_stop();
		close(fd.fd);
		goto out;
	}
	feeding = 1;
	uint64_t got = 0;
	int dr = drain(sink, t->pattern, total, &got);
	bench_stop();
	pthread_join(feeder_th, NULL);
	feeding = 0;
	if (dr) {
		if (dr == -1)
			bench_fail("%llu of %llu bytes arrived; stderr: %s", (unsigned long long)got,
				   (unsigned long long)total, log_tail(errlog));
		goto out;
	}
	if (fd.err) {
		bench_fail("writing: %s", strerror(fd.err));
		goto out;
	}
	rc = 0;
out:
	if (feeding)
		pthread_join(feeder_th, NULL);
	if (t->kind == T_SPIPED) {
		if (lp > 0)
			kill(lp, SIGTERM);
		if (cp > 0)
			kill(cp, SIGTERM);
	} else if (rc) {
		if (lp > 0)
			kill(lp, SIGTERM);
		if (cp > 0)
			kill(cp, SIGTERM);
	}
	/* the sender ends first: sio listen keeps its stdin until then (its
	 * stdin ending would close the session under the sender's feet) */
	int s1 = hold[1] >= 0 ? reap(cp, 10000) : 0;
	if (hold[1] >= 0)
		cp = -1;
	for (int i = 0; i < 2; i++) {
		if (in[i] >= 0)
			close(in[i]);
		if (out[i] >= 0)
			close(out[i]);
		if (hold[i] >= 0)
			close(hold[i]);
	}
	if (sink >= 0)
		close(sink);
	if (src >= 0)
		close(src);
	if (ls >= 0)
		close(ls);
	if (cp > 0)
		s1 = reap(cp, 10000);
	int s2 = reap(lp, 10000);
	if (rc == 0 && t->kind != T_SPIPED && (s1 || s2)) {
		bench_fail("exit status connect %d, listen %d; stderr: %s", s1, s2, log_tail(errlog));
		rc = -1;
	}
	return rc;
}

const struct bench_row bench_rows_tool[] = {
	{"StreamSio", "tool", T_SIO, (size_t)-1, tool_setup, tool_run, tool_teardown, 1},
	{"StreamSocat", "tool", T_SOCAT, (size_t)-1, tool_setup, tool_run, tool_teardown, 1},
	{"StreamSocatTLSChaCha", "tool", T_SOCAT_TLS, (size_t)-1, tool_setup, tool_run, tool_teardown, 1},
	{"StreamSpiped", "tool", T_SPIPED, (size_t)-1, tool_setup, tool_run, tool_teardown, 1},
	{NULL, NULL, 0, 0, NULL, NULL, NULL, 0},
};
