/* I/O layer: whole packets over descriptors or callbacks (see transport.h and
 * docs/TRANSPORT.md). */
#include "transport.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int set_nonblock(int fd, int *old)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return -1;
	*old = fl;
	if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -1;
	return 0;
}

static int sock_type(int fd)
{
	int type = 0;
	socklen_t len = sizeof(type);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
		return -1;
	return type;
}

/* "Don't fragment" like the Go library's udpnofrag: the path MTU is found by
 * the packet-size negotiation instead of by IP fragmentation. */
static void set_dont_fragment(int fd, int family)
{
	int v = IP_PMTUDISC_DO;
	if (family == AF_INET) {
		(void)setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &v, sizeof(v));
	} else if (family == AF_INET6) {
		int v6 = IPV6_PMTUDISC_DO;
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, &v6, sizeof(v6));
		/* v4-mapped traffic on a dual-stack socket */
		(void)setsockopt(fd, IPPROTO_IP, IP_MTU_DISCOVER, &v, sizeof(v));
	}
}

/* Larger kernel buffers help batched UDP; the kernel caps them at rmem_max. */
static void grow_bufs(int fd)
{
	int want = 4 << 20, cur = 0;
	socklen_t len = sizeof(cur);
	if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &cur, &len) == 0 && cur < want)
		(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &want, sizeof(want));
	len = sizeof(cur);
	if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &cur, &len) == 0 && cur < want)
		(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &want, sizeof(want));
}

int sio_tp_open(sio_tp *tp, const sio_transport *t, size_t max_record)
{
	memset(tp, 0, sizeof(*tp));
	tp->rfd = tp->wfd = -1;
	tp->cb_poll_fd = -1;
	if (!t)
		return SIO_EINVAL;
	if (max_record < SIO_TP_MIN_RECORD)
		max_record = SIO_TP_MIN_RECORD;
	if (max_record > SIO_TP_MAX_RECORD)
		max_record = SIO_TP_MAX_RECORD;
	tp->max_record = max_record;
	int kind = t->kind;
	if (kind != SIO_TRANSPORT_AUTO && kind != SIO_TRANSPORT_DATAGRAM && kind != SIO_TRANSPORT_STREAM)
		return SIO_EINVAL;

	if (t->read_fd < 0 && t->write_fd < 0) {
		if (!t->send || !t->recv)
			return SIO_EINVAL;
		tp->custom = 1;
		tp->cb_send = t->send;
		tp->cb_recv = t->recv;
		tp->cb_poll_fd = t->poll_fd;
		tp->cb_ctx = t->ctx;
		/* callbacks exchange whole packets unless told they are a stream */
		tp->datagram = kind != SIO_TRANSPORT_STREAM;
	} else {
		if (t->read_fd < 0 || t->write_fd < 0)
			return SIO_EINVAL;
		tp->rfd = t->read_fd;
		tp->wfd = t->write_fd;
		int rtype = sock_type(tp->rfd);
		tp->rsock = rtype >= 0;
		tp->wsock = tp->rfd == tp->wfd ? tp->rsock : sock_type(tp->wfd) >= 0;
		if (kind == SIO_TRANSPORT_AUTO)
			tp->datagram = rtype == SOCK_DGRAM || rtype == SOCK_SEQPACKET;
		else
			tp->datagram = kind == SIO_TRANSPORT_DATAGRAM;
		tp->seqpacket = rtype == SOCK_SEQPACKET;
		if (tp->rsock) {
			struct sockaddr_storage ss;
			socklen_t sl = sizeof(ss);
			memset(&ss, 0, sizeof(ss));
			if (getsockname(tp->rfd, (struct sockaddr *)&ss, &sl) == 0) {
				tp->family = ss.ss_family;
				if (rtype == SOCK_DGRAM && ss.ss_family != AF_UNIX) {
					set_dont_fragment(tp->rfd, ss.ss_family);
					grow_bufs(tp->rfd);
					tp->gso = tp->rfd == tp->wfd;
				}
			}
		}
		if (tp->datagram && t->peer_len > 0) {
			if (t->peer_len > sizeof(tp->peer))
				return SIO_EINVAL;
			memcpy(&tp->peer, &t->peer, t->peer_len);
			tp->peer_len = t->peer_len;
			tp->peer_mode = SIO_TP_PEER_FIXED;
		} else if (tp->datagram && tp->rsock && rtype == SOCK_DGRAM) {
			struct sockaddr_storage ss;
			socklen_t sl = sizeof(ss);
			if (getpeername(tp->rfd, (struct sockaddr *)&ss, &sl) < 0) {
				if (errno != ENOTCONN)
					return SIO_EIO;
				tp->peer_mode = SIO_TP_PEER_LEARN;
			}
		}
		if (set_nonblock(tp->rfd, &tp->rflags) < 0)
			return SIO_EIO;
		if (tp->wfd != tp->rfd && set_nonblock(tp->wfd, &tp->wflags) < 0) {
			(void)fcntl(tp->rfd, F_SETFL, tp->rflags);
			return SIO_EIO;
		}
		tp->close_fds = t->close_fds;
	}

	if (tp->datagram) {
		tp->slot_size = max_record;
		size_t n = (1u << 20) / tp->slot_size;
		if (n < 4)
			n = 4;
		if (n > SIO_TP_BATCH)
			n = SIO_TP_BATCH;
		/* Callbacks copy one packet per call: a slot each costs 64 KiB
		 * and saves no system call, so they get one (a listener hands
		 * its peer one packet at a time anyway). */
		if (tp->custom)
			n = 1;
		tp->nslots = (unsigned)n;
		if (!tp->custom) {
			tp->slots = malloc(n * tp->slot_size);
			if (!tp->slots)
				goto nomem;
		}
		if (tp->rsock) {
			/* recvmmsg's headers (read() and callbacks need none) */
			tp->rmsgs = calloc(n, sizeof(*tp->rmsgs));
			tp->riov = calloc(n, sizeof(*tp->riov));
			tp->raddr = calloc(n, sizeof(*tp->raddr));
			if (!tp->rmsgs || !tp->riov || !tp->raddr)
				goto nomem;
		}
	} else {
		tp->rcap = 2 * (max_record + SIO_TP_FRAME_HDR);
		tp->wcap = max_record + SIO_TP_FRAME_HDR;
		if (!tp->custom) {
			tp->rbuf = malloc(tp->rcap);
			tp->wbuf = malloc(tp->wcap);
			if (!tp->rbuf || !tp->wbuf)
				goto nomem;
		}
	}
	return 0;
nomem:
	tp->close_fds = 0;
	sio_tp_close(tp);
	return SIO_ENOMEM;
}

/* Receive slot I (allocated: it was read into). */
static uint8_t *slot_at(const sio_tp *tp, unsigned i)
{
	return tp->cslot ? tp->cslot[i] : tp->slots + (size_t)i * tp->slot_size;
}

/* Custom callbacks: slot I, allocated now if needed; NULL without memory. */
static uint8_t *cslot_get(sio_tp *tp, unsigned i)
{
	if (!tp->cslot && !(tp->cslot = calloc(tp->nslots, sizeof(*tp->cslot))))
		return NULL;
	if (!tp->cslot[i])
		tp->cslot[i] = malloc(tp->slot_size);
	return tp->cslot[i];
}

/* Custom stream callbacks: the receive and send buffers, allocated now if
 * needed. 0 or SIO_ENOMEM. */
static int stream_bufs(sio_tp *tp)
{
	if (!tp->rbuf && !(tp->rbuf = malloc(tp->rcap)))
		return SIO_ENOMEM;
	if (!tp->wbuf && !(tp->wbuf = malloc(tp->wcap)))
		return SIO_ENOMEM;
	return 0;
}

void sio_tp_trim(sio_tp *tp)
{
	if (!tp->custom || tp->rdirty || tp->rdirty_hi > tp->rdirty_lo || tp->rpos != tp->rlen ||
	    tp->wpos != tp->wlen)
		return;
	/* what was read was wiped by sio_tp_rx_release(); the rest of the
	 * stream buffers is ciphertext and framing */
	if (tp->cslot) {
		for (unsigned i = 0; i < tp->nslots; i++)
			free(tp->cslot[i]);
		free(tp->cslot);
		tp->cslot = NULL;
	}
	free(tp->rbuf);
	free(tp->wbuf);
	tp->rbuf = tp->wbuf = NULL;
	tp->rpos = tp->rlen = tp->wpos = tp->wlen = 0;
}

size_t sio_tp_held_bytes(const sio_tp *tp)
{
	size_t b = 0;
	if (tp->cslot) {
		b += tp->nslots * sizeof(*tp->cslot);
		for (unsigned i = 0; i < tp->nslots; i++)
			b += tp->cslot[i] ? tp->slot_size : 0;
	}
	if (tp->slots)
		b += tp->nslots * tp->slot_size;
	return b + (tp->rbuf ? tp->rcap : 0) + (tp->wbuf ? tp->wcap : 0);
}

void sio_tp_rx_release(sio_tp *tp)
{
	if (tp->rdirty) {
		for (unsigned i = 0; i < tp->rdirty; i++)
			if (tp->rdirty_len[i])
				sodium_memzero(slot_at(tp, i), tp->rdirty_len[i]);
		memset(tp->rdirty_len, 0, tp->rdirty * sizeof(tp->rdirty_len[0]));
		tp->rdirty = 0;
	}
	if (tp->rdirty_hi > tp->rdirty_lo) {
		sodium_memzero(tp->rbuf + tp->rdirty_lo, tp->rdirty_hi - tp->rdirty_lo);
		tp->rdirty_lo = tp->rdirty_hi = 0;
	}
}

/* Slot I was handed out with LEN bytes. */
static void dirty_slot(sio_tp *tp, unsigned i, size_t len)
{
	tp->rdirty_len[i] = (uint32_t)len;
	if (i >= tp->rdirty)
		tp->rdirty = i + 1;
}

void sio_tp_close(sio_tp *tp)
{
	sio_tp_rx_release(tp);
	if (!tp->custom && tp->rfd >= 0) {
		if (tp->close_fds) {
			close(tp->rfd);
			if (tp->wfd != tp->rfd)
				close(tp->wfd);
		} else {
			(void)fcntl(tp->rfd, F_SETFL, tp->rflags);
			if (tp->wfd != tp->rfd)
				(void)fcntl(tp->wfd, F_SETFL, tp->wflags);
		}
	}
	if (tp->cslot)
		for (unsigned i = 0; i < tp->nslots; i++)
			free(tp->cslot[i]);
	free(tp->cslot);
	tp->cslot = NULL;
	free(tp->slots);
	free(tp->rmsgs);
	free(tp->riov);
	free(tp->raddr);
	free(tp->rbuf);
	free(tp->wbuf);
	tp->slots = NULL;
	tp->rmsgs = NULL;
	tp->riov = NULL;
	tp->raddr = NULL;
	tp->rbuf = tp->wbuf = NULL;
	tp->rfd = tp->wfd = -1;
}

int sio_tp_read_fd(const sio_tp *tp)
{
	if (tp->ended)
		return -1;
	return tp->custom ? tp->cb_poll_fd : tp->rfd;
}

int sio_tp_blocked_fd(const sio_tp *tp)
{
	if (!tp->wblocked || tp->custom)
		return -1;
	return tp->wfd;
}

/* ---- sending ------------------------------------------------------------ */

/* Write errors that only lose this datagram, as a lossy path would. */
static int transient_dgram_error(const sio_tp *tp, int e)
{
	switch (e) {
	case EMSGSIZE:
	case ENOBUFS:
	case EHOSTUNREACH:
	case ENETUNREACH:
	case EHOSTDOWN:
	case ENETDOWN:
	case EPERM:
	case EACCES:
		return 1;
	case ECONNREFUSED:
	case ENOENT:
		/* UDP: an ICMP error about an earlier datagram (counted, see
		 * udp_refused(); the session judges it). A connected UNIX
		 * socket: the peer is gone for good. */
		return tp->family != AF_UNIX || tp->peer_mode != SIO_TP_PEER_CONNECTED;
	}
	return 0;
}

/* ECONNREFUSED on a connected UDP socket: an ICMP port unreachable came
 * back for something we sent. ICMP is not authenticated (anyone who guesses
 * the ports can forge it), so it only loses the datagram here; the session
 * counts these (refused_tx / refused_rx) and decides (sio_core_unreachable).
 * Unconnected sockets never see it (the kernel reports ICMP errors only on
 * connected UDP sockets). */
static int udp_refused(const sio_tp *tp, int e)
{
	return e == ECONNREFUSED && tp->family != AF_UNIX && tp->peer_mode == SIO_TP_PEER_CONNECTED;
}

/* A reset connection or a pipe without reader is the peer gone without a
 * graceful close, like an end of file: SIO_ETRUNCATED. (A peer killed with
 * unread data in its socket resets the connection instead of closing it.)
 * Anything else is SIO_EIO with the errno kept. */
static int fatal_code(const sio_tp *tp, int e)
{
	/* a connected UNIX datagram socket whose peer's socket is gone: the
	 * kernel itself says so (nobody can forge it), the peer is unreachable
	 * (ENOTCONN: a send already found it gone and disconnected us) */
	if (tp->datagram && tp->family == AF_UNIX &&
	    (e == ECONNREFUSED || e == ENOENT || e == ENOTCONN))
		return SIO_EUNREACH;
	return e == ECONNRESET || e == EPIPE ? SIO_ETRUNCATED : SIO_EIO;
}

static int fatal(sio_tp *tp, int e)
{
	tp->saved_errno = e;
	return fatal_code(tp, e);
}

/* The sending side keeps its own errno: it may run concurrently with the
 * receiving side (see transport.h). */
static int fatal_tx(sio_tp *tp, int e)
{
	tp->send_errno = e;
	return fatal_code(tp, e);
}

/* UDP generic segmentation offload: a run of equal-sized datagrams (the
 * last may be shorter) leaves in one sendmsg and one trip through the stack.
 * Returns the datagrams sent, 0 to fall back to sendmmsg, or <0. */
static int send_gso(sio_tp *tp, const struct iovec *pkts, size_t n)
{
	size_t seg = pkts[0].iov_len, k = 1, total = seg;
	while (k < n && k < 64 && pkts[k].iov_len <= seg && total + pkts[k].iov_len <= 65000) {
		total += pkts[k].iov_len;
		k++;
		if (pkts[k - 1].iov_len < seg)
			break; /* only the last may be shorter */
	}
	if (k < 2)
		return 0;
	union {
		char buf[CMSG_SPACE(sizeof(uint16_t))];
		struct cmsghdr align;
	} ctl;
	memset(&ctl, 0, sizeof(ctl));
	struct msghdr mh;
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = (struct iovec *)pkts;
	mh.msg_iovlen = k;
	if (tp->peer_mode != SIO_TP_PEER_CONNECTED) {
		mh.msg_name = &tp->peer;
		mh.msg_namelen = tp->peer_len;
	}
	mh.msg_control = ctl.buf;
	mh.msg_controllen = sizeof(ctl.buf);
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_UDP;
	cm->cmsg_type = UDP_SEGMENT;
	cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
	uint16_t segsz = (uint16_t)seg;
	memcpy(CMSG_DATA(cm), &segsz, sizeof(segsz));
	for (;;) {
		ssize_t r = sendmsg(tp->wfd, &mh, MSG_NOSIGNAL);
		if (r >= 0)
			return (int)k;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			tp->wblocked = 1;
			return 0;
		}
		if (errno == EIO || errno == EINVAL || errno == ENOPROTOOPT || errno == EOPNOTSUPP)
			tp->gso = 0; /* no offload here: plain batches from now on */
		return 0;
	}
}

/* One sendmmsg() of N prepared datagrams: how many left, 0 when the socket
 * is full, 1 when the first one was refused for a transient reason (lost,
 * counted; the caller goes on), or a fatal code. */
static int send_batch(sio_tp *tp, struct mmsghdr *m, size_t n)
{
	for (;;) {
		int r = sendmmsg(tp->wfd, m, (unsigned)n, MSG_NOSIGNAL);
		if (r > 0) {
			/* stopping early means the next one would block (or fail:
			 * the next call reports it) */
			if ((size_t)r < n)
				tp->wblocked = 1;
			return r;
		}
		if (r == 0)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			tp->wblocked = 1;
			return 0;
		}
		if (transient_dgram_error(tp, errno)) {
			tp->drop_send++;
			if (udp_refused(tp, errno))
				tp->refused_tx++;
			return 1;
		}
		return fatal_tx(tp, errno);
	}
}

static int send_prefixed(sio_tp *tp, const struct iovec *pkts, size_t n);
static int send_dgram_to(sio_tp *tp, const struct iovec *pkts, size_t n);

static int send_dgram(sio_tp *tp, const struct iovec *pkts, size_t n)
{
	if (n > SIO_TP_BATCH)
		n = SIO_TP_BATCH;
	tp->wblocked = 0; /* set again below if the kernel is full */
	if (tp->peer_mode == SIO_TP_PEER_LEARN && tp->peer_len == 0) {
		tp->drop_send += n; /* nobody to send to yet */
		return (int)n;
	}
	if (tp->peer_mode == SIO_TP_PEER_LEARN && !tp->peer_valid) {
		/* A tentative address gets at most SIO_TP_AMPLIFICATION times
		 * what came from it: what does not fit is lost, as if on the
		 * path (the peer's retransmissions bring more credit). */
		uint64_t room = SIO_TP_AMPLIFICATION * tp->unval_rx;
		room = room > tp->unval_tx ? room - tp->unval_tx : 0;
		size_t k = 0, bytes = 0;
		while (k < n && bytes + tp->tx_prefix_len + pkts[k].iov_len <= room)
			bytes += tp->tx_prefix_len + pkts[k++].iov_len;
		if (k == 0) {
			tp->drop_send++;
			tp->drop_unvalidated++;
			return 1;
		}
		int r = send_dgram_to(tp, pkts, k);
		for (int i = 0; i < r; i++)
			tp->unval_tx += tp->tx_prefix_len + pkts[i].iov_len;
		return r;
	}
	return send_dgram_to(tp, pkts, n);
}

/* send_dgram() once the peer and the number of packets are settled. */
static int send_dgram_to(sio_tp *tp, const struct iovec *pkts, size_t n)
{
	if (tp->custom && tp->cb_sendv && n > 1) {
		int r = tp->cb_sendv(tp->cb_ctx, pkts, n);
		if (r < 0)
			return fatal_tx(tp, -r);
		if ((size_t)r < n)
			tp->wblocked = 1;
		return r;
	}
	if (tp->custom) {
		size_t i;
		for (i = 0; i < n; i++) {
			ssize_t r = tp->cb_send(tp->cb_ctx, pkts[i].iov_base, pkts[i].iov_len);
			if (r == -EAGAIN || r == -EWOULDBLOCK || r == -EINTR) {
				tp->wblocked = 1;
				break;
			}
			if (r < 0)
				return fatal_tx(tp, (int)-r);
		}
		return (int)i;
	}
	if (!tp->wsock) {
		size_t i;
		for (i = 0; i < n; i++) {
			ssize_t r = write(tp->wfd, pkts[i].iov_base, pkts[i].iov_len);
			if (r < 0 && errno == EINTR) {
				i--;
				continue;
			}
			if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
				tp->wblocked = 1;
				break;
			}
			if (r < 0)
				return fatal_tx(tp, errno);
		}
		return (int)i;
	}
	if (tp->tx_prefix_len)
		return send_prefixed(tp, pkts, n);
	if (tp->gso && n >= 2) {
		int r = send_gso(tp, pkts, n);
		if (r != 0 || tp->wblocked)
			return r;
	}
	struct mmsghdr m[SIO_TP_BATCH];
	memset(m, 0, n * sizeof(m[0]));
	for (size_t i = 0; i < n; i++) {
		m[i].msg_hdr.msg_iov = (struct iovec *)&pkts[i];
		m[i].msg_hdr.msg_iovlen = 1;
		if (tp->peer_mode != SIO_TP_PEER_CONNECTED) {
			m[i].msg_hdr.msg_name = &tp->peer;
			m[i].msg_hdr.msg_namelen = tp->peer_len;
		}
	}
	return send_batch(tp, m, n);
}

/* Datagram socket with a listener prefix: two iovecs per datagram. */
static int send_prefixed(sio_tp *tp, const struct iovec *pkts, size_t n)
{
	struct mmsghdr m[SIO_TP_BATCH];
	struct iovec iov[SIO_TP_BATCH][2];
	memset(m, 0, n * sizeof(m[0]));
	for (size_t i = 0; i < n; i++) {
		iov[i][0].iov_base = tp->tx_prefix;
		iov[i][0].iov_len = tp->tx_prefix_len;
		iov[i][1] = pkts[i];
		m[i].msg_hdr.msg_iov = iov[i];
		m[i].msg_hdr.msg_iovlen = 2;
		if (tp->peer_mode != SIO_TP_PEER_CONNECTED) {
			m[i].msg_hdr.msg_name = &tp->peer;
			m[i].msg_hdr.msg_namelen = tp->peer_len;
		}
	}
	return send_batch(tp, m, n);
}

/* writev that never raises SIGPIPE: sockets use MSG_NOSIGNAL; for pipes the
 * signal is blocked in this thread and a SIGPIPE we caused is consumed. */
static ssize_t stream_writev(sio_tp *tp, struct iovec *iov, int cnt)
{
	if (tp->custom) {
		ssize_t total = 0;
		for (int i = 0; i < cnt; i++) {
			if (iov[i].iov_len == 0)
				continue;
			ssize_t r = tp->cb_send(tp->cb_ctx, iov[i].iov_base, iov[i].iov_len);
			if (r < 0) {
				if (total > 0 && (r == -EAGAIN || r == -EWOULDBLOCK))
					return total;
				errno = (int)-r;
				return -1;
			}
			total += r;
			if ((size_t)r < iov[i].iov_len)
				break;
		}
		return total;
	}
	if (tp->wsock) {
		struct msghdr mh;
		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = iov;
		mh.msg_iovlen = (size_t)cnt;
		return sendmsg(tp->wfd, &mh, MSG_NOSIGNAL);
	}
	sigset_t pipe_set, old, pending;
	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
	sigpending(&pending);
	int was_pending = sigismember(&pending, SIGPIPE);
	ssize_t r = writev(tp->wfd, iov, cnt);
	int e = errno;
	if (r < 0 && e == EPIPE && !was_pending) {
		struct timespec zero = {0, 0};
		(void)sigtimedwait(&pipe_set, NULL, &zero);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	errno = e;
	return r;
}

int sio_tp_flush(sio_tp *tp)
{
	while (tp->wpos < tp->wlen) {
		struct iovec v = {tp->wbuf + tp->wpos, tp->wlen - tp->wpos};
		ssize_t r = stream_writev(tp, &v, 1);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				tp->wblocked = 1;
				return 0;
			}
			return fatal_tx(tp, errno);
		}
		if (r == 0) {
			tp->wblocked = 1;
			return 0;
		}
		tp->wpos += (size_t)r;
	}
	tp->wpos = tp->wlen = 0;
	tp->wblocked = 0;
	return 1;
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int send_stream(sio_tp *tp, const struct iovec *pkts, size_t n)
{
	if (tp->custom && stream_bufs(tp) != 0)
		return SIO_ENOMEM;
	int fr = sio_tp_flush(tp);
	if (fr <= 0)
		return fr;
	if (n > SIO_TP_BATCH)
		n = SIO_TP_BATCH;
	uint8_t hdr[SIO_TP_BATCH][SIO_TP_FRAME_HDR];
	struct iovec iov[2 * SIO_TP_BATCH];
	size_t total = 0;
	for (size_t i = 0; i < n; i++) {
		if (pkts[i].iov_len > tp->max_record)
			return SIO_ETOOBIG;
		put_be32(hdr[i], (uint32_t)pkts[i].iov_len);
		iov[2 * i].iov_base = hdr[i];
		iov[2 * i].iov_len = SIO_TP_FRAME_HDR;
		iov[2 * i + 1] = pkts[i];
		total += SIO_TP_FRAME_HDR + pkts[i].iov_len;
	}
	ssize_t w;
	for (;;) {
		w = stream_writev(tp, iov, (int)(2 * n));
		if (w >= 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			tp->wblocked = 1;
			return 0;
		}
		return fatal_tx(tp, errno);
	}
	if ((size_t)w == total) {
		tp->wblocked = 0;
		return (int)n;
	}
	/* Partial write: whole records written count as sent; the unwritten
	 * tail of the record that was cut is copied, the rest is not taken. */
	size_t done = 0, left = (size_t)w;
	while (left >= SIO_TP_FRAME_HDR + pkts[done].iov_len) {
		left -= SIO_TP_FRAME_HDR + pkts[done].iov_len;
		done++;
	}
	if (left > 0) {
		size_t reclen = SIO_TP_FRAME_HDR + pkts[done].iov_len;
		uint8_t *p = tp->wbuf;
		memcpy(p, hdr[done], SIO_TP_FRAME_HDR);
		memcpy(p + SIO_TP_FRAME_HDR, pkts[done].iov_base, pkts[done].iov_len);
		tp->wpos = left;
		tp->wlen = reclen;
		done++;
	}
	tp->wblocked = 1;
	return (int)done;
}

int sio_tp_send(sio_tp *tp, const struct iovec *pkts, size_t n)
{
	if (n == 0)
		return 0;
	return tp->datagram ? send_dgram(tp, pkts, n) : send_stream(tp, pkts, n);
}

/* ---- receiving ---------------------------------------------------------- */

static int recv_dgram(sio_tp *tp, sio_tp_packet_fn fn, void *ctx)
{
	unsigned n = tp->nslots, got = 0;
	int delivered = 0;
	if (tp->custom || !tp->rsock) {
		uint32_t lens[SIO_TP_BATCH];
		int fresh = 0; /* custom: slot 0 was allocated by this call */
		for (got = 0; got < n; got++) {
			if (got == 0)
				fresh = tp->custom && (!tp->cslot || !tp->cslot[0]);
			uint8_t *slot = tp->custom ? cslot_get(tp, got) : slot_at(tp, got);
			if (!slot) {
				if (got)
					break; /* those first: memory may come back */
				return SIO_ENOMEM;
			}
			ssize_t r = tp->custom ? tp->cb_recv(tp->cb_ctx, slot, tp->slot_size)
					       : read(tp->rfd, slot, tp->slot_size);
			if (r < 0 && !tp->custom)
				r = -errno;
			if (r == -EINTR) {
				got--;
				continue;
			}
			if (r == -EAGAIN || r == -EWOULDBLOCK)
				break;
			if (r < 0) {
				tp->ended = 1;
				return fatal(tp, (int)-r);
			}
			if (r == 0) {
				tp->ended = 1;
				break;
			}
			lens[got] = (uint32_t)r;
		}
		if (fresh && got == 0)
			sio_tp_trim(tp); /* an idle session's poll found nothing: keep none */
		for (unsigned i = 0; i < got; i++) {
			dirty_slot(tp, i, lens[i]);
			fn(ctx, slot_at(tp, i), lens[i], NULL, 0);
			delivered++;
		}
		return tp->ended ? SIO_TP_EOF : delivered;
	}
	for (unsigned i = 0; i < n; i++) {
		tp->riov[i].iov_base = tp->slots + (size_t)i * tp->slot_size;
		tp->riov[i].iov_len = tp->slot_size;
		memset(&tp->rmsgs[i].msg_hdr, 0, sizeof(tp->rmsgs[i].msg_hdr));
		tp->rmsgs[i].msg_hdr.msg_iov = &tp->riov[i];
		tp->rmsgs[i].msg_hdr.msg_iovlen = 1;
		if (tp->peer_mode != SIO_TP_PEER_CONNECTED) {
			tp->rmsgs[i].msg_hdr.msg_name = &tp->raddr[i];
			tp->rmsgs[i].msg_hdr.msg_namelen = sizeof(tp->raddr[i]);
		}
	}
	int r;
	for (;;) {
		r = recvmmsg(tp->rfd, tp->rmsgs, n, MSG_DONTWAIT, NULL);
		if (r >= 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		if (transient_dgram_error(tp, errno)) {
			if (udp_refused(tp, errno))
				tp->refused_rx++;
			return 0; /* a pending ICMP error, now cleared */
		}
		tp->ended = 1;
		return fatal(tp, errno);
	}
	for (int i = 0; i < r; i++) {
		struct msghdr *h = &tp->rmsgs[i].msg_hdr;
		size_t len = tp->rmsgs[i].msg_len;
		if (len == 0 && tp->seqpacket) {
			tp->ended = 1; /* orderly shutdown of a seqpacket socket */
			return SIO_TP_EOF;
		}
		if (len == 0 || (h->msg_flags & MSG_TRUNC)) {
			tp->drop_malformed++;
			continue;
		}
		dirty_slot(tp, (unsigned)i, len);
		if (tp->peer_mode != SIO_TP_PEER_CONNECTED)
			fn(ctx, tp->riov[i].iov_base, len, (const struct sockaddr *)&tp->raddr[i],
			   h->msg_namelen);
		else
			fn(ctx, tp->riov[i].iov_base, len, NULL, 0);
		delivered++;
	}
	return delivered;
}

static int recv_stream(sio_tp *tp, sio_tp_packet_fn fn, void *ctx)
{
	int delivered = 0;
	if (tp->custom && stream_bufs(tp) != 0)
		return SIO_ENOMEM;
	/* Packets of the previous call are released now: compact. */
	if (tp->rpos == tp->rlen) {
		tp->rpos = tp->rlen = 0;
	} else if (tp->rpos > 0 && tp->rcap - tp->rlen < tp->max_record + SIO_TP_FRAME_HDR) {
		memmove(tp->rbuf, tp->rbuf + tp->rpos, tp->rlen - tp->rpos);
		tp->rlen -= tp->rpos;
		tp->rpos = 0;
	}
	for (;;) {
		size_t avail = tp->rlen - tp->rpos, want = tp->rcap - tp->rlen;
		if (tp->exact) {
			size_t need = SIO_TP_FRAME_HDR;
			if (avail >= SIO_TP_FRAME_HDR)
				need += get_be32(tp->rbuf + tp->rpos);
			if (need > SIO_TP_FRAME_HDR + tp->max_record) {
				tp->ended = 1;
				tp->drop_malformed++;
				return SIO_EPROTO;
			}
			want = need - avail;
		}
		ssize_t r;
		if (tp->custom) {
			r = tp->cb_recv(tp->cb_ctx, tp->rbuf + tp->rlen, want);
		} else {
			r = read(tp->rfd, tp->rbuf + tp->rlen, want);
			if (r < 0)
				r = -errno;
		}
		if (r == -EINTR)
			continue;
		if (r == -EAGAIN || r == -EWOULDBLOCK)
			return delivered;
		if (r < 0) {
			tp->ended = 1;
			return fatal(tp, (int)-r);
		}
		if (r == 0) {
			tp->ended = 1;
			return tp->rlen > tp->rpos ? SIO_ETRUNCATED : SIO_TP_EOF;
		}
		tp->rlen += (size_t)r;
		while (tp->rlen - tp->rpos >= SIO_TP_FRAME_HDR) {
			uint32_t len = get_be32(tp->rbuf + tp->rpos);
			if (len > tp->max_record) {
				tp->ended = 1;
				tp->drop_malformed++;
				return SIO_EPROTO;
			}
			if (tp->rlen - tp->rpos < SIO_TP_FRAME_HDR + (size_t)len)
				break;
			uint8_t *p = tp->rbuf + tp->rpos + SIO_TP_FRAME_HDR;
			tp->rpos += SIO_TP_FRAME_HDR + len;
			if (len == 0) {
				tp->drop_malformed++;
				continue;
			}
			if (tp->rdirty_hi == tp->rdirty_lo)
				tp->rdirty_lo = (size_t)(p - tp->rbuf);
			tp->rdirty_hi = tp->rpos;
			fn(ctx, p, len, NULL, 0);
			delivered++;
			if (tp->exact)
				return delivered;
		}
		if (delivered > 0)
			return delivered;
		/* only part of a record so far: room is left for the rest, since
		 * rcap holds two whole records; read again (usually EAGAIN). */
	}
}

int sio_tp_recv(sio_tp *tp, sio_tp_packet_fn fn, void *ctx)
{
	sio_tp_rx_release(tp); /* the previous packets' buffers are reused */
	if (tp->ended)
		return SIO_TP_EOF;
	return tp->datagram ? recv_dgram(tp, fn, ctx) : recv_stream(tp, fn, ctx);
}

static int same_addr(const sio_tp *tp, const struct sockaddr *a, socklen_t alen)
{
	return tp->peer_len == alen && memcmp(&tp->peer, a, alen) == 0;
}

int sio_tp_learn_peer(sio_tp *tp, const struct sockaddr *from, socklen_t fromlen, size_t len,
		      int seen)
{
	if (tp->peer_mode != SIO_TP_PEER_LEARN || !from || fromlen == 0 ||
	    fromlen > sizeof(tp->peer))
		return 0;
	int same = same_addr(tp, from, fromlen);
	if (seen == SIO_TP_SEEN_DATA) {
		tp->peer_valid = 1;
		if (same)
			return 0;
		memcpy(&tp->peer, from, fromlen);
		tp->peer_len = fromlen;
		return 1;
	}
	if (tp->peer_valid || seen == SIO_TP_SEEN_NOTHING)
		return 0;
	/* a key exchange (new or a copy) before validation: replies go to
	 * where it came from, within what that address sent us */
	if (same) {
		tp->unval_rx += len;
		return 0;
	}
	memcpy(&tp->peer, from, fromlen);
	tp->peer_len = fromlen;
	tp->unval_rx = len;
	tp->unval_tx = 0;
	return 1;
}

void sio_transport_fd(sio_transport *t, int rfd, int wfd)
{
	memset(t, 0, sizeof(*t));
	t->kind = SIO_TRANSPORT_AUTO;
	t->read_fd = rfd;
	t->write_fd = wfd;
	t->poll_fd = -1;
}

int sio_tp_detect(const sio_transport *t)
{
	if (!t)
		return SIO_EINVAL;
	if (t->kind == SIO_TRANSPORT_DATAGRAM)
		return 1;
	if (t->kind == SIO_TRANSPORT_STREAM)
		return 0;
	if (t->kind != SIO_TRANSPORT_AUTO)
		return SIO_EINVAL;
	if (t->read_fd < 0 && t->write_fd < 0)
		return t->send && t->recv ? 1 : SIO_EINVAL;
	if (t->read_fd < 0 || t->write_fd < 0)
		return SIO_EINVAL;
	int type = sock_type(t->read_fd);
	return type == SOCK_DGRAM || type == SOCK_SEQPACKET;
}

int sio_tp_is_unix(const sio_transport *t)
{
	if (!t || t->read_fd < 0)
		return 0;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	memset(&ss, 0, sizeof(ss));
	return getsockname(t->read_fd, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_UNIX;
}
