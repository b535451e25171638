/* detach_on_messages (Go's DetachOnMessagesCount): after the Nth received
 * message the session stops using the transport, reports SIO_EDETACHED,
 * delivers nothing more (not even later messages of the same packet), and
 * leaves the descriptor open and usable by the program. */
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "sess_pair.h"

static void test_detach(enum pair_kind k)
{
	struct pair p;
	sio_options ob;
	sio_options_default(&ob);
	ob.detach_on_messages = 3;
	CHECK_OK(pair_open(&p, k, NULL, &ob, NULL, NULL));
	CHECK_OK(pair_start(&p));
	/* Five messages written at once: they travel merged, so the fourth and
	 * fifth share a packet with the third. */
	for (int i = 0; i < 5; i++) {
		uint8_t m[2] = { 'm', (uint8_t)('0' + i) };
		CHECK_EQ(sio_write(p.a, m, sizeof m), (ssize_t)sizeof m);
	}
	/* sio_read is a byte stream: exactly the first three messages arrive,
	 * then the detach is reported. */
	char got[32];
	size_t have = 0;
	ssize_t n;
	while ((n = sio_read_timeout(p.b, got + have, sizeof got - have, 10000)) > 0)
		have += (size_t)n;
	CHECK_EQ(n, SIO_EDETACHED);
	CHECK_EQ(have, 6);
	CHECK(have == 6 && memcmp(got, "m0m1m2", 6) == 0);
	CHECK_OK(sio_session_wait_state(p.b, SIO_STATE_CLOSED, 10000));
	uint8_t buf[16];
	CHECK_EQ(sio_read_timeout(p.b, buf, sizeof buf, 100), SIO_EDETACHED);
	(void)buf;
	CHECK_EQ(sio_write(p.b, "x", 1), SIO_EDETACHED);
	sio_stats st;
	sio_session_stats(p.b, &st);
	CHECK_EQ(st.messages_received, 3);
	/* The program gets its transport back: both descriptors are open and
	 * carry plain bytes once the sessions are gone. */
	sio_session_free(p.a);
	sio_session_free(p.b);
	p.a = p.b = NULL;
	int fa = p.fds[0], fb = p.fds[1];
	CHECK(fcntl(fa, F_GETFD) != -1 && fcntl(fb, F_GETFD) != -1);
	CHECK_EQ(fcntl(fb, F_GETFL) & O_NONBLOCK, 0); /* flags restored */
	/* Drain what the session left unread (stream: rest of the records). */
	int fl = fcntl(fb, F_GETFL);
	fcntl(fb, F_SETFL, fl | O_NONBLOCK);
	uint8_t junk[4096];
	while (read(fb, junk, sizeof junk) > 0)
		;
	fcntl(fb, F_SETFL, fl);
	CHECK_EQ(write(fa, "plain", 5), 5);
	char plain[8] = { 0 };
	CHECK_EQ(read(fb, plain, sizeof plain), 5);
	CHECK(memcmp(plain, "plain", 5) == 0);
	pair_free(&p);
}

/* Without the option nothing detaches. */
static void test_no_detach(void)
{
	struct pair p;
	CHECK_OK(pair_open(&p, PK_SEQPACKET, NULL, NULL, NULL, NULL));
	CHECK_OK(pair_start(&p));
	for (int i = 0; i < 50; i++)
		CHECK_EQ(sio_write(p.a, "y", 1), 1);
	size_t have = 0;
	while (have < 50) {
		uint8_t b[64];
		ssize_t n = sio_read_timeout(p.b, b, sizeof b, 10000);
		CHECK(n > 0);
		if (n <= 0)
			break;
		have += (size_t)n;
	}
	CHECK_EQ(have, 50);
	CHECK_EQ(sio_session_state(p.b), SIO_STATE_ESTABLISHED);
	pair_free(&p);
}

int main(void)
{
	CHECK_OK(sio_init());
	test_detach(PK_SEQPACKET);
	test_detach(PK_UNIX_STREAM);
	test_no_detach();
	return check_done("test_session_detach");
}
