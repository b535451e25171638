/* Event-loop mode: two sessions driven by one thread with poll() on
 * sio_session_fd(), sio_session_process() and sio_session_timeout_ms(); no
 * session thread. Handshake, the default stream, handlers called inside
 * process, async completions, blocking calls returning SIO_EAGAIN instead
 * of blocking, graceful close. Over a stream and a datagram transport. */
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "sess_pair.h"

static int got_msgs, in_handler_write;

static void on_msg(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	got_msgs++;
	/* writing from a handler in loop mode queues */
	in_handler_write = sio_write_message(s, 2, d, len);
}

static int echoes;
static void on_echo(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	echoes++;
}

/* One round of the loop: poll both, process both. */
static void spin(struct pair *p)
{
	struct pollfd f[2] = {{sio_session_fd(p->a), POLLIN, 0}, {sio_session_fd(p->b), POLLIN, 0}};
	int ta = sio_session_timeout_ms(p->a), tb = sio_session_timeout_ms(p->b);
	int to = ta < 0 ? tb : (tb < 0 ? ta : (ta < tb ? ta : tb));
	if (to < 0 || to > 100)
		to = 100;
	poll(f, 2, to);
	sio_session_process(p->a);
	sio_session_process(p->b);
}

static int spin_until_state(struct pair *p, sio_state st)
{
	for (int i = 0; i < 2000; i++) {
		if (sio_session_state(p->a) >= st && sio_session_state(p->b) >= st)
			return 0;
		spin(p);
	}
	return -1;
}

static void run(enum pair_kind k)
{
	struct pair p;
	got_msgs = echoes = 0;
	CHECK_OK(pair_open(&p, k, NULL, NULL, NULL, NULL));
	CHECK_EQ(sio_session_fd(p.a), -1); /* not in loop mode yet */
	CHECK_OK(sio_set_handler(p.b, 1, on_msg, NULL, NULL));
	CHECK_OK(sio_set_handler(p.a, 2, on_echo, NULL, NULL));
	CHECK_OK(sio_session_start_loop(p.a));
	CHECK_OK(sio_session_start_loop(p.b));
	CHECK_EQ(sio_session_start(p.a), SIO_ESTATE);
	CHECK(sio_session_fd(p.a) >= 0);
	CHECK_EQ(sio_session_wait_state(p.a, SIO_STATE_ESTABLISHED, 1000), SIO_EAGAIN);
	CHECK_OK(spin_until_state(&p, SIO_STATE_ESTABLISHED));
	CHECK_OK(sio_session_wait_state(p.a, SIO_STATE_ESTABLISHED, 1000));

	char buf[32];
	CHECK_EQ(sio_read_timeout(p.b, buf, sizeof buf, 1000), SIO_EAGAIN);
	CHECK_EQ(sio_write(p.a, "event loop", 10), 10);
	ssize_t r = SIO_EAGAIN;
	for (int i = 0; i < 2000 && r == SIO_EAGAIN; i++) {
		spin(&p);
		r = sio_read(p.b, buf, sizeof buf);
	}
	CHECK_EQ(r, 10);
	CHECK(memcmp(buf, "event loop", 10) == 0);

	int err;
	sio_send_info *si = sio_write_message_async(p.a, 1, "ping", 4, NULL, NULL, &err);
	CHECK(si != NULL);
	CHECK_EQ(sio_send_info_wait(si, 1000), sio_send_info_done(si) ? 0 : SIO_EAGAIN);
	for (int i = 0; i < 2000 && echoes < 1; i++)
		spin(&p);
	CHECK_EQ(got_msgs, 1);
	CHECK_EQ(in_handler_write, 0);
	CHECK_EQ(echoes, 1);
	CHECK(sio_send_info_done(si));
	CHECK_OK(sio_send_info_wait(si, 0));
	sio_send_info_release(si);

	CHECK_OK(sio_close(p.a));
	CHECK_OK(spin_until_state(&p, SIO_STATE_CLOSED));
	CHECK_EQ(sio_session_process(p.a), SIO_ECLOSED);
	CHECK_EQ(sio_read(p.b, buf, sizeof buf), 0);
	pair_free(&p);
}

static void self_free(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	*(int *)ctx = 1;
	sio_session_free(s); /* freed when sio_session_process returns */
}

/* A handler frees its own session in loop mode: no use after free (ASan). */
static void test_free_in_loop_handler(void)
{
	struct pair p;
	int called = 0;
	CHECK_OK(pair_open(&p, PK_SEQPACKET, NULL, NULL, NULL, NULL));
	CHECK_OK(sio_set_handler(p.b, 1, self_free, NULL, &called));
	CHECK_OK(sio_session_start_loop(p.a));
	CHECK_OK(sio_session_start_loop(p.b));
	CHECK_OK(spin_until_state(&p, SIO_STATE_ESTABLISHED));
	CHECK_OK(sio_write_message(p.a, 1, "bye", 3));
	for (int i = 0; i < 2000 && !called; i++) {
		struct pollfd f[2] = {{sio_session_fd(p.a), POLLIN, 0}, {sio_session_fd(p.b), POLLIN, 0}};
		poll(f, 2, 10);
		sio_session_process(p.a);
		int r = sio_session_process(p.b);
		if (called)
			CHECK_EQ(r, SIO_ECLOSED);
	}
	CHECK_EQ(called, 1);
	p.b = NULL; /* gone */
	pair_free(&p);
}

int main(void)
{
	alarm(120);
	signal(SIGPIPE, SIG_DFL);
	CHECK_OK(sio_init());
	run(PK_UNIX_STREAM);
	run(PK_UDP_CONNECTED);
	run(PK_PIPES);
	test_free_in_loop_handler();
	return check_done("test_session_loop");
}
