/* Sending (the Go README's "send a message synchronously / asynchronously"
 * snippets, in C). sio_write_message() returns once the packet holding the
 * message went to the transport. sio_write_message_async() queues it and
 * returns a completion object: wait on it (or get a callback), read its
 * error, release it. Small asynchronous messages written within the send
 * delay (50 us by default) travel merged in one packet. Over TCP on
 * 127.0.0.1, both sides in this process. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <secureio.h>

#define FAIL(...)                                                                                  \
	do {                                                                                       \
		fprintf(stderr, __VA_ARGS__);                                                      \
		exit(1);                                                                           \
	} while (0)

#define N 1000
static atomic_int received, callbacks;

static void on_msg(sio_session *s, uint32_t type, const uint8_t *data, size_t len, void *ctx)
{
	atomic_fetch_add(&received, 1);
}

static void on_sent(sio_send_info *si, int err, void *ctx)
{
	if (err == 0)
		atomic_fetch_add(&callbacks, 1);
}

static void tcp_pair(int *c, int *s)
{
	struct sockaddr_in a;
	memset(&a, 0, sizeof a);
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t l = sizeof a;
	int ls = socket(AF_INET, SOCK_STREAM, 0);
	if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1) ||
	    getsockname(ls, (struct sockaddr *)&a, &l))
		FAIL("listen\n");
	*c = socket(AF_INET, SOCK_STREAM, 0);
	if (*c < 0 || connect(*c, (struct sockaddr *)&a, sizeof a))
		FAIL("connect\n");
	*s = accept(ls, NULL, NULL);
	close(ls);
	if (*s < 0)
		FAIL("accept\n");
}

int main(void)
{
	alarm(60);
	if (sio_init())
		FAIL("sio_init\n");
	uint8_t seed[SIO_SEED_BYTES], pk[SIO_PUBLIC_KEY_BYTES];
	sio_identity *ia, *ib;
	sio_remote *ra, *rb;
	memset(seed, 1, sizeof seed);
	sio_identity_from_seed(&ia, seed);
	memset(seed, 2, sizeof seed);
	sio_identity_from_seed(&ib, seed);
	sio_identity_public_key(ib, pk);
	sio_remote_from_public_key(&ra, pk);
	sio_identity_public_key(ia, pk);
	sio_remote_from_public_key(&rb, pk);

	int fc, fs;
	tcp_pair(&fc, &fs);
	sio_transport ta, tb;
	sio_transport_fd(&ta, fc, fc);
	sio_transport_fd(&tb, fs, fs);
	ta.close_fds = tb.close_fds = 1;
	sio_session *a, *b;
	if (sio_session_new(&a, ia, ra, &ta, NULL, NULL) || sio_session_new(&b, ib, rb, &tb, NULL, NULL))
		FAIL("session\n");
	sio_set_handler(b, 0, on_msg, NULL, NULL);
	if (sio_session_start(a) || sio_session_start(b))
		FAIL("start\n");

	/* Send a message synchronously */
	int err = sio_write_message(a, 0, "sync", 4);
	if (err)
		FAIL("write_message: %s\n", sio_strerror(err));

	/* Send messages asynchronously: schedule them... */
	static sio_send_info *si[N];
	for (int i = 0; i < N; i++) {
		si[i] = sio_write_message_async(a, 0, &i, sizeof i, i % 2 ? on_sent : NULL, NULL, &err);
		if (!si[i])
			FAIL("async: %s\n", sio_strerror(err));
	}
	/* [.. other work here ..] then wait until really sent, read the error,
	 * and release the object back to the session's pool */
	for (int i = 0; i < N; i++) {
		err = sio_send_info_wait(si[i], 20000);
		if (err || sio_send_info_err(si[i]))
			FAIL("send %d: %s\n", i, sio_strerror(err));
		sio_send_info_release(si[i]);
	}
	/* one more, pushed out at once instead of after the send delay */
	sio_send_info *last = sio_write_message_async(a, 0, "now", 3, NULL, NULL, &err);
	if (!last || sio_send_info_send_now_and_wait(last, 20000))
		FAIL("send now\n");
	sio_send_info_release(last);

	for (int t = 0; t < 2000 && atomic_load(&received) < N + 2; t++)
		usleep(10000);
	sio_stats st;
	sio_session_stats(a, &st);
	printf("received %d messages; %llu messages left in %llu packets\n", atomic_load(&received),
	       (unsigned long long)st.messages_sent, (unsigned long long)st.packets_sent);
	int ok = atomic_load(&received) == N + 2;
	sio_close_and_wait(a, 5000);
	sio_session_free(a);
	sio_session_free(b);
	ok = ok && atomic_load(&callbacks) == N / 2;
	sio_remote_free(ra);
	sio_remote_free(rb);
	sio_identity_free(ia);
	sio_identity_free(ib);
	return ok ? 0 : 1;
}
