/* Opening the transport of `sio listen` / `sio connect`: resolve ADDRESS,
 * bind or connect the socket, accept one peer on stream sockets. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define UDP_BUFFER (4 << 20) /* socket buffers asked for datagram sockets */

int64_t cli_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int set_err(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int set_err(char *err, size_t errlen, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return code;
}

/* Milliseconds left before DEADLINE (-1: none), capped at CAP. */
static int wait_ms(int64_t deadline, int cap)
{
	if (!deadline)
		return cap;
	int64_t left = deadline - cli_now_ms();
	if (left < 0)
		return 0;
	return left < cap ? (int)left : cap;
}

static void big_buffers(int fd)
{
	int v = UDP_BUFFER;
	/* SO_*BUFFORCE passes rmem_max when we may (root); else the capped size */
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &v, sizeof v) != 0)
		(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof v);
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &v, sizeof v) != 0)
		(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof v);
}

static int make_unix_addr(const char *path, struct sockaddr_un *sun, socklen_t *len)
{
	memset(sun, 0, sizeof *sun);
	sun->sun_family = AF_UNIX;
	size_t n = strlen(path);
	if (n >= sizeof sun->sun_path)
		return -1;
	memcpy(sun->sun_path, path, n);
	if (path[0] == '@') /* abstract namespace: leading NUL, no terminator */
		sun->sun_path[0] = '\0';
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (path[0] == '@' ? 0 : 1));
	return 0;
}

/* Waits until FD is readable/writable (EVENTS), the deadline passes (0) or a
 * stop was asked (-1). */
static int wait_fd(int fd, short events, int64_t deadline, volatile sig_atomic_t *stop)
{
	for (;;) {
		if (stop && *stop)
			return -1;
		int ms = wait_ms(deadline, 100);
		if (deadline && ms == 0)
			return 0;
		struct pollfd p = {.fd = fd, .events = events};
		int r = poll(&p, 1, ms);
		if (r > 0)
			return 1;
		if (r < 0 && errno != EINTR)
			return 1; /* let the caller's call report the error */
	}
}

/* Pause between connection attempts: 1 = try again, 0 = deadline passed,
 * -1 = stop asked. */
static int retry_pause(int64_t deadline, volatile sig_atomic_t *stop)
{
	if (stop && *stop)
		return -1;
	if (deadline && cli_now_ms() >= deadline)
		return 0;
	poll(NULL, 0, wait_ms(deadline, 100));
	return stop && *stop ? -1 : 1;
}

static int stopped_or_timeout(int r, const char *what, char *err, size_t errlen)
{
	if (r < 0)
		return set_err(err, errlen, CLI_ERR, "interrupted while %s", what);
	return set_err(err, errlen, CLI_NOSESSION, "no session established: timed out %s", what);
}

/* Stream listen: accept exactly one peer, then stop listening. */
static int accept_one(int lfd, const char *name, int64_t deadline, volatile sig_atomic_t *stop,
                      struct cli_conn *c, char *err, size_t errlen)
{
	int r = wait_fd(lfd, POLLIN, deadline, stop);
	if (r <= 0) {
		close(lfd);
		return stopped_or_timeout(r, "waiting for a peer", err, errlen);
	}
	int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	int e = errno;
	close(lfd);
	if (fd < 0)
		return set_err(err, errlen, CLI_ERR, "%s: accept: %s", name, strerror(e));
	c->fd = fd;
	return 0;
}

static int open_inet(const struct cli_addr *a, int listening, int64_t deadline,
                     volatile sig_atomic_t *stop, struct cli_conn *c, const char *name, char *err,
                     size_t errlen)
{
	int dgram = a->kind == CLI_UDP;
	struct addrinfo hints = {0}, *res = NULL;
	hints.ai_socktype = dgram ? SOCK_DGRAM : SOCK_STREAM;
	hints.ai_family = AF_UNSPEC;
	int named = a->port[0] < '0' || a->port[0] > '9'; /* a service name */
	hints.ai_flags = (named ? 0 : AI_NUMERICSERV) | (listening ? AI_PASSIVE : 0);
	const char *host = a->host[0] ? a->host : NULL;
	if (listening && !host) {
		hints.ai_family = AF_INET6; /* dual stack "::" first, 0.0.0.0 below */
	}
	int g = getaddrinfo(host, a->port, &hints, &res);
	if (g != 0 && listening && !host) {
		hints.ai_family = AF_INET;
		g = getaddrinfo(host, a->port, &hints, &res);
	}
	if (g == EAI_SERVICE && named)
		return set_err(err, errlen, CLI_ERR,
		               "%s: unknown %s service '%s' (not in /etc/services; give a port number)",
		               name, dgram ? "udp" : "tcp", a->port);
	if (g != 0)
		return set_err(err, errlen, CLI_ERR, "%s: cannot resolve '%s': %s", name, a->host,
		               gai_strerror(g));
	c->datagram = dgram;
	int last = 0, rc = CLI_ERR;
	if (listening) {
		for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
			int fd =
			    socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
			if (fd < 0) {
				last = errno;
				continue;
			}
			int one = 1, zero = 0;
			if (!dgram)
				setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
			if (ai->ai_family == AF_INET6 && !host)
				setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
			if (dgram)
				big_buffers(fd);
			if (dgram && listening == CLI_LISTEN_SHARED && ai->ai_family != AF_UNIX) {
				/* the listener's workers each bind a socket of their
				 * own to the same address (SO_REUSEPORT). A plain
				 * bind first: a port already taken is still an error,
				 * not a silent share with another process. */
				int probe = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
				if (probe >= 0 && ai->ai_family == AF_INET6 && !host)
					setsockopt(probe, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
				int taken = probe >= 0 && bind(probe, ai->ai_addr, ai->ai_addrlen) != 0;
				int why = errno;
				if (probe >= 0)
					close(probe);
				if (taken) {
					last = why;
					close(fd);
					continue;
				}
				setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
			}
			if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 ||
			    (!dgram && listen(fd, 1) != 0)) {
				last = errno;
				close(fd);
				continue;
			}
			freeaddrinfo(res);
			if (dgram) {
				c->fd = fd;
				c->learn_peer = 1;
				return 0;
			}
			return accept_one(fd, name, deadline, stop, c, err, errlen);
		}
		freeaddrinfo(res);
		return set_err(err, errlen, CLI_ERR, "%s: %s", name,
		               last == EADDRINUSE ? "address in use" : strerror(last));
	}
	/* connect: UDP connects at once; TCP retries while nobody listens */
	int was_refused = 0; /* by an earlier round: what the timeout reports */
	for (;;) {
		int refused = 0;
		for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
			int fd =
			    socket(ai->ai_family,
			           ai->ai_socktype | SOCK_CLOEXEC | (dgram ? 0 : SOCK_NONBLOCK),
			           ai->ai_protocol);
			if (fd < 0) {
				last = errno;
				continue;
			}
			if (dgram)
				big_buffers(fd);
			int r = connect(fd, ai->ai_addr, ai->ai_addrlen);
			if (r != 0 && errno == EINPROGRESS) {
				int w = wait_fd(fd, POLLOUT, deadline, stop);
				if (w <= 0) {
					close(fd);
					freeaddrinfo(res);
					if (w == 0 && was_refused)
						return set_err(err, errlen, CLI_NOSESSION,
						               "no session established: %s: connection "
						               "refused until the timeout",
						               name);
					return stopped_or_timeout(w, "connecting", err, errlen);
				}
				int soerr = 0;
				socklen_t sl = sizeof soerr;
				getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
				errno = soerr;
				r = soerr ? -1 : 0;
			}
			if (r != 0) {
				last = errno;
				refused |= last == ECONNREFUSED;
				close(fd);
				continue;
			}
			if (!dgram) {
				int fl = fcntl(fd, F_GETFL);
				fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
				int one = 1;
				setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
			}
			c->fd = fd;
			freeaddrinfo(res);
			return 0;
		}
		if (!refused)
			break;
		was_refused = 1;
		int w = retry_pause(deadline, stop);
		if (w <= 0) {
			freeaddrinfo(res);
			if (w == 0)
				return set_err(err, errlen, CLI_NOSESSION,
				               "no session established: %s: connection refused "
				               "until the timeout",
				               name);
			return stopped_or_timeout(w, "connecting", err, errlen);
		}
	}
	freeaddrinfo(res);
	rc = set_err(err, errlen, CLI_ERR, "%s: %s", name, strerror(last));
	return rc;
}

/* A socket file at PATH that nobody serves any more is removed; one in use
 * is "address in use". */
static int clear_stale(const char *path, const char *name, char *err, size_t errlen)
{
	struct stat st;
	if (path[0] == '@' || lstat(path, &st) != 0)
		return 0;
	if (!S_ISSOCK(st.st_mode))
		return set_err(err, errlen, CLI_ERR, "%s: file exists and is not a socket", name);
	struct sockaddr_un sun;
	socklen_t len;
	if (make_unix_addr(path, &sun, &len) != 0)
		return set_err(err, errlen, CLI_ERR, "%s: path too long for a UNIX socket", name);
	/* Probe with a seqpacket socket: a live stream or datagram socket
	 * there answers EPROTOTYPE without any connection being made (a probe
	 * of its own type was accepted by a waiting `sio listen` as its peer,
	 * which then failed); only a stale file answers ECONNREFUSED. */
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return set_err(err, errlen, CLI_ERR, "%s: socket: %s", name, strerror(errno));
	int r = connect(fd, (struct sockaddr *)&sun, len);
	int e = errno;
	close(fd);
	if (r == 0 || e != ECONNREFUSED)
		return set_err(err, errlen, CLI_ERR, "%s: address in use", name);
	unlink(path);
	return 0;
}

static int open_unix(const struct cli_addr *a, int listening, int64_t deadline,
                     volatile sig_atomic_t *stop, struct cli_conn *c, const char *name, char *err,
                     size_t errlen)
{
	int dgram = a->kind == CLI_UNIXGRAM;
	int type = dgram ? SOCK_DGRAM : SOCK_STREAM;
	struct sockaddr_un sun;
	socklen_t len;
	if (make_unix_addr(a->path, &sun, &len))
		return set_err(err, errlen, CLI_USAGE, "%s: path too long", name);
	c->datagram = dgram;
	if (listening) {
		int rc = clear_stale(a->path, name, err, errlen);
		if (rc)
			return rc;
		int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return set_err(err, errlen, CLI_ERR, "%s: socket: %s", name,
			               strerror(errno));
		if (bind(fd, (struct sockaddr *)&sun, len) != 0) {
			int e = errno;
			close(fd);
			return set_err(err, errlen, CLI_ERR, "%s: %s", name,
			               e == EADDRINUSE ? "address in use" : strerror(e));
		}
		if (a->path[0] != '@')
			snprintf(c->unlink_path, sizeof c->unlink_path, "%s", a->path);
		if (dgram) {
			big_buffers(fd);
			c->fd = fd;
			c->learn_peer = 1;
			return 0;
		}
		if (listen(fd, 1) != 0) {
			int e = errno;
			close(fd);
			return set_err(err, errlen, CLI_ERR, "%s: listen: %s", name, strerror(e));
		}
		return accept_one(fd, name, deadline, stop, c, err, errlen);
	}
	for (;;) {
		int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return set_err(err, errlen, CLI_ERR, "%s: socket: %s", name,
			               strerror(errno));
		if (dgram) {
			/* autobind to a fresh abstract address so that replies reach us */
			sa_family_t fam = AF_UNIX;
			if (bind(fd, (struct sockaddr *)&fam, sizeof fam) != 0) {
				int e = errno;
				close(fd);
				return set_err(err, errlen, CLI_ERR, "%s: bind: %s", name,
				               strerror(e));
			}
			big_buffers(fd);
		}
		if (connect(fd, (struct sockaddr *)&sun, len) == 0) {
			c->fd = fd;
			return 0;
		}
		int e = errno;
		close(fd);
		if (e != ENOENT && e != ECONNREFUSED)
			return set_err(err, errlen, CLI_ERR, "%s: %s", name, strerror(e));
		int w = retry_pause(deadline, stop);
		if (w == 0)
			return set_err(
			    err, errlen, CLI_NOSESSION,
			    "no session established: %s: nobody listening until the timeout", name);
		if (w < 0)
			return stopped_or_timeout(w, "connecting", err, errlen);
	}
}

int cli_open(const struct cli_addr *a, int listening, int64_t deadline, volatile sig_atomic_t *stop,
             struct cli_conn *c, char *err, size_t errlen)
{
	char name[CLI_HOST_MAX + CLI_PATH_MAX + 32];
	memset(c, 0, sizeof *c);
	c->fd = -1;
	if (cli_addr_format(a, name, sizeof name) < 0)
		snprintf(name, sizeof name, "address");
	if (a->kind == CLI_UDP || a->kind == CLI_TCP)
		return open_inet(a, listening, deadline, stop, c, name, err, errlen);
	return open_unix(a, listening, deadline, stop, c, name, err, errlen);
}

int cli_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? errno : EIO;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

void cli_conn_close(struct cli_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	if (c->unlink_path[0])
		unlink(c->unlink_path);
	c->unlink_path[0] = '\0';
}
