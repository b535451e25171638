/* Event-loop mode: two sessions driven by one epoll loop, no session
 * threads. Each session exposes one descriptor (sio_session_fd) to watch for
 * input, a process call, and the time until its next timer. A program with
 * its own loop (epoll, libuv, ...) drives sessions the same way. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <secureio.h>

#define FAIL(...)                                                                                  \
	do {                                                                                       \
		fprintf(stderr, __VA_ARGS__);                                                      \
		exit(1);                                                                           \
	} while (0)

static int pongs;

/* Runs inside sio_session_process(), on the loop's thread. */
static void on_ping(sio_session *s, uint32_t type, const uint8_t *data, size_t len, void *ctx)
{
	sio_write_message(s, 2, data, len); /* in loop mode: queued, sent by process */
}

static void on_pong(sio_session *s, uint32_t type, const uint8_t *data, size_t len, void *ctx)
{
	pongs++;
}

/* A session of ME over FD that expects PEER; *R (the pinned key) must
 * outlive it. */
static sio_session *make(sio_identity *me, const sio_identity *peer, int fd, sio_remote **r)
{
	uint8_t pk[SIO_PUBLIC_KEY_BYTES];
	sio_identity_public_key(peer, pk);
	if (sio_remote_from_public_key(r, pk))
		FAIL("remote\n");
	sio_transport t;
	sio_transport_fd(&t, fd, fd);
	t.close_fds = 1;
	sio_session *s;
	if (sio_session_new(&s, me, *r, &t, NULL, NULL))
		FAIL("session\n");
	return s;
}

int main(void)
{
	alarm(60);
	if (sio_init())
		FAIL("sio_init\n");
	uint8_t seed[SIO_SEED_BYTES];
	sio_identity *ia, *ib;
	memset(seed, 5, sizeof seed);
	sio_identity_from_seed(&ia, seed);
	memset(seed, 6, sizeof seed);
	sio_identity_from_seed(&ib, seed);
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		FAIL("socketpair\n");
	sio_remote *r[2];
	sio_session *s[2] = {make(ia, ib, sv[0], &r[0]), make(ib, ia, sv[1], &r[1])};
	sio_set_handler(s[0], 2, on_pong, NULL, NULL);
	sio_set_handler(s[1], 1, on_ping, NULL, NULL);

	int ep = epoll_create1(0);
	for (int i = 0; i < 2; i++) {
		if (sio_session_start_loop(s[i]))
			FAIL("start_loop\n");
		struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
		if (epoll_ctl(ep, EPOLL_CTL_ADD, sio_session_fd(s[i]), &ev))
			FAIL("epoll_ctl\n");
	}

	int sent = 0, closing = 0;
	while (sio_session_state(s[0]) != SIO_STATE_CLOSED || sio_session_state(s[1]) != SIO_STATE_CLOSED) {
		/* sleep until input or the earliest session timer */
		int timeout = -1;
		for (int i = 0; i < 2; i++) {
			int t = sio_session_timeout_ms(s[i]);
			if (t >= 0 && (timeout < 0 || t < timeout))
				timeout = t;
		}
		struct epoll_event evs[2];
		int n = epoll_wait(ep, evs, 2, timeout);
		if (n < 0)
			FAIL("epoll_wait\n");
		/* process both: on input, and for timers */
		for (int i = 0; i < 2; i++)
			sio_session_process(s[i]);

		/* the program's own logic, between events */
		if (sio_session_state(s[0]) == SIO_STATE_ESTABLISHED && sent < 100 && sent == pongs) {
			char msg[32];
			int len = snprintf(msg, sizeof msg, "ping %d", sent++);
			sio_write_message(s[0], 1, msg, (size_t)len);
		}
		if (pongs == 100 && !closing) {
			closing = 1;
			sio_close(s[0]);
		}
	}
	printf("%d pings answered, both sessions closed\n", pongs);
	sio_session_free(s[0]);
	sio_session_free(s[1]);
	close(ep);
	sio_remote_free(r[0]);
	sio_remote_free(r[1]);
	sio_identity_free(ia);
	sio_identity_free(ib);
	return pongs == 100 ? 0 : 1;
}
