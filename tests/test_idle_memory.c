/* An idle listener peer session holds no traffic buffers (issue #17): after
 * messages both ways, once it has been quiet for SIO_TRIM_NS its core has
 * returned the packet rings, token ring, AEAD contexts and reassembly table
 * (sio_core_held_bytes) and its custom transport the receive slot
 * (sio_tp_held_bytes); it still works afterwards, and goes idle again.
 * Loopback UDP, listener and its peers in event-loop style, driven from
 * this thread; the clients are ordinary blocking sessions. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "lib/lclient.h"
#include "core_int.h"
#include "session_int.h"

enum { NC = 3 };

static sio_identity *srv_id;
static uint8_t srv_pk[32];

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void drive(sio_listener *l, sio_session **s, int n)
{
	struct pollfd pf = {sio_listener_fd(l), POLLIN, 0};
	int to = sio_listener_timeout_ms(l);
	for (int i = 0; i < n; i++) {
		int t = sio_session_timeout_ms(s[i]);
		if (t >= 0 && (to < 0 || t < to))
			to = t;
	}
	poll(&pf, 1, to < 0 || to > 20 ? 20 : to);
	CHECK_OK(sio_listener_process(l));
	for (int i = 0; i < n; i++)
		sio_session_process(s[i]);
}

static size_t held(sio_session *s)
{
	return sio_core_held_bytes(s->core) + sio_tp_held_bytes(&s->tp);
}

/* Messages both ways on every session (each client's message comes back
 * to it); afterwards each peer holds buffers. */
static void traffic(sio_listener *l, sio_session **s, sio_session **c, int round)
{
	char msg[32], b[64];
	int got = 0, have[NC] = {0};
	for (int i = 0; i < NC; i++) {
		int len = snprintf(msg, sizeof msg, "ping %d %d", round, i);
		CHECK_EQ(sio_write(c[i], msg, (size_t)len), len);
	}
	uint64_t end = mono_ms() + 20000;
	while (got < NC && mono_ms() < end) {
		drive(l, s, NC);
		for (int i = 0; i < NC; i++) {
			if (have[i])
				continue;
			ssize_t r = sio_read_timeout(s[i], b, sizeof b - 1, 0);
			if (r > 0) {
				/* accepted in any order: echo what came */
				int len = snprintf(msg, sizeof msg, "ping %d ", round);
				CHECK_EQ(memcmp(b, msg, (size_t)len), 0);
				CHECK_EQ(sio_write(s[i], b, (size_t)r), r);
				have[i] = 1;
				got++;
			}
		}
	}
	CHECK_EQ(got, NC);
	for (int i = 0; i < NC; i++) {
		ssize_t r = 0;
		for (uint64_t e = mono_ms() + 20000; r <= 0 && mono_ms() < e;) {
			drive(l, s, NC);
			r = sio_read_timeout(c[i], b, sizeof b, 10);
		}
		int len = snprintf(msg, sizeof msg, "ping %d %d", round, i);
		CHECK_EQ(r, len);
		CHECK_EQ(memcmp(b, msg, (size_t)len), 0);
		CHECK(held(s[i]) > 0); /* busy: the buffers are there */
	}
}

/* Drives everything until every peer session returned its buffers (the
 * bound is generous: the trim itself comes after SIO_TRIM_NS of quiet). */
static void idle(sio_listener *l, sio_session **s)
{
	int left = NC;
	for (uint64_t end = mono_ms() + 30000; left && mono_ms() < end;) {
		drive(l, s, NC);
		left = 0;
		for (int i = 0; i < NC; i++)
			left += held(s[i]) != 0;
	}
	for (int i = 0; i < NC; i++) {
		CHECK_EQ(sio_core_held_bytes(s[i]->core), 0);
		CHECK_EQ(sio_tp_held_bytes(&s[i]->tp), 0);
		CHECK_EQ(sio_session_state(s[i]), SIO_STATE_ESTABLISHED);
	}
}

int main(void)
{
	CHECK_OK(sio_init());
	CHECK_OK(sio_identity_generate(&srv_id));
	sio_identity_public_key(srv_id, srv_pk);
	struct sockaddr_in sa = {0};
	int sfd = udp_loopback(&sa, 0, 0);
	CHECK(sfd >= 0);
	sio_listener *l = NULL;
	CHECK_OK(sio_listener_new(&l, srv_id, sfd, NULL, NULL));
	CHECK_OK(sio_listener_start_loop(l));

	sio_identity *cid[NC];
	sio_remote *srv;
	sio_session *c[NC], *s[NC];
	CHECK_OK(sio_remote_from_public_key(&srv, srv_pk));
	for (int i = 0; i < NC; i++) {
		CHECK_OK(sio_identity_generate(&cid[i]));
		sio_options o;
		memset(&o, 0, sizeof(o)); /* the default key-exchange resend delay */
		o.listener_peer = 1;
		CHECK_OK(lclient_new(&c[i], cid[i], srv, udp_loopback(NULL, 0, 0), &sa, sizeof(sa), &o));
		CHECK_OK(sio_session_start(c[i]));
	}
	int acc = 0;
	for (uint64_t end = mono_ms() + 30000; acc < NC && mono_ms() < end;) {
		drive(l, s, acc);
		while (acc < NC && sio_listener_accept(l, &s[acc], 0) == 0)
			acc++;
	}
	CHECK_EQ(acc, NC);
	if (acc == NC) {
		for (int round = 0; round < 2; round++) {
			traffic(l, s, c, round);
			idle(l, s);
		}
	}
	for (int i = 0; i < NC; i++) {
		sio_session_free(c[i]);
		sio_identity_free(cid[i]);
	}
	for (int i = 0; i < acc; i++)
		sio_session_free(s[i]);
	sio_listener_free(l);
	sio_remote_free(srv);
	sio_identity_free(srv_id);
	return check_done("test_idle_memory");
}
