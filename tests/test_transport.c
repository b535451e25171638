/* I/O layer over real descriptors: stream framing with split and joined
 * writes, oversized records refused, end of file and truncation, partial
 * writes under backpressure, pipes without SIGPIPE, UDP (connected, fixed
 * peer, learned peer) with "don't fragment", UNIX dgram/seqpacket, custom
 * callbacks. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "transport.h"

#define MAXP 64
struct got {
	int n;
	size_t len[MAXP];
	uint8_t data[MAXP][256];
	struct sockaddr_storage from;
	socklen_t fromlen;
};

static void on_pkt(void *ctx, uint8_t *buf, size_t len, const struct sockaddr *from, socklen_t fl)
{
	struct got *g = ctx;
	if (g->n < MAXP) {
		g->len[g->n] = len;
		memcpy(g->data[g->n], buf, len < 256 ? len : 256);
		g->n++;
	}
	if (from && fl <= sizeof(g->from)) {
		memcpy(&g->from, from, fl);
		g->fromlen = fl;
	}
}

/* Receives until N packets arrived or the transport ended (bounded). */
/* Datagrams waiting on plain socket FD, read until none came for 100 ms. */
static int recv_until_quiet(int fd, struct got *g)
{
	for (;;) {
		struct pollfd p = {fd, POLLIN, 0};
		if (poll(&p, 1, 100) <= 0)
			return g->n;
		uint8_t buf[2048];
		ssize_t r = recv(fd, buf, sizeof buf, 0);
		if (r >= 0 && g->n < MAXP)
			g->len[g->n++] = (size_t)r;
	}
}

static int recv_until(sio_tp *tp, struct got *g, int n)
{
	for (int i = 0; i < 2000 && g->n < n; i++) {
		int r = sio_tp_recv(tp, on_pkt, g);
		if (r < 0 || r == SIO_TP_EOF)
			return r;
		if (r == 0) {
			struct pollfd p = {sio_tp_read_fd(tp), POLLIN, 0};
			if (p.fd >= 0)
				poll(&p, 1, 10);
		}
	}
	return g->n;
}

static sio_transport fdt(int r, int w)
{
	sio_transport t;
	sio_transport_fd(&t, r, w);
	return t;
}

static void fill(uint8_t *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(seed * 31 + i * 7);
}

static void test_stream_basic(void)
{
	int sv[2];
	CHECK_OK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	sio_transport ta = fdt(sv[0], sv[0]), tb = fdt(sv[1], sv[1]);
	sio_tp a, b;
	CHECK_OK(sio_tp_open(&a, &ta, 0));
	CHECK_OK(sio_tp_open(&b, &tb, 0));
	CHECK_EQ(a.datagram, 0);
	CHECK(fcntl(sv[0], F_GETFL) & O_NONBLOCK);
	uint8_t p1[10], p2[200], p3[1];
	fill(p1, sizeof p1, 1);
	fill(p2, sizeof p2, 2);
	fill(p3, sizeof p3, 3);
	struct iovec v[3] = {{p1, sizeof p1}, {p2, sizeof p2}, {p3, sizeof p3}};
	CHECK_EQ(sio_tp_send(&a, v, 3), 3); /* joined into one writev */
	struct got g = {0};
	CHECK_EQ(recv_until(&b, &g, 3), 3);
	CHECK_EQ(g.len[0], 10);
	CHECK_EQ(g.len[1], 200);
	CHECK_EQ(g.len[2], 1);
	CHECK(memcmp(g.data[0], p1, 10) == 0 && memcmp(g.data[1], p2, 200) == 0 && g.data[2][0] == p3[0]);
	/* end of file at a record boundary: clean */
	sio_tp_close(&a);
	CHECK(!(fcntl(sv[0], F_GETFL) & O_NONBLOCK)); /* flags restored, fd left open */
	close(sv[0]);
	CHECK_EQ(sio_tp_recv(&b, on_pkt, &g), SIO_TP_EOF);
	CHECK_EQ(sio_tp_read_fd(&b), -1);
	sio_tp_close(&b);
	close(sv[1]);
}

static void test_stream_split_joined(void)
{
	int sv[2];
	CHECK_OK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	sio_transport tb = fdt(sv[1], sv[1]);
	sio_tp b;
	CHECK_OK(sio_tp_open(&b, &tb, 0));
	/* three records written as one byte stream, fed one byte at a time */
	uint8_t wire[64];
	size_t n = 0;
	const size_t lens[3] = {5, 1, 17};
	for (int r = 0; r < 3; r++) {
		wire[n++] = 0;
		wire[n++] = 0;
		wire[n++] = 0;
		wire[n++] = (uint8_t)lens[r];
		fill(wire + n, lens[r], (unsigned)r + 10);
		n += lens[r];
	}
	struct got g = {0};
	for (size_t i = 0; i < n; i++) {
		CHECK_EQ(write(sv[0], wire + i, 1), 1);
		int r = sio_tp_recv(&b, on_pkt, &g);
		CHECK(r >= 0 && r <= 1);
	}
	CHECK_EQ(g.n, 3);
	for (int r = 0; r < 3 && g.n == 3; r++) {
		uint8_t want[32];
		fill(want, lens[r], (unsigned)r + 10);
		CHECK_EQ(g.len[r], lens[r]);
		CHECK(memcmp(g.data[r], want, lens[r]) == 0);
	}
	/* all three joined in one write */
	memset(&g, 0, sizeof g);
	CHECK_EQ(write(sv[0], wire, n), (ssize_t)n);
	CHECK_EQ(recv_until(&b, &g, 3), 3);
	/* a record cut by end of file is a truncation */
	CHECK_EQ(write(sv[0], wire, 6), 6);
	shutdown(sv[0], SHUT_WR);
	memset(&g, 0, sizeof g);
	int r = 0;
	for (int i = 0; i < 100 && r >= 0 && r != SIO_TP_EOF; i++)
		r = sio_tp_recv(&b, on_pkt, &g);
	CHECK_EQ(r, SIO_ETRUNCATED);
	sio_tp_close(&b);
	close(sv[0]);
	close(sv[1]);
}

static void test_stream_oversized(void)
{
	int sv[2];
	CHECK_OK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	sio_transport tb = fdt(sv[1], sv[1]);
	sio_tp b;
	CHECK_OK(sio_tp_open(&b, &tb, 0));
	CHECK_EQ(b.max_record, SIO_TP_MIN_RECORD);
	uint8_t hdr[4] = {0, 1, 0, 1}; /* 65537 > limit */
	CHECK_EQ(write(sv[0], hdr, 4), 4);
	struct got g = {0};
	CHECK_EQ(sio_tp_recv(&b, on_pkt, &g), SIO_EPROTO);
	CHECK_EQ(g.n, 0);
	CHECK_EQ(b.drop_malformed, 1);
	CHECK_EQ(sio_tp_recv(&b, on_pkt, &g), SIO_TP_EOF); /* stays ended */
	/* the sender refuses to frame a record above its limit */
	sio_transport ta = fdt(sv[0], sv[0]);
	sio_tp a;
	CHECK_OK(sio_tp_open(&a, &ta, 1000));
	static uint8_t big[SIO_TP_MIN_RECORD + 1];
	struct iovec v = {big, sizeof big};
	CHECK_EQ(sio_tp_send(&a, &v, 1), SIO_ETOOBIG);
	sio_tp_close(&a);
	sio_tp_close(&b);
	close(sv[0]);
	close(sv[1]);
}

/* Fill the socket until it blocks, so that a record is cut; drain on the other
 * side and check every record arrives whole and in order. */
static void test_stream_backpressure(void)
{
	int sv[2];
	CHECK_OK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	int small = 4096;
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
	sio_transport ta = fdt(sv[0], sv[0]), tb = fdt(sv[1], sv[1]);
	sio_tp a, b;
	CHECK_OK(sio_tp_open(&a, &ta, 0));
	CHECK_OK(sio_tp_open(&b, &tb, 0));
	static uint8_t pk[40][3000];
	for (int i = 0; i < 40; i++)
		fill(pk[i], sizeof pk[i], (unsigned)i);
	int sent = 0, blocked = 0, rcvd = 0, bad = 0;
	for (int round = 0; round < 10000 && rcvd < 40; round++) {
		if (sent < 40) {
			struct iovec v[8];
			int k = 0;
			for (; k < 8 && sent + k < 40; k++) {
				v[k].iov_base = pk[sent + k];
				v[k].iov_len = 1000 + (size_t)(sent + k) * 50;
			}
			int r = sio_tp_send(&a, v, (size_t)k);
			CHECK(r >= 0);
			if (r < k)
				blocked++;
			if (r > 0)
				sent += r;
		} else {
			int fr = sio_tp_flush(&a);
			CHECK(fr >= 0);
		}
		struct got g = {0};
		int r = sio_tp_recv(&b, on_pkt, &g);
		CHECK(r >= 0);
		for (int i = 0; i < g.n; i++) {
			size_t want = 1000 + (size_t)rcvd * 50;
			if (g.len[i] != want || memcmp(g.data[i], pk[rcvd], 256) != 0)
				bad++;
			rcvd++;
		}
	}
	CHECK_EQ(rcvd, 40);
	CHECK_EQ(bad, 0);
	CHECK(blocked > 0);
	sio_tp_close(&a);
	sio_tp_close(&b);
	close(sv[0]);
	close(sv[1]);
}

static void test_pipes(void)
{
	int p1[2], p2[2];
	CHECK_OK(pipe(p1));
	CHECK_OK(pipe(p2));
	sio_transport ta = fdt(p1[0], p2[1]), tb = fdt(p2[0], p1[1]);
	sio_tp a, b;
	CHECK_OK(sio_tp_open(&a, &ta, 0));
	CHECK_OK(sio_tp_open(&b, &tb, 0));
	CHECK_EQ(a.datagram, 0);
	uint8_t x[100];
	fill(x, sizeof x, 9);
	struct iovec v = {x, sizeof x};
	CHECK_EQ(sio_tp_send(&a, &v, 1), 1);
	CHECK_EQ(sio_tp_send(&b, &v, 1), 1);
	struct got g = {0};
	CHECK_EQ(recv_until(&b, &g, 1), 1);
	CHECK(g.len[0] == 100 && memcmp(g.data[0], x, 100) == 0);
	memset(&g, 0, sizeof g);
	CHECK_EQ(recv_until(&a, &g, 1), 1);
	/* writing into a pipe whose reader is gone: the peer went away without
	 * a graceful close (SIO_ETRUNCATED, errno kept), never SIGPIPE */
	sio_tp_close(&b);
	close(p2[0]);
	CHECK_EQ(sio_tp_send(&a, &v, 1), SIO_ETRUNCATED);
	CHECK_EQ(a.send_errno, EPIPE);
	/* and the reader sees end of file */
	close(p1[1]);
	CHECK_EQ(sio_tp_recv(&a, on_pkt, &g), SIO_TP_EOF);
	sio_tp_close(&a);
	close(p1[0]);
	close(p2[1]);
}

static int udp_socket(struct sockaddr_in *addr)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	memset(addr, 0, sizeof *addr);
	addr->sin_family = AF_INET;
	addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t l = sizeof *addr;
	CHECK_OK(bind(fd, (struct sockaddr *)addr, sizeof *addr));
	CHECK_OK(getsockname(fd, (struct sockaddr *)addr, &l));
	return fd;
}

static void test_udp(void)
{
	struct sockaddr_in aa, ba, ca;
	int a = udp_socket(&aa), b = udp_socket(&ba), c = udp_socket(&ca);
	CHECK_OK(connect(a, (struct sockaddr *)&ba, sizeof ba)); /* a: connected */
	sio_transport ta = fdt(a, a), tb = fdt(b, b);             /* b: learns */
	sio_tp A, B;
	CHECK_OK(sio_tp_open(&A, &ta, 1452));
	CHECK_OK(sio_tp_open(&B, &tb, 1452));
	CHECK_EQ(A.datagram, 1);
	CHECK_EQ(A.peer_mode, SIO_TP_PEER_CONNECTED);
	CHECK_EQ(B.peer_mode, SIO_TP_PEER_LEARN);
	int pmtu = -1;
	socklen_t pl = sizeof pmtu;
	CHECK_OK(getsockopt(a, IPPROTO_IP, IP_MTU_DISCOVER, &pmtu, &pl));
	CHECK_EQ(pmtu, IP_PMTUDISC_DO);
	/* nobody known yet: B's packets are counted as lost, not an error */
	uint8_t x[20][300];
	struct iovec v[20];
	for (int i = 0; i < 20; i++) {
		fill(x[i], 300, (unsigned)i);
		v[i].iov_base = x[i];
		v[i].iov_len = 100 + (size_t)i;
	}
	CHECK_EQ(sio_tp_send(&B, v, 2), 2);
	CHECK_EQ(B.drop_send, 2);
	CHECK_EQ(sio_tp_send(&A, v, 20), 20); /* one sendmmsg */
	struct got g = {0};
	CHECK_EQ(recv_until(&B, &g, 20), 20);
	for (int i = 0; i < g.n; i++)
		CHECK(g.len[i] == 100 + (size_t)i && memcmp(g.data[i], x[i], g.len[i]) == 0);
	CHECK_EQ(g.fromlen, sizeof aa);
	CHECK(memcmp(&g.from, &aa, sizeof aa) == 0);
	CHECK_EQ(sio_tp_learn_peer(&B, (struct sockaddr *)&g.from, g.fromlen, 100, SIO_TP_SEEN_DATA), 1);
	CHECK_EQ(sio_tp_learn_peer(&B, (struct sockaddr *)&g.from, g.fromlen, 100, SIO_TP_SEEN_DATA), 0);
	CHECK_EQ(sio_tp_send(&B, v, 3), 3);
	memset(&g, 0, sizeof g);
	CHECK_EQ(recv_until(&A, &g, 3), 3);
	/* a run of equal-sized datagrams (UDP_SEGMENT where offered) still
	 * arrives as separate datagrams, in order, the shorter last one too */
	struct iovec ev[11];
	for (int i = 0; i < 11; i++) {
		ev[i].iov_base = x[i];
		ev[i].iov_len = i < 10 ? 250 : 90;
	}
	CHECK_EQ(sio_tp_send(&A, ev, 11), 11);
	memset(&g, 0, sizeof g);
	CHECK_EQ(recv_until(&B, &g, 11), 11);
	for (int i = 0; i < g.n; i++)
		CHECK(g.len[i] == (i < 10 ? 250u : 90u) && memcmp(g.data[i], x[i], g.len[i]) == 0);
	CHECK_EQ(sio_tp_send(&B, ev, 11), 11); /* unconnected: to the learned peer */
	memset(&g, 0, sizeof g);
	CHECK_EQ(recv_until(&A, &g, 11), 11);
	CHECK_EQ(g.len[10], 90);
	/* a datagram larger than the path with DF set is refused by the kernel:
	 * lost (counted), never fragmented, never fatal */
	static uint8_t huge[65000];
	struct iovec hv = {huge, sizeof huge};
	CHECK_EQ(sio_tp_send(&A, &hv, 1), 1);
	/* fixed peer on an unconnected socket: C sends to B without learning */
	sio_transport tc = fdt(c, c);
	memcpy(&tc.peer, &ba, sizeof ba);
	tc.peer_len = sizeof ba;
	sio_tp C;
	CHECK_OK(sio_tp_open(&C, &tc, 1452));
	CHECK_EQ(C.peer_mode, SIO_TP_PEER_FIXED);
	CHECK_EQ(sio_tp_send(&C, v, 1), 1);
	memset(&g, 0, sizeof g);
	int r = recv_until(&B, &g, 1);
	/* the 65000-byte datagram may or may not have been delivered over lo
	 * (MTU 65536); either way C's packet arrives, from C's address */
	CHECK(r >= 1);
	CHECK(memcmp(&g.from, &ca, sizeof ca) == 0);
	CHECK_EQ(sio_tp_learn_peer(&C, (struct sockaddr *)&g.from, g.fromlen, 100, SIO_TP_SEEN_DATA),
		 0); /* fixed */
	sio_tp_close(&A);
	sio_tp_close(&B);
	sio_tp_close(&C);
	close(a);
	close(b);
	close(c);
}

/* IPv6 UDP gets "don't fragment" too (skipped where ::1 is unavailable). */
static void test_udp6(void)
{
	int fd = socket(AF_INET6, SOCK_DGRAM, 0);
	struct sockaddr_in6 a;
	memset(&a, 0, sizeof a);
	a.sin6_family = AF_INET6;
	a.sin6_addr = in6addr_loopback;
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0) {
		fprintf(stderr, "no IPv6 loopback: IPv6 case skipped\n");
		if (fd >= 0)
			close(fd);
		return;
	}
	sio_transport t = fdt(fd, fd);
	sio_tp tp;
	CHECK_OK(sio_tp_open(&tp, &t, 1452));
	int v = -1;
	socklen_t l = sizeof v;
	CHECK_OK(getsockopt(fd, IPPROTO_IPV6, IPV6_MTU_DISCOVER, &v, &l));
	CHECK_EQ(v, IPV6_PMTUDISC_DO);
	CHECK_EQ(tp.peer_mode, SIO_TP_PEER_LEARN);
	sio_tp_close(&tp);
	close(fd);
}

static void test_unix_dgram_seqpacket(void)
{
	int sv[2];
	CHECK_OK(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv));
	sio_transport ta = fdt(sv[0], sv[0]), tb = fdt(sv[1], sv[1]);
	sio_tp a, b;
	CHECK_OK(sio_tp_open(&a, &ta, 0));
	CHECK_OK(sio_tp_open(&b, &tb, 0));
	CHECK_EQ(a.datagram, 1);
	CHECK_EQ(a.peer_mode, SIO_TP_PEER_CONNECTED);
	static uint8_t big[60000];
	fill(big, sizeof big, 5);
	struct iovec v[2] = {{big, sizeof big}, {big, 7}};
	CHECK_EQ(sio_tp_send(&a, v, 2), 2);
	struct got g = {0};
	CHECK_EQ(recv_until(&b, &g, 2), 2);
	CHECK(g.len[0] == 60000 && g.len[1] == 7 && memcmp(g.data[0], big, 256) == 0);
	close(sv[0]);
	sio_tp_close(&a); /* close_fds 0: flags restore on a closed fd is harmless */
	CHECK_EQ(sio_tp_recv(&b, on_pkt, &g), SIO_TP_EOF);
	sio_tp_close(&b);
	close(sv[1]);

	CHECK_OK(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv));
	ta = fdt(sv[0], sv[0]);
	tb = fdt(sv[1], sv[1]);
	tb.close_fds = 1;
	CHECK_OK(sio_tp_open(&a, &ta, 0));
	CHECK_OK(sio_tp_open(&b, &tb, 0));
	CHECK_EQ(b.datagram, 1);
	/* a datagram larger than the receive slot is dropped as malformed */
	static uint8_t huger[SIO_TP_MIN_RECORD + 100];
	int sz = 1 << 20;
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
	if (send(sv[0], huger, sizeof huger, 0) == (ssize_t)sizeof huger) {
		memset(&g, 0, sizeof g);
		CHECK_EQ(sio_tp_recv(&b, on_pkt, &g), 0);
		CHECK_EQ(b.drop_malformed, 1);
	}
	CHECK_EQ(sio_tp_send(&a, v + 1, 1), 1);
	memset(&g, 0, sizeof g);
	CHECK_EQ(recv_until(&b, &g, 1), 1);
	/* the peer vanished: sending on a connected UNIX datagram socket fails,
	 * and says the peer is unreachable (was a bare SIO_EIO) */
	sio_tp_close(&b); /* closes sv[1] */
	CHECK_EQ(sio_tp_send(&a, v + 1, 1), SIO_EUNREACH);
	CHECK(a.send_errno == ECONNREFUSED || a.send_errno == ENOTCONN);
	sio_tp_close(&a);
	close(sv[0]);
}

/* A custom transport: an in-memory byte or packet pipe, delivering at most
 * CHUNK bytes per recv call (to split records). */
struct mem {
	uint8_t buf[1 << 16];
	size_t len[256];
	size_t head, tail, bytes; /* packet queue / byte stream */
	size_t chunk;
	int closed;
};
static struct mem m_ab;

static ssize_t mem_send(void *ctx, const void *buf, size_t len)
{
	struct mem *m = ctx;
	if (m->bytes + len > sizeof m->buf)
		return -EAGAIN;
	memcpy(m->buf + m->bytes, buf, len);
	m->bytes += len;
	m->len[m->tail++ % 256] = len;
	return (ssize_t)len;
}

static ssize_t mem_recv_stream(void *ctx, void *buf, size_t len)
{
	struct mem *m = ctx;
	if (m->head == m->bytes)
		return m->closed ? 0 : -EAGAIN;
	size_t n = m->bytes - m->head;
	if (n > len)
		n = len;
	if (n > m->chunk)
		n = m->chunk;
	memcpy(buf, m->buf + m->head, n);
	m->head += n;
	return (ssize_t)n;
}

static void test_custom(void)
{
	sio_transport t;
	memset(&t, 0, sizeof t);
	t.read_fd = t.write_fd = -1;
	t.poll_fd = -1;
	t.kind = SIO_TRANSPORT_STREAM;
	t.send = mem_send;
	t.recv = mem_recv_stream;
	t.ctx = &m_ab;
	m_ab.chunk = 3;
	sio_tp a;
	CHECK_OK(sio_tp_open(&a, &t, 0));
	CHECK_EQ(a.datagram, 0);
	CHECK_EQ(sio_tp_read_fd(&a), -1);
	uint8_t x[50];
	fill(x, sizeof x, 4);
	struct iovec v[2] = {{x, 50}, {x, 9}};
	CHECK_EQ(sio_tp_send(&a, v, 2), 2); /* loops back into itself */
	CHECK_EQ(m_ab.bytes, 50 + 9 + 8);
	struct got g = {0};
	for (int i = 0; i < 100 && g.n < 2; i++)
		CHECK(sio_tp_recv(&a, on_pkt, &g) >= 0);
	CHECK_EQ(g.n, 2);
	CHECK(g.len[0] == 50 && g.len[1] == 9 && memcmp(g.data[0], x, 50) == 0);
	m_ab.closed = 1;
	CHECK_EQ(sio_tp_recv(&a, on_pkt, &g), SIO_TP_EOF);
	sio_tp_close(&a);
	/* missing callbacks */
	t.recv = NULL;
	CHECK_EQ(sio_tp_open(&a, &t, 0), SIO_EINVAL);
	t.recv = mem_recv_stream;
	t.kind = (sio_transport_kind)7;
	CHECK_EQ(sio_tp_open(&a, &t, 0), SIO_EINVAL);
}

static void test_exact(void)
{
	int sv[2];
	CHECK_OK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	sio_transport tb = fdt(sv[1], sv[1]);
	sio_tp b;
	CHECK_OK(sio_tp_open(&b, &tb, 0));
	b.exact = 1;
	uint8_t wire[] = {0, 0, 0, 2, 'h', 'i', 0, 0, 0, 1, '!', 'X', 'Y', 'Z'};
	CHECK_EQ(write(sv[0], wire, sizeof wire), (ssize_t)sizeof wire);
	struct got g = {0};
	CHECK_EQ(sio_tp_recv(&b, on_pkt, &g), 1);
	CHECK_EQ(sio_tp_recv(&b, on_pkt, &g), 1);
	CHECK_EQ(g.n, 2);
	/* bytes after the records were not consumed: they are still the caller's */
	sio_tp_close(&b);
	char rest[8];
	CHECK_EQ(read(sv[1], rest, sizeof rest), 3);
	CHECK(memcmp(rest, "XYZ", 3) == 0);
	close(sv[0]);
	close(sv[1]);
}

/* Learn mode (docs/PROTOCOL.md §4.5): a key exchange points a tentative
 * address, which gets at most three times the bytes it sent us; only fresh
 * authenticated data validates an address or moves a validated one; once
 * validated, no key-exchange message (new or a copy) moves anything. */
static void test_learn(void)
{
	struct sockaddr_in aa, ba, ca;
	int a = udp_socket(&aa), b = udp_socket(&ba), c = udp_socket(&ca);
	const struct sockaddr *A = (struct sockaddr *)&aa, *C = (struct sockaddr *)&ca;
	sio_transport tb = fdt(b, b);
	sio_tp B;
	CHECK_OK(sio_tp_open(&B, &tb, 1452));
	CHECK_EQ(B.peer_mode, SIO_TP_PEER_LEARN);
	static uint8_t x[8][300];
	struct iovec v[8];
	for (int i = 0; i < 8; i++) {
		fill(x[i], 300, (unsigned)i);
		v[i].iov_base = x[i];
		v[i].iov_len = 200;
	}
	/* a dropped packet points nothing */
	CHECK_EQ(sio_tp_learn_peer(&B, A, sizeof aa, 175, SIO_TP_SEEN_NOTHING), 0);
	CHECK_EQ(B.peer_len, 0);
	/* 175 bytes from a: 525 may go back, i.e. two 200-byte datagrams */
	CHECK_EQ(sio_tp_learn_peer(&B, A, sizeof aa, 175, SIO_TP_SEEN_KX), 1);
	CHECK_EQ(sio_tp_send(&B, v, 3), 2);
	CHECK_EQ(sio_tp_send(&B, v + 2, 1), 1); /* consumed: lost */
	CHECK_EQ(B.drop_unvalidated, 1);
	struct got g = {0};
	CHECK_EQ(recv_until_quiet(a, &g), 2);
	/* a's retransmission (a repeat) brings 525 more: 650 left, three */
	CHECK_EQ(sio_tp_learn_peer(&B, A, sizeof aa, 175, SIO_TP_SEEN_REPEAT), 0);
	CHECK_EQ(sio_tp_send(&B, v, 4), 3);
	CHECK_EQ(sio_tp_send(&B, v + 3, 1), 1);
	CHECK_EQ(B.drop_unvalidated, 2);
	memset(&g, 0, sizeof g);
	CHECK_EQ(recv_until_quiet(a, &g), 3);
	/* a dropped packet from a third address moves nothing */
	CHECK_EQ(sio_tp_learn_peer(&B, C, sizeof ca, 175, SIO_TP_SEEN_NOTHING), 0);
	CHECK(memcmp(&B.peer, &aa, sizeof aa) == 0);
	/* before validation, a key exchange (even a copy) from c points the
	 * replies there, with c's own budget; a new one from a points back */
	CHECK_EQ(sio_tp_learn_peer(&B, C, sizeof ca, 175, SIO_TP_SEEN_REPEAT), 1);
	CHECK(memcmp(&B.peer, &ca, sizeof ca) == 0);
	CHECK_EQ(sio_tp_send(&B, v, 3), 2);
	memset(&g, 0, sizeof g);
	CHECK_EQ(recv_until_quiet(c, &g), 2);
	CHECK_EQ(sio_tp_learn_peer(&B, A, sizeof aa, 175, SIO_TP_SEEN_KX), 1);
	CHECK_EQ(sio_tp_learn_peer(&B, C, sizeof ca, 175, SIO_TP_SEEN_KX), 1);
	/* authenticated data from a: validated, no bound any more */
	CHECK_EQ(sio_tp_learn_peer(&B, A, sizeof aa, 60, SIO_TP_SEEN_DATA), 1);
	CHECK_EQ(B.peer_valid, 1);
	CHECK_EQ(sio_tp_send(&B, v, 8), 8);
	memset(&g, 0, sizeof g);
	CHECK_EQ(recv_until_quiet(a, &g), 8);
	/* validated: key exchanges and repeats from c move nothing */
	CHECK_EQ(sio_tp_learn_peer(&B, C, sizeof ca, 175, SIO_TP_SEEN_KX), 0);
	CHECK_EQ(sio_tp_learn_peer(&B, C, sizeof ca, 175, SIO_TP_SEEN_REPEAT), 0);
	CHECK(memcmp(&B.peer, &aa, sizeof aa) == 0);
	/* fresh data from c: the peer roamed there */
	CHECK_EQ(sio_tp_learn_peer(&B, C, sizeof ca, 60, SIO_TP_SEEN_DATA), 1);
	CHECK(memcmp(&B.peer, &ca, sizeof ca) == 0);
	CHECK_EQ(sio_tp_send(&B, v, 4), 4);
	memset(&g, 0, sizeof g);
	CHECK_EQ(recv_until_quiet(c, &g), 4);
	sio_tp_close(&B);
	close(a);
	close(b);
	close(c);
}

int main(void)
{
	alarm(60);
	signal(SIGPIPE, SIG_DFL); /* a SIGPIPE would kill the test */
	test_stream_basic();
	test_stream_split_joined();
	test_stream_oversized();
	test_stream_backpressure();
	test_pipes();
	test_udp();
	test_learn();
	test_udp6();
	test_unix_dgram_seqpacket();
	test_custom();
	test_exact();
	return check_done("test_transport");
}
