/* Limit rows: what the machine gives without our protocol, measured in the
 * same run as the session rows so that the targets are ratios.
 *  - RawSeqpacketRoundTrip1: 1-byte ping-pong between two threads over a
 *    UNIX SOCK_SEQPACKET pair, no crypto (one op = one round trip).
 *  - RawUDP1300: 1300-byte datagrams over 127.0.0.1, sendmmsg on one
 *    thread, recvmmsg on another, a bounded window of datagrams in flight so
 *    the receive buffer never overflows (one op = one datagram delivered).
 *  - RawSeqpacket64000: 64000-byte messages one way through a UNIX
 *    SOCK_SEQPACKET pair like the session rows' (default buffers), send() on
 *    the bench thread, recv() on a reader thread, no crypto; the clock stops
 *    when the reader has the last one, each checked for size and counter
 *    (one op = one message delivered). The kernel's share of an async
 *    64000-byte message: R in the two-core pipeline limit of issue #16.
 *  - AEADSealOpen{64000,1300}: the library's packet AEAD (src/core/aead.h) seals
 *    then opens one buffer on one core; SodiumXChaChaSealOpen{...}: the same
 *    with libsodium's crypto_aead_xchacha20poly1305_ietf. MB/s counts the
 *    bytes sealed plus the bytes opened (2 x size per op): the rate at which
 *    one core does the crypto of a sender and a receiver. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "aead.h"
#include "bench.h"

/* ---- raw seqpacket round trip ------------------------------------------------ */

struct rt {
	int fd[2];
	pthread_t echo;
};

static void *rt_echo(void *arg)
{
	struct rt *t = arg;
	char b[64];
	for (;;) {
		ssize_t n = recv(t->fd[1], b, sizeof b, 0);
		if (n <= 0 || (n == 1 && b[0] == 'q'))
			break;
		if (send(t->fd[1], b, (size_t)n, MSG_NOSIGNAL) != n)
			break;
	}
	return NULL;
}

static int rt_setup(void **st, const struct bench_row *r)
{
	struct rt *t = calloc(1, sizeof(*t));
	if (!t || socketpair(AF_UNIX, SOCK_SEQPACKET, 0, t->fd)) {
		bench_fail("socketpair: %s", strerror(errno));
		free(t);
		return -1;
	}
	if (pthread_create(&t->echo, NULL, rt_echo, t)) {
		close(t->fd[0]);
		close(t->fd[1]);
		free(t);
		return -1;
	}
	*st = t;
	return 0;
}

static int rt_run(void *st, uint64_t n)
{
	struct rt *t = st;
	char b = 'x', in;
	bench_start();
	for (uint64_t i = 0; i < n; i++) {
		if (send(t->fd[0], &b, 1, MSG_NOSIGNAL) != 1 || recv(t->fd[0], &in, 1, 0) != 1) {
			bench_stop();
			bench_fail("round trip: %s", strerror(errno));
			return -1;
		}
	}
	bench_stop();
	return 0;
}

static void rt_teardown(void *st)
{
	struct rt *t = st;
	char q = 'q';
	(void)!send(t->fd[0], &q, 1, MSG_NOSIGNAL);
	pthread_join(t->echo, NULL);
	close(t->fd[0]);
	close(t->fd[1]);
	free(t);
}

/* ---- raw UDP ------------------------------------------------------------------- */

#define UDP_SIZE 1300
#define UDP_BATCH 32

struct udp {
	int tx, rx;
	uint64_t window; /* datagrams in flight */
	pthread_t rxth;
	_Atomic uint64_t received;
	atomic_int stop;
	struct bench_gate *gate;
};

size_t bench_udp_pair(int *a, int *b); /* rows_session.c: window in bytes, 0 on error */

static void *udp_rx(void *arg)
{
	struct udp *u = arg;
	static __thread uint8_t bufs[UDP_BATCH][2048];
	struct mmsghdr mm[UDP_BATCH];
	struct iovec iov[UDP_BATCH];
	for (int i = 0; i < UDP_BATCH; i++) {
		iov[i].iov_base = bufs[i];
		iov[i].iov_len = sizeof bufs[i];
		memset(&mm[i], 0, sizeof mm[i]);
		mm[i].msg_hdr.msg_iov = &iov[i];
		mm[i].msg_hdr.msg_iovlen = 1;
	}
	while (!atomic_load(&u->stop)) {
		int k = recvmmsg(u->rx, mm, UDP_BATCH, MSG_WAITFORONE, NULL);
		if (k <= 0)
			continue; /* timeout (SO_RCVTIMEO) or EINTR: check stop */
		atomic_fetch_add(&u->received, (uint64_t)k);
		bench_gate_notify(u->gate);
	}
	return NULL;
}

static int udp_setup(void **st, const struct bench_row *r)
{
	struct udp *u = calloc(1, sizeof(*u));
	if (!u)
		return -1;
	size_t w = bench_udp_pair(&u->tx, &u->rx);
	u->window = w / UDP_SIZE < UDP_BATCH ? UDP_BATCH : w / UDP_SIZE;
	if (!w) {
		bench_fail("udp sockets: %s", strerror(errno));
		free(u);
		return -1;
	}
	struct timeval tv = {0, 100000};
	setsockopt(u->rx, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	u->gate = bench_gate_new();
	if (!u->gate || pthread_create(&u->rxth, NULL, udp_rx, u)) {
		close(u->tx);
		close(u->rx);
		bench_gate_free(u->gate);
		free(u);
		return -1;
	}
	*st = u;
	return 0;
}

static int udp_run(void *st, uint64_t n)
{
	struct udp *u = st;
	static uint8_t payload[UDP_SIZE];
	struct mmsghdr mm[UDP_BATCH];
	struct iovec iov = {payload, UDP_SIZE};
	for (int i = 0; i < UDP_BATCH; i++) {
		memset(&mm[i], 0, sizeof mm[i]);
		mm[i].msg_hdr.msg_iov = &iov;
		mm[i].msg_hdr.msg_iovlen = 1;
	}
	uint64_t base = atomic_load(&u->received);
	uint64_t sent = 0;
	bench_start();
	while (sent < n) {
		/* window: wait until enough of what we sent arrived */
		uint64_t room_at = sent + UDP_BATCH > u->window ? base + sent + UDP_BATCH - u->window : 0;
		if (room_at && bench_gate_wait(u->gate, &u->received, room_at, 2000)) {
			bench_stop();
			bench_fail("raw UDP: datagrams lost (%llu of %llu arrived)",
				   (unsigned long long)(atomic_load(&u->received) - base),
				   (unsigned long long)sent);
			return -1;
		}
		unsigned k = n - sent < UDP_BATCH ? (unsigned)(n - sent) : UDP_BATCH;
		int m = sendmmsg(u->tx, mm, k, 0);
		if (m < 0) {
			if (errno == EAGAIN || errno == ENOBUFS || errno == EINTR)
				continue;
			bench_stop();
			bench_fail("sendmmsg: %s", strerror(errno));
			return -1;
		}
		sent += (uint64_t)m;
	}
	int rc = bench_gate_wait(u->gate, &u->received, base + n, 2000);
	bench_stop();
	if (rc) {
		bench_fail("raw UDP: datagrams lost (%llu of %llu arrived)",
			   (unsigned long long)(atomic_load(&u->received) - base), (unsigned long long)n);
		return -1;
	}
	return 0;
}

static void udp_teardown(void *st)
{
	struct udp *u = st;
	atomic_store(&u->stop, 1);
	pthread_join(u->rxth, NULL);
	close(u->tx);
	close(u->rx);
	bench_gate_free(u->gate);
	free(u);
}

/* ---- raw seqpacket stream -------------------------------------------------------- */

#define RS_SIZE 64000

struct rs {
	int fd[2];
	pthread_t rx;
	int rx_started;
	uint64_t sent;                  /* bench thread only */
	_Atomic uint64_t received, bad; /* reader thread */
	struct bench_gate *gate;
	uint8_t out[RS_SIZE], in[RS_SIZE + 1];
};

static void *rs_rx(void *arg)
{
	struct rs *t = arg;
	uint64_t expect = 0;
	for (;;) {
		ssize_t n = recv(t->fd[1], t->in, sizeof t->in, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break; /* the writer's end closed at teardown */
		uint64_t v;
		memcpy(&v, t->in, sizeof v);
		if (n != RS_SIZE || v != expect)
			atomic_fetch_add(&t->bad, 1);
		expect++;
		atomic_fetch_add(&t->received, 1);
		bench_gate_notify(t->gate);
	}
	return NULL;
}

static void rs_teardown(void *st)
{
	struct rs *t = st;
	if (t->fd[0] >= 0)
		shutdown(t->fd[0], SHUT_RDWR);
	if (t->rx_started)
		pthread_join(t->rx, NULL);
	for (int i = 0; i < 2; i++)
		if (t->fd[i] >= 0)
			close(t->fd[i]);
	bench_gate_free(t->gate);
	free(t);
}

static int rs_setup(void **st, const struct bench_row *r)
{
	(void)r;
	struct rs *t = calloc(1, sizeof(*t));
	if (!t)
		return -1;
	t->fd[0] = t->fd[1] = -1;
	*st = t;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, t->fd)) {
		bench_fail("socketpair: %s", strerror(errno));
		rs_teardown(t);
		return -1;
	}
	memset(t->out, 0x5a, sizeof t->out);
	t->gate = bench_gate_new();
	if (!t->gate || pthread_create(&t->rx, NULL, rs_rx, t)) {
		rs_teardown(t);
		return -1;
	}
	t->rx_started = 1;
	return 0;
}

static int rs_run(void *st, uint64_t n)
{
	struct rs *t = st;
	uint64_t base = t->sent, bad0 = atomic_load(&t->bad);
	bench_start();
	for (uint64_t i = 0; i < n; i++) {
		memcpy(t->out, &t->sent, sizeof t->sent);
		ssize_t w = send(t->fd[0], t->out, RS_SIZE, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR) {
			i--;
			continue;
		}
		if (w != RS_SIZE) {
			bench_stop();
			bench_fail("send: %s", w < 0 ? strerror(errno) : "short");
			return -1;
		}
		t->sent++;
	}
	int lost = bench_gate_wait(t->gate, &t->received, base + n, 5000);
	bench_stop();
	if (lost || atomic_load(&t->received) != base + n || atomic_load(&t->bad) != bad0) {
		bench_fail("reader got %llu of %llu messages, %llu of the wrong size or out of order",
			   (unsigned long long)(atomic_load(&t->received) - base),
			   (unsigned long long)n, (unsigned long long)(atomic_load(&t->bad) - bad0));
		return -1;
	}
	return 0;
}

/* ---- AEAD ------------------------------------------------------------------------ */

struct aead_st {
	sio_aead enc, dec;
	uint8_t key[32], prefix[16], sodium_nonce[24];
	uint8_t *buf;
	size_t len;
	uint64_t pn;
};

static int aead_setup(void **st, const struct bench_row *r)
{
	struct aead_st *a = calloc(1, sizeof(*a));
	if (!a)
		return -1;
	a->len = r->arg;
	a->buf = malloc(a->len + crypto_aead_xchacha20poly1305_ietf_ABYTES);
	if (!a->buf || sio_aead_init(&a->enc, 1) || sio_aead_init(&a->dec, 0)) {
		bench_fail("sio_aead_init failed");
		free(a->buf);
		free(a);
		return -1;
	}
	randombytes_buf(a->key, sizeof a->key);
	randombytes_buf(a->prefix, sizeof a->prefix);
	memcpy(a->sodium_nonce, a->prefix, 16);
	randombytes_buf(a->buf, a->len);
	if (sio_aead_setkey(&a->enc, a->key, a->prefix) || sio_aead_setkey(&a->dec, a->key, a->prefix)) {
		bench_fail("sio_aead_setkey failed");
		return -1;
	}
	*st = a;
	return 0;
}

static int aead_run(void *st, uint64_t n)
{
	struct aead_st *a = st;
	uint8_t hdr[5] = {1, 2, 3, 4, 5}, tag[SIO_AEAD_TAGBYTES];
	bench_start();
	for (uint64_t i = 0; i < n; i++) {
		uint64_t pn = a->pn++;
		if (sio_aead_seal(&a->enc, pn, hdr, sizeof hdr, a->buf, a->len, tag) ||
		    sio_aead_open(&a->dec, pn, hdr, sizeof hdr, a->buf, a->len, tag)) {
			bench_stop();
			bench_fail("seal/open failed at packet %llu", (unsigned long long)pn);
			return -1;
		}
	}
	bench_stop();
	return 0;
}

static int sodium_run(void *st, uint64_t n)
{
	struct aead_st *a = st;
	uint8_t hdr[5] = {1, 2, 3, 4, 5}, tag[crypto_aead_xchacha20poly1305_ietf_ABYTES];
	bench_start();
	for (uint64_t i = 0; i < n; i++) {
		uint64_t pn = a->pn++;
		for (int k = 0; k < 8; k++)
			a->sodium_nonce[16 + k] = (uint8_t)(pn >> (8 * k));
		if (crypto_aead_xchacha20poly1305_ietf_encrypt_detached(a->buf, tag, NULL, a->buf, a->len,
									hdr, sizeof hdr, NULL,
									a->sodium_nonce, a->key) ||
		    crypto_aead_xchacha20poly1305_ietf_decrypt_detached(a->buf, NULL, a->buf, a->len, tag,
									hdr, sizeof hdr, a->sodium_nonce,
									a->key)) {
			bench_stop();
			bench_fail("libsodium seal/open failed");
			return -1;
		}
	}
	bench_stop();
	return 0;
}

static void aead_teardown(void *st)
{
	struct aead_st *a = st;
	sio_aead_free(&a->enc);
	sio_aead_free(&a->dec);
	sodium_memzero(a->key, sizeof a->key);
	free(a->buf);
	free(a);
}

const struct bench_row bench_rows_limit[] = {
	{"RawSeqpacketRoundTrip1", "limit", 1, 0, rt_setup, rt_run, rt_teardown, 0},
	{"RawSeqpacket64000", "limit", RS_SIZE, RS_SIZE, rs_setup, rs_run, rs_teardown, 0},
	{"RawUDP1300", "limit", UDP_SIZE, UDP_SIZE, udp_setup, udp_run, udp_teardown, 0},
	{"AEADSealOpen64000", "limit", 64000, 2 * 64000, aead_setup, aead_run, aead_teardown, 0},
	{"AEADSealOpen1300", "limit", 1300, 2 * 1300, aead_setup, aead_run, aead_teardown, 0},
	{"SodiumXChaChaSealOpen64000", "limit", 64000, 2 * 64000, aead_setup, sodium_run,
	 aead_teardown, 0},
	{"SodiumXChaChaSealOpen1300", "limit", 1300, 2 * 1300, aead_setup, sodium_run, aead_teardown,
	 0},
	{NULL, NULL, 0, 0, NULL, NULL, NULL, 0},
};
