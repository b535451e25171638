/* Multiplexer (the Go README's "setup the receiver" snippet, in C): each
 * channel (message type 0 .. 2^31-1) can have its own handler; the default
 * read/write stream is separate; a messenger reads one channel like a small
 * socket. Two sessions over a UNIX socketpair in one process. */
#include <pthread.h>
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

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int chat_msgs, file_bytes, errors;

/* Handlers run on the session's I/O thread; DATA is valid during the call. */
static void on_chat(sio_session *s, uint32_t type, const uint8_t *data, size_t len, void *ctx)
{
	printf("channel %u (%s): %.*s\n", type, (const char *)ctx, (int)len, (const char *)data);
	pthread_mutex_lock(&mu);
	chat_msgs++;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
}

static void on_file(sio_session *s, uint32_t type, const uint8_t *data, size_t len, void *ctx)
{
	pthread_mutex_lock(&mu);
	file_bytes += (int)len;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
}

/* Called once when the session ends (the Go error handler). */
static void on_chan_error(sio_session *s, uint32_t type, int err, void *ctx)
{
	if (err != SIO_ECLOSED) {
		pthread_mutex_lock(&mu);
		errors++;
		pthread_mutex_unlock(&mu);
	}
}

static sio_identity *make_identity(int seed)
{
	uint8_t s[SIO_SEED_BYTES];
	memset(s, seed, sizeof s);
	sio_identity *id;
	if (sio_identity_from_seed(&id, s))
		FAIL("identity\n");
	return id;
}

static sio_remote *remote_of(const sio_identity *id)
{
	uint8_t pk[SIO_PUBLIC_KEY_BYTES];
	sio_identity_public_key(id, pk);
	sio_remote *r;
	if (sio_remote_from_public_key(&r, pk))
		FAIL("remote\n");
	return r;
}

int main(void)
{
	alarm(60);
	if (sio_init())
		FAIL("sio_init\n");
	sio_identity *ia = make_identity(11), *ib = make_identity(22);
	sio_remote *ra = remote_of(ib), *rb = remote_of(ia);
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv))
		FAIL("socketpair\n");
	sio_transport ta, tb;
	sio_transport_fd(&ta, sv[0], sv[0]);
	sio_transport_fd(&tb, sv[1], sv[1]);
	sio_session *a, *b;
	if (sio_session_new(&a, ia, ra, &ta, NULL, NULL) || sio_session_new(&b, ib, rb, &tb, NULL, NULL))
		FAIL("session\n");

	/* The receiver: one handler per channel, and a messenger for channel 9 */
	sio_set_handler(b, 0, on_chat, on_chan_error, "chat");
	sio_set_handler(b, 1, on_file, on_chan_error, NULL);
	sio_messenger *control;
	if (sio_messenger_open(b, 9, &control))
		FAIL("messenger\n");
	if (sio_session_start(a) || sio_session_start(b))
		FAIL("start\n");

	/* The sender: messages to channels, and the default stream */
	int err = sio_write_message(a, 0, "hello on the chat channel", 25);
	static uint8_t chunk[1000];
	for (int i = 0; i < 10 && !err; i++)
		err = sio_write_message(a, 1, chunk, sizeof chunk);
	if (!err)
		err = sio_write_message(a, 9, "pause", 5);
	if (err || sio_write(a, "plain stream", 12) != 12)
		FAIL("write: %s\n", sio_strerror(err));

	char buf[32];
	size_t full;
	ssize_t n = sio_messenger_read(control, buf, sizeof buf, &full, 20000);
	if (n != 5 || memcmp(buf, "pause", 5) != 0)
		FAIL("messenger read %zd\n", n);
	n = sio_read_timeout(b, buf, sizeof buf, 20000);
	if (n != 12)
		FAIL("stream read %zd\n", n);
	pthread_mutex_lock(&mu);
	while (chat_msgs < 1 || file_bytes < 10 * (int)sizeof chunk)
		pthread_cond_wait(&cv, &mu);
	pthread_mutex_unlock(&mu);
	printf("channel 1 got %d bytes, channel 9 got \"%.5s\", stream got \"%.12s\"\n", file_bytes,
	       "pause", buf);

	sio_close_and_wait(a, 5000);
	sio_session_wait_state(b, SIO_STATE_CLOSED, 5000);
	sio_messenger_close(control);
	sio_session_free(a);
	sio_session_free(b);
	close(sv[0]);
	close(sv[1]);
	sio_remote_free(ra);
	sio_remote_free(rb);
	sio_identity_free(ia);
	sio_identity_free(ib);
	return errors ? 1 : 0;
}
