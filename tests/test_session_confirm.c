/* sio_confirm_identity: both sides get the same fresh 32-byte key, a second
 * run gives another key, the transport is handed back intact (descriptor
 * open, blocking again, no byte of what the peer writes next swallowed), and
 * a wrong identity fails with a clear error. Over a UNIX stream, TCP and
 * UDP. */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "sess_pair.h"

struct side {
	const sio_identity *id;
	const sio_remote *remote;
	sio_transport t;
	int fd;
	int rc;
	uint8_t key[32];
	int after_rc;
	char after[8];
	int writer; /* writes "tail" right after confirming; the other reads it */
};

static void *run_side(void *arg)
{
	struct side *sd = arg;
	sio_options o;
	memset(&o, 0, sizeof o);
	o.kx_retry_ns = 100000000;
	o.kx_timeout_ns = 2000000000;
	sd->rc = sio_confirm_identity(sd->id, sd->remote, &sd->t, &o, sd->key, 20000);
	if (sd->rc)
		return NULL;
	if (sd->writer) {
		sd->after_rc = (int)write(sd->fd, "tail", 4);
	} else {
		memset(sd->after, 0, sizeof sd->after);
		sd->after_rc = (int)read(sd->fd, sd->after, 4); /* blocking fd again */
	}
	return NULL;
}

static void confirm_pair(enum pair_kind k, int wrong)
{
	struct pair p;
	memset(&p, 0, sizeof p);
	sio_transport ta, tb;
	CHECK_OK(pair_identities(&p, 1, 2));
	CHECK_OK(pair_transports(&p, k, &ta, &tb));
	sio_remote *expect_b = p.ra;
	sio_identity *other = NULL;
	sio_remote *wrong_r = NULL;
	if (wrong) {
		uint8_t seed[32], pk[32];
		memset(seed, 9, sizeof seed);
		CHECK_OK(sio_identity_from_seed(&other, seed));
		sio_identity_public_key(other, pk);
		CHECK_OK(sio_remote_from_public_key(&wrong_r, pk));
		expect_b = wrong_r;
	}
	uint8_t first[32];
	for (int round = 0; round < (wrong ? 1 : 2); round++) {
		struct side a = {p.ida, expect_b, ta, p.fds[0], -1, {0}, 0, {0}, 0};
		struct side b = {p.idb, p.rb, tb, p.fds[1], -1, {0}, 0, {0}, 1};
		pthread_t th;
		pthread_create(&th, NULL, run_side, &b);
		run_side(&a);
		pthread_join(th, NULL);
		if (wrong) {
			CHECK_EQ(a.rc, SIO_EAUTH);
			CHECK(b.rc < 0);
			uint8_t zero[32] = {0};
			CHECK(memcmp(a.key, zero, 32) == 0); /* nothing leaks out on failure */
			break;
		}
		CHECK_OK(a.rc);
		CHECK_OK(b.rc);
		CHECK(memcmp(a.key, b.key, 32) == 0);
		uint8_t zero[32] = {0};
		CHECK(memcmp(a.key, zero, 32) != 0);
		if (round == 0)
			memcpy(first, a.key, 32);
		else
			CHECK(memcmp(first, a.key, 32) != 0); /* fresh every time */
		CHECK_EQ(b.after_rc, 4);
		CHECK_EQ(a.after_rc, 4);
		CHECK(memcmp(a.after, "tail", 4) == 0);
		CHECK(!(fcntl(p.fds[0], F_GETFL) & O_NONBLOCK));
	}
	sio_remote_free(wrong_r);
	sio_identity_free(other);
	pair_free(&p);
}

int main(void)
{
	alarm(300);
	signal(SIGPIPE, SIG_DFL);
	CHECK_OK(sio_init());
	confirm_pair(PK_UNIX_STREAM, 0);
	confirm_pair(PK_TCP, 0);
	confirm_pair(PK_UDP_CONNECTED, 0);
	confirm_pair(PK_UNIX_STREAM, 1);
	return check_done("test_session_confirm");
}
