/* Attacks on a worker-pool listener from the network (issue #17's design),
 * against the public API, loopback only:
 *
 * - badsig: one host without any valid key, knowing only an allowed public
 *   key, sends first key-exchange messages of the right layout whose
 *   signatures do not verify, each under a fresh connection id (all naming
 *   one worker), and echoes the cookies the listener asks for. Every such
 *   exchange fails at the signature check; it must be freed at once, not
 *   held until the half-open timeout, or a few hundred datagrams lock every
 *   legitimate newcomer out (drop_half_open) for as long as the attacker
 *   repeats them.
 *
 * Run with an argument to run one probe only. No timing assertions: only
 * generous deadlines. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "secureio.h"

static sio_identity *srv_id, *ida, *idb;
static uint8_t srv_pk[32], pka[32], pkb[32];

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* A UDP socket bound to 127.0.0.HOST (any port), SO_REUSEPORT when REUSE. */
static int udp_bound(struct sockaddr_in *addr, int host, int reuse)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	int one = 1;
	if (reuse)
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	struct sockaddr_in a;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(0x7f000000u | (uint32_t)host);
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

static sio_listener *listener_open(struct sockaddr_in *sa, sio_listener_options *lo, const sio_remote *allowed)
{
	int fd = udp_bound(sa, 1, 1);
	if (fd < 0)
		return NULL;
	lo->close_fd = 1;
	sio_listener *l = NULL;
	if (sio_listener_new(&l, srv_id, fd, allowed, lo) != 0 || sio_listener_start(l) != 0) {
		CHECK(0);
		sio_listener_free(l);
		return NULL;
	}
	return l;
}

/* A real client (its own UDP socket, cookies handled). */
static int client_open(sio_session **c, sio_identity *id, const struct sockaddr_in *sa)
{
	int fd = udp_bound(NULL, 1, 0);
	if (fd < 0)
		return -1;
	sio_transport t;
	sio_transport_fd(&t, fd, fd);
	memcpy(&t.peer, sa, sizeof(*sa));
	t.peer_len = sizeof(*sa);
	t.close_fds = 1;
	sio_options o;
	memset(&o, 0, sizeof(o));
	o.listener_peer = 1;
	o.kx_retry_ns = 200000000;
	sio_remote *srv = NULL;
	if (sio_remote_from_public_key(&srv, srv_pk) != 0)
		return -1;
	int r = sio_session_new(c, id, srv, &t, &o, NULL);
	sio_remote_free(srv);
	if (r != 0) {
		close(fd);
		return r;
	}
	return sio_session_start(*c);
}

/* The first datagram a client of identity ID sends (prefix included). */
static size_t first_datagram(sio_identity *id, uint8_t *out, size_t cap)
{
	struct sockaddr_in cap_sa;
	int cfd = udp_bound(&cap_sa, 1, 0);
	sio_session *c = NULL;
	size_t n = 0;
	if (client_open(&c, id, &cap_sa) == 0) {
		struct pollfd pf = {cfd, POLLIN, 0};
		if (poll(&pf, 1, 10000) == 1) {
			ssize_t r = recv(cfd, out, cap, 0);
			n = r > 0 ? (size_t)r : 0;
		}
	}
	sio_session_free(c);
	close(cfd);
	return n;
}

static void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* Sends a first message under CID from FD (echoing cookie COOKIE, if not
 * NULL). */
static void send_first(int fd, const struct sockaddr_in *sa, const uint8_t *msg, size_t mlen,
		       const uint8_t cid[8], const uint8_t *cookie)
{
	uint8_t d[9 + 17 + 256];
	size_t n = 9;
	d[0] = 0x20;
	memcpy(d + 1, cid, 8);
	if (cookie) {
		d[n++] = 0x22;
		memcpy(d + n, cookie, 16);
		n += 16;
	}
	memcpy(d + n, msg, mlen);
	sendto(fd, d, n + mlen, 0, (const struct sockaddr *)sa, sizeof(*sa));
}

/* ---- bad signatures hold no half-open slot ------------------------------ */

static void test_badsig(void)
{
	enum { HALF = 64, WORKERS = 4 };
	sio_remote *allowed = NULL;
	CHECK_OK(sio_remote_from_public_key(&allowed, pka));
	CHECK_OK(sio_remote_add(allowed, pkb));
	sio_listener_options lo;
	memset(&lo, 0, sizeof(lo));
	lo.workers = WORKERS;
	lo.max_half_open = HALF;
	/* long enough that only a failure, never the timeout, frees a slot
	 * while this test runs */
	lo.half_open_timeout_ns = 120000000000ll;
	struct sockaddr_in sa;
	sio_listener *l = listener_open(&sa, &lo, allowed);
	uint8_t first[512];
	size_t fl = first_datagram(ida, first, sizeof(first));
	CHECK(fl == 9 + 175);
	if (!l || fl != 9 + 175) {
		sio_listener_free(l);
		sio_remote_free(allowed);
		return;
	}
	const uint8_t *msg = first + 9;
	int evil = udp_bound(NULL, 1, 0);
	/* 4 x HALF forged messages: A's identity, its layout, a sender session
	 * id of our own (so no two are alike), the signature no longer
	 * matching; connection ids all naming worker 0 */
	int echoed = 0;
	uint32_t peak = 0;
	static uint8_t forged[4 * HALF][175];
	for (int round = 0; round < 4; round++) {
		/* a burst of HALF, then the cookies asked for are echoed */
		for (uint32_t k = 0; k < HALF; k++) {
			uint32_t i = (uint32_t)round * HALF + k;
			uint8_t cid[8];
			memcpy(forged[i], msg, 175);
			randombytes_buf(forged[i] + 2, 16);
			put_be32(cid, WORKERS * (i + 1));
			memcpy(cid + 4, &i, 4);
			send_first(evil, &sa, forged[i], 175, cid, NULL);
		}
		struct pollfd pf = {evil, POLLIN, 0};
		while (poll(&pf, 1, 200) == 1) {
			uint8_t r[2048];
			ssize_t n = recv(evil, r, sizeof(r), 0);
			uint32_t i;
			memcpy(&i, r + 5, 4);
			if (n == 25 && r[0] == 0x21 && i < 4 * HALF) {
				send_first(evil, &sa, forged[i], 175, r + 1, r + 9);
				echoed++;
			}
		}
		sio_listener_stats st;
		sio_listener_stats_get(l, &st);
		CHECK(st.half_open <= HALF);
		if (st.half_open > peak)
			peak = (uint32_t)st.half_open;
	}
	/* the failed exchanges go (the sweep runs every 100 ms) */
	sio_listener_stats st;
	uint64_t until = now_ms() + 30000;
	do {
		sleep_ms(20);
		sio_listener_stats_get(l, &st);
	} while (st.half_open > 0 && now_ms() < until);
	printf("badsig: %u forged first messages, %d cookies echoed, half_open peak %u, then %llu; "
	       "expired %llu, drop_half_open %llu, cookies_sent %llu\n",
	       4 * HALF, echoed, peak, (unsigned long long)st.half_open, (unsigned long long)st.expired,
	       (unsigned long long)st.drop_half_open, (unsigned long long)st.cookies_sent);
	CHECK_EQ(st.half_open, 0);
	/* a legitimate newcomer gets in */
	sio_session *c = NULL, *s = NULL;
	CHECK_OK(client_open(&c, idb, &sa));
	CHECK_OK(sio_listener_accept(l, &s, 30000));
	if (s && c) {
		uint8_t rk[32];
		CHECK_OK(sio_session_remote_key(s, rk));
		CHECK(memcmp(rk, pkb, 32) == 0);
	}
	sio_session_free(c);
	sio_session_free(s);
	close(evil);
	sio_listener_free(l);
	sio_remote_free(allowed);
}

int main(int argc, char **argv)
{
	alarm(300);
	CHECK_OK(sio_init());
	CHECK_OK(sio_identity_generate(&srv_id));
	CHECK_OK(sio_identity_generate(&ida));
	CHECK_OK(sio_identity_generate(&idb));
	sio_identity_public_key(srv_id, srv_pk);
	sio_identity_public_key(ida, pka);
	sio_identity_public_key(idb, pkb);
	const char *only = argc > 1 ? argv[1] : NULL;
	if (!only || strcmp(only, "badsig") == 0)
		test_badsig();
	sio_identity_free(ida);
	sio_identity_free(idb);
	sio_identity_free(srv_id);
	return check_done("test_listener_attacks");
}
