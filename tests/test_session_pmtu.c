/* Packet-size negotiation and fragmentation over real UDP sockets on
 * loopback, through the public API:
 *  - default options: the session goes through "negotiation" and settles on
 *    the configured 1452 bytes (loopback carries it);
 *  - max_packet_size 65535: datagrams above the UDP limit (65507 bytes of
 *    payload over IPv4) fail with EMSGSIZE, so the search settles just
 *    below that limit;
 *  - messages of several packets arrive intact on both settings;
 *  - negotiation off: the configured size at once.
 * The negotiation time is printed, never asserted. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "sess_pair.h"

struct rx {
	pthread_mutex_t mu;
	int msgs, bad;
	size_t bytes;
};

static void on_msg(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	struct rx *r = ctx;
	(void)s;
	pthread_mutex_lock(&r->mu);
	for (size_t i = 0; i < len; i++)
		if (d[i] != (uint8_t)(i * 31 + len))
			r->bad++;
	if (type != 5)
		r->bad++;
	r->msgs++;
	r->bytes += len;
	pthread_mutex_unlock(&r->mu);
}

static int wait_msgs(struct rx *r, int n)
{
	for (int i = 0; i < 2000; i++) { /* up to 10 s */
		pthread_mutex_lock(&r->mu);
		int m = r->msgs;
		pthread_mutex_unlock(&r->mu);
		if (m >= n)
			return m;
		usleep(5000);
	}
	return -1;
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void run(uint32_t max_packet, int negotiation, uint32_t lo, uint32_t hi)
{
	struct pair p;
	sio_options o;
	struct rx r = {PTHREAD_MUTEX_INITIALIZER, 0, 0, 0};
	memset(&o, 0, sizeof o);
	o.max_packet_size = max_packet;
	o.negotiation = negotiation;
	/* the search ends by converging (hi - lo < 8), not by its time bound
	 * (500 ms by default), however slow this machine is (valgrind, TSan) */
	o.negotiation_timeout_ns = 20000000000;
	CHECK_OK(pair_open(&p, PK_UDP_CONNECTED, &o, &o, NULL, NULL));
	CHECK_OK(sio_set_handler(p.b, 5, on_msg, NULL, &r));
	double t0 = now_ms();
	CHECK_OK(pair_start(&p));
	double t1 = now_ms();
	sio_stats st;
	sio_session_stats(p.a, &st);
	printf("max_packet_size %u, negotiation %d: packet size %u, established after %.1f ms\n",
	       max_packet, negotiation, st.packet_size, t1 - t0);
	CHECK(st.packet_size >= lo && st.packet_size <= hi);
	sio_session_stats(p.b, &st);
	CHECK(st.packet_size >= lo && st.packet_size <= hi);

	/* Messages of 0 to ~3 packets (kept under the socket buffer). */
	size_t sizes[] = {0, 1, 1000, st.packet_size, 3 * (size_t)st.packet_size, 100000};
	int n = 0;
	for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
		size_t len = sizes[i];
		if (len > 150000)
			continue;
		uint8_t *buf = malloc(len + 1);
		for (size_t k = 0; k < len; k++)
			buf[k] = (uint8_t)(k * 31 + len);
		CHECK_OK(sio_write_message(p.a, 5, buf, len));
		free(buf);
		n++;
		CHECK_EQ(wait_msgs(&r, n), n); /* one at a time: no socket-buffer overflow */
	}
	CHECK_EQ(r.bad, 0);
	pair_free(&p);
}

int main(void)
{
	alarm(120);
	CHECK_OK(sio_init());
	run(0, 0, 1452, 1452);           /* defaults: negotiated, loopback carries 1452 */
	run(65535, 0, 65507 - 8, 65507); /* the IPv4 UDP payload limit */
	run(1400, -1, 1400, 1400);       /* negotiation off */
	return check_done("test_session_pmtu");
}
