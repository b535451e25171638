/* Loopback UDP sockets and listener client sessions for tests (lclient.h). */
#include "lclient.h"

#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int udp_loopback_on(struct sockaddr_in *addr, uint32_t ip, int flags, int rcvbuf)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	int one = 1;
	if (flags & UDP_REUSEPORT)
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (rcvbuf > 0) {
		if (!(flags & UDP_RCVBUF_FORCE) ||
		    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) != 0)
			(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
		if (flags & UDP_SNDBUF)
			(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &rcvbuf, sizeof(rcvbuf));
	}
	struct sockaddr_in a;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(ip);
	socklen_t l = sizeof(a);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
	    (addr && getsockname(fd, (struct sockaddr *)&a, &l) != 0)) {
		close(fd);
		return -1;
	}
	if (addr)
		*addr = a;
	return fd;
}

int udp_loopback(struct sockaddr_in *addr, int flags, int rcvbuf)
{
	return udp_loopback_on(addr, INADDR_LOOPBACK, flags, rcvbuf);
}

void lclient_options(sio_options *o)
{
	memset(o, 0, sizeof(*o));
	o->listener_peer = 1;
	o->kx_retry_ns = 200000000;
}

int lclient_new(sio_session **c, const sio_identity *id, const sio_remote *srv, int fd, const void *sa,
		size_t salen, const sio_options *o)
{
	sio_options dflt;
	sio_transport t;
	*c = NULL;
	if (fd < 0 || salen > sizeof(t.peer)) {
		if (fd >= 0)
			close(fd);
		return SIO_EINVAL;
	}
	if (!o) {
		lclient_options(&dflt);
		o = &dflt;
	}
	sio_transport_fd(&t, fd, fd);
	memcpy(&t.peer, sa, salen);
	t.peer_len = (socklen_t)salen;
	t.close_fds = 1;
	int r = sio_session_new(c, id, srv, &t, o, NULL);
	if (r != 0)
		close(fd);
	return r;
}
