/* A session on an unconnected UDP socket learns its peer's address
 * (docs/TRANSPORT.md, docs/PROTOCOL.md §4.5), through the public API on
 * loopback:
 *  - a copy of the peer's key-exchange message, sent from a third socket,
 *    redirects nothing (a key-exchange message can be replayed by anyone who
 *    saw it); a genuine address change, proven by data, is followed;
 *  - toward an address that never proved it hears us, at most three times
 *    the bytes received from it are sent, and nothing on a timer: one
 *    captured first key-exchange message brings back one reply;
 *  - a lost first reply (the initiator retries), a copy of the first message
 *    that beats the original, and key renewals after the address was
 *    validated still work.
 * B is the learning side; A reaches it through a relay thread that can move
 * A's traffic to a second source address (roaming), drop B's first replies
 * and records A's key-exchange messages. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "lib/lclient.h"
#include "secureio.h"

#define CHAN 7

static int udp_bound(struct sockaddr_in *a)
{
	int fd = udp_loopback(a, 0, 0);
	CHECK(fd >= 0);
	return fd;
}

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

/* ---- relay: A <-> ra ... r[cur] <-> B ------------------------------------ */

struct relay {
	int fa;           /* A's socket, connected to ra */
	int ra, r[2];     /* relay side toward A; two source addresses toward B */
	struct sockaddr_in b;
	atomic_int cur;   /* which of r[] A's packets leave from */
	atomic_int drop_b2a; /* B's next packets to drop on the way to A */
	atomic_uint from_r[2]; /* packets B sent to r[i] */
	pthread_mutex_t mu;
	uint8_t kx[512];  /* A's latest key-exchange message */
	size_t kx_len;
	int race;         /* >= 0: A's first message goes first as a copy from this socket */
	atomic_int raced;
	atomic_uint to_race; /* bytes B sent to that socket */
	int wake[2];
	pthread_t th;
};

static void *relay_run(void *arg)
{
	struct relay *x = arg;
	static uint8_t buf[65536];
	struct pollfd pf[5] = {{x->ra, POLLIN, 0}, {x->r[0], POLLIN, 0}, {x->r[1], POLLIN, 0},
			       {x->wake[0], POLLIN, 0}, {x->race, POLLIN, 0}};
	for (;;) {
		if (poll(pf, 5, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pf[3].revents)
			break;
		if (pf[0].revents & POLLIN) {
			ssize_t n = recv(x->ra, buf, sizeof buf, MSG_DONTWAIT);
			if (n > 0) {
				if ((buf[0] & 0x80) && (size_t)n <= sizeof x->kx) {
					pthread_mutex_lock(&x->mu);
					memcpy(x->kx, buf, (size_t)n);
					x->kx_len = (size_t)n;
					pthread_mutex_unlock(&x->mu);
					if (x->race >= 0 && !atomic_load(&x->raced)) {
						atomic_store(&x->raced, 1); /* Mallory's copy wins the race */
						sendto(x->race, buf, (size_t)n, MSG_DONTWAIT,
						       (struct sockaddr *)&x->b, sizeof x->b);
					}
				}
				sendto(x->r[atomic_load(&x->cur)], buf, (size_t)n, MSG_DONTWAIT,
				       (struct sockaddr *)&x->b, sizeof x->b);
			}
		}
		if (pf[4].revents & POLLIN) {
			ssize_t n = recv(x->race, buf, sizeof buf, MSG_DONTWAIT);
			if (n > 0)
				atomic_fetch_add(&x->to_race, (unsigned)n);
		}
		for (int i = 0; i < 2; i++) {
			if (!(pf[1 + i].revents & POLLIN))
				continue;
			ssize_t n = recv(x->r[i], buf, sizeof buf, MSG_DONTWAIT);
			if (n <= 0)
				continue;
			atomic_fetch_add(&x->from_r[i], 1);
			if (atomic_load(&x->drop_b2a) > 0) {
				atomic_fetch_sub(&x->drop_b2a, 1);
				continue;
			}
			send(x->ra, buf, (size_t)n, MSG_DONTWAIT);
		}
	}
	return NULL;
}

static void relay_open(struct relay *x, const struct sockaddr_in *b, int drop_b2a, int race)
{
	struct sockaddr_in aa, ar, tmp;
	memset(x, 0, sizeof *x);
	x->race = race ? udp_bound(&tmp) : -1;
	x->fa = udp_bound(&aa);
	x->ra = udp_bound(&ar);
	x->r[0] = udp_bound(&tmp);
	x->r[1] = udp_bound(&tmp);
	CHECK_OK(connect(x->fa, (struct sockaddr *)&ar, sizeof ar));
	CHECK_OK(connect(x->ra, (struct sockaddr *)&aa, sizeof aa));
	x->b = *b;
	atomic_store(&x->drop_b2a, drop_b2a);
	pthread_mutex_init(&x->mu, NULL);
	CHECK_OK(pipe(x->wake));
	CHECK_OK(pthread_create(&x->th, NULL, relay_run, x));
}

static void relay_close(struct relay *x)
{
	CHECK_EQ(write(x->wake[1], "x", 1), 1);
	pthread_join(x->th, NULL);
	close(x->wake[0]);
	close(x->wake[1]);
	close(x->fa);
	close(x->ra);
	close(x->r[0]);
	close(x->r[1]);
	if (x->race >= 0)
		close(x->race);
	pthread_mutex_destroy(&x->mu);
}

/* ---- messages ------------------------------------------------------------- */

static atomic_uint got[2]; /* messages received by A (0) and B (1) */

static void on_msg(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	(void)s;
	(void)d;
	if (type == CHAN && len == 5)
		atomic_fetch_add(&got[(int)(intptr_t)ctx], 1);
}

/* Waits until side I has received at least N messages (or 5 s passed). */
static int wait_got(int i, unsigned n)
{
	for (uint64_t end = now_ms() + 5000; now_ms() < end; sleep_ms(5))
		if (atomic_load(&got[i]) >= n)
			return 1;
	return 0;
}

static uint64_t packets_in(sio_session *s)
{
	sio_stats st;
	sio_session_stats(s, &st);
	return st.packets_received;
}

/* Datagrams (and their bytes) waiting on FD, read without waiting. */
static unsigned drain(int fd, size_t *bytes)
{
	uint8_t buf[65536];
	unsigned n = 0;
	ssize_t r;
	while ((r = recv(fd, buf, sizeof buf, MSG_DONTWAIT)) >= 0) {
		n++;
		if (bytes)
			*bytes += (size_t)r;
	}
	return n;
}

static sio_identity *ida, *idb;
static sio_remote *ra, *rb;

/* B listens on an unconnected socket (learning A's address); A goes through
 * the relay. B's first DROP replies toward A are lost. */
static void pair_open(struct relay *x, int *fb, sio_session **a, sio_session **b, int drop,
		      int64_t rekey_ns, int race)
{
	struct sockaddr_in ba;
	sio_transport ta, tb;
	sio_options o;
	sio_options_default(&o);
	o.kx_retry_ns = 200000000; /* the initiator's retries come quickly */
	o.kx_interval_ns = rekey_ns;
	*fb = udp_bound(&ba);
	relay_open(x, &ba, drop, race);
	sio_transport_fd(&ta, x->fa, x->fa);
	sio_transport_fd(&tb, *fb, *fb);
	atomic_store(&got[0], 0);
	atomic_store(&got[1], 0);
	CHECK_OK(sio_session_new(a, ida, ra, &ta, &o, NULL));
	CHECK_OK(sio_session_new(b, idb, rb, &tb, &o, NULL));
	CHECK_OK(sio_set_handler(*a, CHAN, on_msg, NULL, (void *)(intptr_t)0));
	CHECK_OK(sio_set_handler(*b, CHAN, on_msg, NULL, (void *)(intptr_t)1));
	CHECK_OK(sio_session_start(*b));
	CHECK_OK(sio_session_start(*a));
	CHECK_OK(sio_session_wait_state(*a, SIO_STATE_ESTABLISHED, 10000));
	CHECK_OK(sio_session_wait_state(*b, SIO_STATE_ESTABLISHED, 10000));
}

/* A replay of A's current key-exchange message from a third socket moves
 * nothing; data from A's new address does. B's first replies are lost, so
 * the handshake also needs A's retries. */
static void test_replay_and_roam(void)
{
	struct relay x;
	sio_session *a, *b;
	int fb;
	struct sockaddr_in ma, ba;
	pair_open(&x, &fb, &a, &b, 2, 0, 0);
	socklen_t bl = sizeof ba;
	CHECK_OK(getsockname(fb, (struct sockaddr *)&ba, &bl));
	CHECK_OK(sio_write_message(a, CHAN, "a->b1", 5));
	CHECK(wait_got(1, 1));
	CHECK_OK(sio_write_message(b, CHAN, "b->a1", 5));
	CHECK(wait_got(0, 1));

	/* Mallory resends A's key-exchange message from her own address */
	int m = udp_bound(&ma);
	uint8_t kx[512];
	pthread_mutex_lock(&x.mu);
	size_t kl = x.kx_len;
	memcpy(kx, x.kx, kl);
	pthread_mutex_unlock(&x.mu);
	CHECK_EQ(kl, 175);
	uint64_t before = packets_in(b);
	for (int i = 0; i < 5; i++)
		CHECK_EQ(sendto(m, kx, kl, 0, (struct sockaddr *)&ba, sizeof ba), (ssize_t)kl);
	for (uint64_t end = now_ms() + 5000; now_ms() < end && packets_in(b) < before + 5;)
		sleep_ms(5);
	CHECK(packets_in(b) >= before + 5);
	/* B still talks to A, and nothing went to Mallory */
	CHECK_OK(sio_write_message(b, CHAN, "b->a2", 5));
	CHECK(wait_got(0, 2));
	CHECK_OK(sio_write_message(a, CHAN, "a->b2", 5));
	CHECK(wait_got(1, 2));
	CHECK_OK(sio_write_message(b, CHAN, "b->a3", 5));
	CHECK(wait_got(0, 3));
	CHECK_EQ(drain(m, NULL), 0);
	CHECK_EQ(atomic_load(&x.from_r[1]), 0);

	/* A roams: its data from the new address moves B's replies there */
	atomic_store(&x.cur, 1);
	CHECK_OK(sio_write_message(a, CHAN, "a->b3", 5));
	CHECK(wait_got(1, 3));
	CHECK_OK(sio_write_message(b, CHAN, "b->a4", 5));
	CHECK(wait_got(0, 4));
	CHECK(atomic_load(&x.from_r[1]) >= 1);
	CHECK_EQ(drain(m, NULL), 0);

	sio_session_free(a);
	sio_session_free(b);
	relay_close(&x);
	close(fb);
	close(m);
}

/* Mallory's copy of A's first message reaches B before the original: B's
 * first reply may go to her (within 3x what she sent), A's original (a
 * copy now, for B) points the replies back, and the session comes up.
 * (Were copies ignored before validation, B would answer Mallory only.) */
static void test_race_first_message(void)
{
	struct relay x;
	sio_session *a, *b;
	int fb;
	pair_open(&x, &fb, &a, &b, 0, 0, 1);
	CHECK_EQ(atomic_load(&x.raced), 1);
	CHECK_OK(sio_write_message(a, CHAN, "a->b1", 5));
	CHECK(wait_got(1, 1));
	CHECK_OK(sio_write_message(b, CHAN, "b->a1", 5));
	CHECK(wait_got(0, 1));
	/* (nothing at all when both arrived in one batch: B replies after it) */
	CHECK(atomic_load(&x.to_race) <= 3 * 175);
	sio_session_free(a);
	sio_session_free(b);
	relay_close(&x);
	close(fb);
}

/* Key renewals keep working once the address is validated (B retries its
 * own renewals on its timer again). */
static void test_rekey_after_validation(void)
{
	struct relay x;
	sio_session *a, *b;
	int fb;
	pair_open(&x, &fb, &a, &b, 0, 150000000, 0);
	sio_stats st;
	unsigned sent = 0;
	for (uint64_t end = now_ms() + 10000; now_ms() < end; sleep_ms(20)) {
		CHECK_OK(sio_write_message(a, CHAN, "a->b.", 5));
		CHECK_OK(sio_write_message(b, CHAN, "b->a.", 5));
		sent++;
		sio_session_stats(b, &st);
		if (st.rekeys >= 4)
			break;
	}
	sio_session_stats(b, &st);
	CHECK(st.rekeys >= 4);
	/* loopback loses nothing, and a renewal in mode 1 loses nothing */
	CHECK(wait_got(0, sent));
	CHECK(wait_got(1, sent));
	CHECK_EQ(sio_session_state(a), SIO_STATE_ESTABLISHED);
	CHECK_EQ(sio_session_state(b), SIO_STATE_ESTABLISHED);
	sio_session_free(a);
	sio_session_free(b);
	relay_close(&x);
	close(fb);
}

/* One captured first key-exchange message, sent once to a learning session
 * from an address that never says anything again: at most three times its
 * size comes back, however long we wait (B's retry timer stays quiet). */
static void test_amplification(void)
{
	struct sockaddr_in ca, ba, ma;
	int c = udp_bound(&ca), fb = udp_bound(&ba), m = udp_bound(&ma);
	int fa = socket(AF_INET, SOCK_DGRAM, 0);
	CHECK_OK(connect(fa, (struct sockaddr *)&ca, sizeof ca));
	sio_transport ta, tb;
	sio_transport_fd(&ta, fa, fa);
	sio_transport_fd(&tb, fb, fb);
	sio_options o;
	sio_options_default(&o);
	o.kx_retry_ns = 100000000; /* without the rule: ten resends a second */
	sio_session *a, *b;
	CHECK_OK(sio_session_new(&a, ida, ra, &ta, &o, NULL));
	CHECK_OK(sio_session_start(a));
	struct pollfd p = {c, POLLIN, 0};
	CHECK_EQ(poll(&p, 1, 5000), 1);
	uint8_t kx[512];
	ssize_t kl = recv(c, kx, sizeof kx, 0);
	CHECK_EQ(kl, 175);
	sio_session_free(a);
	close(fa);

	CHECK_OK(sio_session_new(&b, idb, NULL, &tb, &o, NULL)); /* learns any identity */
	CHECK_OK(sio_session_start(b));
	CHECK_EQ(sendto(m, kx, (size_t)kl, 0, (struct sockaddr *)&ba, sizeof ba), kl);
	size_t bytes = 0;
	unsigned n = 0;
	for (uint64_t end = now_ms() + 1500; now_ms() < end;) {
		p.fd = m;
		if (poll(&p, 1, 50) == 1)
			n += drain(m, &bytes);
	}
	fprintf(stderr, "amplification: %zd bytes in, %zu bytes in %u datagrams out (x%.2f)\n", kl,
		bytes, n, (double)bytes / (double)kl);
	CHECK(n >= 1); /* B did answer (its key-exchange message) */
	CHECK(bytes <= 3 * (size_t)kl);
	sio_session_free(b);
	close(fb);
	close(c);
	close(m);
}

int main(void)
{
	alarm(120);
	signal(SIGPIPE, SIG_IGN);
	CHECK_OK(sio_init());
	uint8_t sa[SIO_SEED_BYTES], sb[SIO_SEED_BYTES], pk[SIO_PUBLIC_KEY_BYTES];
	memset(sa, 0xa1, sizeof sa);
	memset(sb, 0xb2, sizeof sb);
	CHECK_OK(sio_identity_from_seed(&ida, sa));
	CHECK_OK(sio_identity_from_seed(&idb, sb));
	sio_identity_public_key(idb, pk);
	CHECK_OK(sio_remote_from_public_key(&ra, pk)); /* A pins B */
	sio_identity_public_key(ida, pk);
	CHECK_OK(sio_remote_from_public_key(&rb, pk)); /* B pins A */
	test_replay_and_roam();
	test_race_first_message();
	test_rekey_after_validation();
	test_amplification();
	sio_remote_free(ra);
	sio_remote_free(rb);
	sio_identity_free(ida);
	sio_identity_free(idb);
	return check_done("test_session_learn");
}
