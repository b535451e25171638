/* Sessions over every transport kind on real descriptors: UNIX stream,
 * dgram and seqpacket, TCP and UDP (connected; fixed peer + learned peer) on
 * loopback, a pair of pipes, custom callbacks. On each: handshake, stream
 * reads with short reads, messages on a channel handler, asynchronous writes
 * with completion callbacks, a message larger than one packet, graceful close
 * seen by the peer as end of stream. */
#include <pthread.h>
#include <sys/socket.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "sess_pair.h"

struct rx {
	pthread_mutex_t mu;
	int msgs, bad;
	size_t bytes;
	int done_cbs, done_errs;
};

static void on_chan(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	struct rx *r = ctx;
	pthread_mutex_lock(&r->mu);
	for (size_t i = 0; i < len; i++)
		if (d[i] != (uint8_t)(r->msgs + i))
			r->bad++;
	if (type != 5)
		r->bad++;
	r->msgs++;
	r->bytes += len;
	pthread_mutex_unlock(&r->mu);
}

static void on_done(sio_send_info *si, int err, void *ctx)
{
	struct rx *r = ctx;
	pthread_mutex_lock(&r->mu);
	r->done_cbs++;
	if (err)
		r->done_errs++;
	pthread_mutex_unlock(&r->mu);
}

static int wait_msgs(struct rx *r, int n)
{
	for (int i = 0; i < 2000; i++) {
		pthread_mutex_lock(&r->mu);
		int m = r->msgs;
		pthread_mutex_unlock(&r->mu);
		if (m >= n)
			return m;
		usleep(5000);
	}
	return -1;
}

static ssize_t read_full(sio_session *s, uint8_t *buf, size_t len)
{
	size_t got = 0;
	while (got < len) {
		ssize_t r = sio_read_timeout(s, buf + got, len - got, 10000);
		if (r <= 0)
			return r;
		got += (size_t)r;
	}
	return (ssize_t)got;
}

static void run(enum pair_kind k)
{
	struct pair p;
	fprintf(stderr, "-- %s\n", pair_kind_name(k));
	CHECK_OK(pair_open(&p, k, NULL, NULL, NULL, NULL));
	struct rx rx = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0, 0};
	CHECK_OK(sio_set_handler(p.b, 5, on_chan, NULL, &rx));
	CHECK_OK(pair_start(&p));
	CHECK_EQ(sio_session_state(p.a), SIO_STATE_ESTABLISHED);

	/* stream semantics: one 100-byte message read as 30 + 70 */
	uint8_t msg[100], buf[100];
	for (int i = 0; i < 100; i++)
		msg[i] = (uint8_t)(i * 3);
	CHECK_EQ(sio_write(p.a, msg, sizeof msg), 100);
	CHECK_EQ(sio_read_timeout(p.b, buf, 30, 10000), 30);
	CHECK_EQ(sio_read_timeout(p.b, buf + 30, 100, 10000), 70);
	CHECK(memcmp(buf, msg, 100) == 0);
	CHECK_EQ(sio_read_timeout(p.b, buf, 1, 0), SIO_EAGAIN);
	/* and back */
	CHECK_EQ(sio_write(p.b, msg, 10), 10);
	CHECK_EQ(read_full(p.a, buf, 10), 10);

	/* channel messages, synchronous */
	for (int i = 0; i < 10; i++) {
		uint8_t m[64];
		for (int j = 0; j < 64; j++)
			m[j] = (uint8_t)(i + j);
		CHECK_OK(sio_write_message(p.a, 5, m, (size_t)(i * 7)));
	}
	CHECK_EQ(wait_msgs(&rx, 10), 10);
	/* asynchronous, with completion callbacks, waited and released */
	sio_send_info *si[50];
	for (int i = 0; i < 50; i++) {
		uint8_t m[16];
		for (int j = 0; j < 16; j++)
			m[j] = (uint8_t)(10 + i + j);
		int err = -1;
		si[i] = sio_write_message_async(p.a, 5, m, sizeof m, on_done, &rx, &err);
		CHECK(si[i] != NULL);
		CHECK_OK(err);
	}
	for (int i = 0; i < 50; i++) {
		if (!si[i])
			continue;
		CHECK_OK(sio_send_info_wait(si[i], 10000));
		CHECK(sio_send_info_done(si[i]));
		CHECK_OK(sio_send_info_err(si[i]));
		sio_send_info_release(si[i]);
	}
	CHECK_EQ(wait_msgs(&rx, 60), 60);
	pthread_mutex_lock(&rx.mu);
	CHECK_EQ(rx.bad, 0);
	pthread_mutex_unlock(&rx.mu);
	for (int i = 0; i < 2000; i++) { /* callbacks run on the I/O thread */
		pthread_mutex_lock(&rx.mu);
		int d = rx.done_cbs;
		pthread_mutex_unlock(&rx.mu);
		if (d >= 50)
			break;
		usleep(5000);
	}
	pthread_mutex_lock(&rx.mu);
	CHECK_EQ(rx.done_cbs, 50);
	CHECK_EQ(rx.done_errs, 0);
	pthread_mutex_unlock(&rx.mu);

	/* a message larger than one datagram packet */
	static uint8_t big[60000], bigr[60000];
	/* UDP and callback datagrams: one packet of the default 1452 bytes
	 * (fragmentation is the core's, tested there); UNIX datagram sockets
	 * default to 64 KiB packets */
	int small = pair_kind_datagram(k) && k != PK_UNIX_DGRAM && k != PK_SEQPACKET;
	size_t blen = small ? 1300 : sizeof big;
	for (size_t i = 0; i < blen; i++)
		big[i] = (uint8_t)(i * 7 + 1);
	CHECK_EQ(sio_write(p.a, big, blen), (ssize_t)blen);
	CHECK_EQ(read_full(p.b, bigr, blen), (ssize_t)blen);
	CHECK(memcmp(big, bigr, blen) == 0);

	/* graceful close from a: b sees the end of the stream */
	CHECK_OK(sio_close_and_wait(p.a, 10000));
	CHECK_EQ(sio_session_state(p.a), SIO_STATE_CLOSED);
	CHECK_OK(sio_session_wait_state(p.b, SIO_STATE_CLOSED, 10000));
	CHECK_EQ(sio_read_timeout(p.b, buf, 10, 1000), 0);
	CHECK_EQ(sio_write(p.a, msg, 1), SIO_ECLOSED);
	pair_free(&p);
}

/* Flow control: 8 MB written while the receiver does not read at first.
 * The session stops reading the transport past its bound, the sender's
 * transport fills and its writes wait for room; once the receiver reads,
 * everything arrives intact and in order. */
enum { FC_MSG = 1000, FC_COUNT = 8000 };
static sio_send_info *fc_si[FC_COUNT];

static void *fc_writer(void *arg)
{
	static uint8_t m[FC_MSG];
	for (int i = 0; i < FC_COUNT; i++) {
		memset(m, (uint8_t)i, FC_MSG);
		int err;
		fc_si[i] = sio_write_message_async(arg, SIO_TYPE_READWRITE, m, FC_MSG, NULL, NULL, &err);
	}
	return NULL;
}

static void test_flow_control(enum pair_kind k)
{
	struct pair p;
	fprintf(stderr, "-- flow control %s\n", pair_kind_name(k));
	CHECK_OK(pair_open(&p, k, NULL, NULL, NULL, NULL));
	CHECK_OK(pair_start(&p));
	pthread_t th;
	pthread_create(&th, NULL, fc_writer, p.a);
	usleep(300000);
	sio_stats st;
	sio_session_stats(p.b, &st);
	CHECK(st.bytes_received < (uint64_t)FC_COUNT * FC_MSG); /* it held back */
	static uint8_t r[FC_MSG];
	int bad = 0;
	for (int i = 0; i < FC_COUNT; i++) {
		if (read_full(p.b, r, FC_MSG) != FC_MSG) {
			bad++;
			break;
		}
		for (int j = 0; j < FC_MSG; j++)
			bad += r[j] != (uint8_t)i;
	}
	CHECK_EQ(bad, 0);
	pthread_join(th, NULL);
	for (int i = 0; i < FC_COUNT; i++) {
		CHECK(fc_si[i] != NULL);
		if (!fc_si[i])
			continue;
		CHECK_OK(sio_send_info_wait(fc_si[i], 20000));
		sio_send_info_release(fc_si[i]);
	}
	pair_free(&p);
}

/* An unconnected UDP server learns its peer only from authentic packets:
 * junk from a third socket, before and after the real client, neither
 * redirects nor stops the session. */
static void test_learn_ignores_junk(void)
{
	struct pair p;
	fprintf(stderr, "-- udp learning with junk\n");
	memset(&p, 0, sizeof p);
	sio_transport ta, tb;
	CHECK_OK(pair_identities(&p, 1, 2));
	CHECK_OK(pair_transports(&p, PK_UDP_UNCONNECTED, &ta, &tb)); /* b learns */
	struct sockaddr_storage baddr;
	socklen_t bl = sizeof baddr;
	CHECK_OK(getsockname(p.fds[1], (struct sockaddr *)&baddr, &bl));
	int junk = socket(AF_INET, SOCK_DGRAM, 0);
	CHECK(junk >= 0);
	uint8_t garbage[200];
	memset(garbage, 0xa5, sizeof garbage);
	CHECK_OK(sio_session_new(&p.a, p.ida, p.ra, &ta, NULL, NULL));
	CHECK_OK(sio_session_new(&p.b, p.idb, p.rb, &tb, NULL, NULL));
	CHECK_OK(sio_session_start(p.b));
	for (int i = 0; i < 5; i++)
		CHECK_EQ(sendto(junk, garbage, sizeof garbage, 0, (struct sockaddr *)&baddr, bl),
			 (ssize_t)sizeof garbage);
	usleep(50000);
	CHECK_OK(sio_session_start(p.a));
	CHECK_OK(sio_session_wait_state(p.a, SIO_STATE_ESTABLISHED, 20000));
	CHECK_OK(sio_session_wait_state(p.b, SIO_STATE_ESTABLISHED, 20000));
	for (int i = 0; i < 5; i++)
		sendto(junk, garbage, sizeof garbage, 0, (struct sockaddr *)&baddr, bl);
	char buf[8];
	CHECK_EQ(sio_write(p.b, "reply", 5), 5); /* goes to a, not to the junk socket */
	CHECK_EQ(sio_read_timeout(p.a, buf, sizeof buf, 10000), 5);
	CHECK_EQ(sio_write(p.a, "again", 5), 5);
	CHECK_EQ(sio_read_timeout(p.b, buf, sizeof buf, 10000), 5);
	CHECK_EQ(recv(junk, buf, sizeof buf, MSG_DONTWAIT), -1); /* nothing came back */
	sio_stats st;
	sio_session_stats(p.b, &st);
	CHECK(st.drop_malformed + st.drop_kx + st.drop_unknown_key + st.drop_decrypt >= 10);
	close(junk);
	pair_free(&p);
}

int main(void)
{
	alarm(300);
	signal(SIGPIPE, SIG_DFL);
	CHECK_OK(sio_init());
	for (int k = 0; k < PK_COUNT; k++)
		run((enum pair_kind)k);
	test_flow_control(PK_UNIX_STREAM);
	test_flow_control(PK_SEQPACKET);
	test_learn_ignores_junk();
	return check_done("test_session_transports");
}
