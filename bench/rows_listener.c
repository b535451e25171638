/* Listener rows (issue #17): how many handshakes a listener completes per
 * second of its own CPU, against what the cryptography of one handshake
 * costs (docs/BENCHMARKS.md, "Listener handshake rate").
 *  - HandshakeCryptoBound: the responder's cryptography for one successful
 *    handshake, alone, in a loop on this thread (the same libsodium calls as
 *    src/core/kx.c, src/core/core.c and src/listener/listener_kx.c make for
 *    a peer without a PSK). cpu-ns/op is this thread's CPU time.
 *  - ListenerHandshakeRate: a listener in this process (blocking style, its
 *    worker pool at the default size), client processes forked at setup
 *    making fresh sessions (one handshake each, then freed) as fast as they
 *    can, several in flight each. One op = one peer accepted (and freed)
 *    by the program; ns/op is wall-clock, cpu-ns/op the CPU time of this
 *    whole process (every thread of the listener, and the thread accepting
 *    and freeing the peers) during the window: the clients are other
 *    processes and are not counted.
 * The target: (1 / cpu-ns of the listener) / (1 / cpu-ns of the bound)
 * >= 0.7. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "kx.h"
#include "secureio.h"

static uint64_t cpu_ns(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- the crypto bound ------------------------------------------------------ */

static const char sig_domain[] = "secureio/1 kx signature";
static const char th_domain[] = "secureio/1 transcript";
static const char key_domain[] = "secureio/1 traffic keys";

struct bound {
	uint8_t msg[SIO_KX_MSG_LEN]; /* an initiator's first message, validly signed */
	uint8_t sk[64], pk[32];       /* the responder's identity */
	uint8_t seen_key[crypto_shorthash_KEYBYTES];
};

static void bound_teardown(void *st)
{
	if (st) {
		sodium_memzero(st, sizeof(struct bound));
		free(st);
	}
}

static int bound_setup(void **st, const struct bench_row *r)
{
	(void)r;
	struct bound *b = calloc(1, sizeof *b);
	if (!b)
		return bench_fail("out of memory"), -1;
	uint8_t isk[64], ipk[32], esk[32];
	crypto_sign_keypair(ipk, isk);
	crypto_sign_keypair(b->pk, b->sk);
	randombytes_buf(b->seen_key, sizeof b->seen_key);
	sio_kx_fields f;
	memset(&f, 0, sizeof f);
	randombytes_buf(f.sid_sender, 16);
	f.gen = 1;
	f.flags = SIO_ANSWERS_ANSWER_AND_WAIT;
	f.created_ns = (uint64_t)time(NULL) * 1000000000u;
	randombytes_buf(esk, 32);
	crypto_scalarmult_base(f.epub, esk);
	memcpy(f.idpk, ipk, 32);
	sio_kx_build(b->msg, &f, isk);
	sodium_memzero(isk, sizeof isk);
	sodium_memzero(esk, sizeof esk);
	*st = b;
	return 0;
}

/* One responder handshake's cryptography. */
static int bound_one(struct bound *b)
{
	uint8_t h[crypto_shorthash_BYTES], sb[sizeof sig_domain - 1 + SIO_KX_SIGNED_LEN];
	uint8_t out[32], reply[SIO_KX_MSG_LEN], esk[32], ids[16], th[32], dh[32], prk[32];
	uint8_t k1[32], k2[32], sub[32];
	static const uint8_t one[32] = {1};
	/* listener: the first message's replay record (listener_kx.c seen_check) */
	crypto_shorthash(h, b->msg, SIO_KX_MSG_LEN, b->seen_key);
	/* new peer session: its session id and connection id (core.c, session.c) */
	randombytes_buf(ids, sizeof ids);
	/* the initiator's signature (kx.c sio_kx_verify) */
	memcpy(sb, sig_domain, sizeof sig_domain - 1);
	memcpy(sb + sizeof sig_domain - 1, b->msg, SIO_KX_SIGNED_LEN);
	if (crypto_sign_verify_detached(b->msg + SIO_KX_SIGNED_LEN, sb, sizeof sb, b->msg + 79) != 0)
		return -1;
	/* low-order check of its ephemeral key (kx.c sio_kx_low_order) */
	if (crypto_scalarmult(out, one, b->msg + 47) != 0)
		return -1;
	/* our round: ephemeral key pair, our message signed (core.c new_round) */
	randombytes_buf(esk, sizeof esk);
	memcpy(reply, b->msg, sizeof reply);
	crypto_scalarmult_base(reply + 47, esk);
	memcpy(reply + 79, b->pk, 32);
	memcpy(sb + sizeof sig_domain - 1, reply, SIO_KX_SIGNED_LEN);
	crypto_sign_detached(reply + SIO_KX_SIGNED_LEN, NULL, sb, sizeof sb, b->sk);
	/* keys (kx.c sio_kx_transcript, sio_kx_keys; aead.c sio_aead_setkey x2) */
	crypto_generichash_state gs;
	crypto_generichash_init(&gs, NULL, 0, 32);
	crypto_generichash_update(&gs, (const uint8_t *)th_domain, sizeof th_domain - 1);
	crypto_generichash_update(&gs, b->msg, SIO_KX_MSG_LEN);
	crypto_generichash_update(&gs, reply, SIO_KX_MSG_LEN);
	crypto_generichash_final(&gs, th, 32);
	if (crypto_scalarmult(dh, esk, b->msg + 47) != 0)
		return -1;
	crypto_generichash_init(&gs, NULL, 0, 32);
	crypto_generichash_update(&gs, (const uint8_t *)key_domain, sizeof key_domain - 1);
	crypto_generichash_update(&gs, dh, 32);
	crypto_generichash_update(&gs, th, 32);
	crypto_generichash_final(&gs, prk, 32);
	crypto_kdf_derive_from_key(k1, 32, 1, "sio1data", prk);
	crypto_kdf_derive_from_key(k2, 32, 2, "sio1data", prk);
	crypto_core_hchacha20(sub, ids, k1, NULL);
	crypto_core_hchacha20(sub, b->msg + 2, k2, NULL);
	sodium_memzero(esk, sizeof esk);
	sodium_memzero(dh, sizeof dh);
	sodium_memzero(prk, sizeof prk);
	sodium_memzero(k1, sizeof k1);
	sodium_memzero(k2, sizeof k2);
	sodium_memzero(sub, sizeof sub);
	return 0;
}

static int bound_run(void *st, uint64_t n)
{
	struct bound *b = st;
	bench_start();
	uint64_t c0 = cpu_ns(CLOCK_THREAD_CPUTIME_ID);
	for (uint64_t i = 0; i < n; i++)
		if (bound_one(b) != 0) {
			bench_stop();
			return bench_fail("the initiator's message did not verify"), -1;
		}
	uint64_t c1 = cpu_ns(CLOCK_THREAD_CPUTIME_ID);
	bench_stop();
	bench_cpu_add(c1 - c0);
	return 0;
}

/* ---- the listener ------------------------------------------------------------ */

#define HS_CLIENTS_MAX 8
#define HS_INFLIGHT 16 /* handshakes in flight per client process */
#define HS_KEEP 64     /* established sessions a client keeps before freeing the oldest */

struct hs {
	sio_identity *id;
	sio_listener *l;
	struct sockaddr_in addr;
	int nclients;
	pid_t pid[HS_CLIENTS_MAX];
	int cmd[HS_CLIENTS_MAX], ack[HS_CLIENTS_MAX]; /* to and from each client */
};

/* A client process: on 'g' makes handshakes until 's', then frees what it
 * holds and answers 'k'; ends when the command pipe does. */
static void hs_client(int idx, const struct sockaddr_in *srv, const uint8_t pk[32], int cmd, int ack)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	sio_identity *id;
	sio_remote *r;
	if (sio_identity_generate(&id) || sio_remote_from_public_key(&r, pk))
		_exit(2);
	sio_options o;
	memset(&o, 0, sizeof o);
	o.listener_peer = 1;
	o.keepalive_ns = -1;
	uint32_t addr = (127u << 24) | (2u << 16) | (uint32_t)(1 + idx);
	sio_session *fly[HS_INFLIGHT] = {0}, *keep[HS_KEEP] = {0};
	size_t kept = 0;
	for (;;) {
		char c;
		if (read(cmd, &c, 1) != 1)
			_exit(0);
		if (c != 'g')
			continue;
		int stop = 0;
		while (!stop) {
			for (int i = 0; i < HS_INFLIGHT; i++) {
				if (fly[i])
					continue;
				int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
				struct sockaddr_in a = {0};
				a.sin_family = AF_INET;
				a.sin_addr.s_addr = htonl(addr);
				if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0)
					_exit(2);
				sio_transport t;
				sio_transport_fd(&t, fd, fd);
				memcpy(&t.peer, srv, sizeof *srv);
				t.peer_len = sizeof *srv;
				t.close_fds = 1;
				if (sio_session_new(&fly[i], id, r, &t, &o, NULL) || sio_session_start_loop(fly[i]))
					_exit(2);
			}
			struct pollfd pf[HS_INFLIGHT + HS_KEEP + 1];
			sio_session *who[HS_INFLIGHT + HS_KEEP];
			int np = 0, to = 20;
			for (int i = 0; i < HS_INFLIGHT; i++) {
				int t = sio_session_timeout_ms(fly[i]);
				if (t >= 0 && t < to)
					to = t;
				who[np] = fly[i];
				pf[np++] = (struct pollfd){sio_session_fd(fly[i]), POLLIN, 0};
			}
			for (size_t i = 0; i < HS_KEEP; i++)
				if (keep[i]) {
					who[np] = keep[i];
					pf[np++] = (struct pollfd){sio_session_fd(keep[i]), POLLIN, 0};
				}
			pf[np] = (struct pollfd){cmd, POLLIN, 0};
			poll(pf, (nfds_t)np + 1, to);
			for (int i = 0; i < np; i++)
				if (pf[i].revents || i < HS_INFLIGHT)
					sio_session_process(who[i]);
			if (pf[np].revents) {
				if (read(cmd, &c, 1) != 1)
					_exit(0);
				stop = c == 's';
			}
			for (int i = 0; i < HS_INFLIGHT; i++) {
				sio_state s = sio_session_state(fly[i]);
				if (s < SIO_STATE_ESTABLISHED)
					continue;
				if (s == SIO_STATE_ESTABLISHED) {
					/* kept a little while, so that the listener has
					 * what it needs from us before we leave */
					size_t k = kept++ % HS_KEEP;
					if (keep[k])
						sio_session_free(keep[k]);
					keep[k] = fly[i];
				} else {
					sio_session_free(fly[i]);
				}
				fly[i] = NULL;
			}
		}
		for (int i = 0; i < HS_INFLIGHT; i++) {
			if (fly[i])
				sio_session_free(fly[i]);
			fly[i] = NULL;
		}
		for (size_t i = 0; i < HS_KEEP; i++) {
			if (keep[i])
				sio_session_free(keep[i]);
			keep[i] = NULL;
		}
		if (write(ack, "k", 1) != 1)
			_exit(0);
	}
}

static void hs_teardown(void *st)
{
	struct hs *h = st;
	if (!h)
		return;
	for (int i = 0; i < h->nclients; i++) {
		close(h->cmd[i]);
		close(h->ack[i]);
	}
	for (int i = 0; i < h->nclients; i++)
		waitpid(h->pid[i], NULL, 0);
	sio_listener_free(h->l);
	sio_identity_free(h->id);
	free(h);
}

static int hs_setup(void **st, const struct bench_row *r)
{
	(void)r;
	struct hs *h = calloc(1, sizeof *h);
	if (!h)
		return bench_fail("out of memory"), -1;
	if (sio_identity_generate(&h->id))
		return free(h), bench_fail("identity"), -1;
	uint8_t pk[32];
	sio_identity_public_key(h->id, pk);
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), one = 1, big = 16 << 20;
	/* SO_REUSEPORT before bind: a worker pool may open a socket per worker */
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big))
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
	h->addr.sin_family = AF_INET;
	h->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t al = sizeof h->addr;
	if (fd < 0 || bind(fd, (struct sockaddr *)&h->addr, sizeof h->addr) ||
	    getsockname(fd, (struct sockaddr *)&h->addr, &al)) {
		if (fd >= 0)
			close(fd);
		hs_teardown(h);
		return bench_fail("socket: %s", strerror(errno)), -1;
	}
	/* clients first: forked before the listener has threads */
	long nc = sysconf(_SC_NPROCESSORS_ONLN);
	h->nclients = nc < 2 ? 2 : nc > HS_CLIENTS_MAX ? HS_CLIENTS_MAX : (int)nc;
	fflush(stdout);
	for (int i = 0; i < h->nclients; i++) {
		int cp[2], ap[2];
		if (pipe2(cp, O_CLOEXEC) || pipe2(ap, O_CLOEXEC)) {
			close(fd);
			h->nclients = i;
			hs_teardown(h);
			return bench_fail("pipe"), -1;
		}
		pid_t pid = fork();
		if (pid == 0) {
			close(fd);
			close(cp[1]);
			close(ap[0]);
			for (int j = 0; j < i; j++) { /* the other clients' pipes */
				close(h->cmd[j]);
				close(h->ack[j]);
			}
			hs_client(i, &h->addr, pk, cp[0], ap[1]);
			_exit(0);
		}
		close(cp[0]);
		close(ap[1]);
		h->pid[i] = pid;
		h->cmd[i] = cp[1];
		h->ack[i] = ap[0];
	}
	sio_options so;
	memset(&so, 0, sizeof so);
	so.keepalive_ns = -1;
	sio_listener_options lo;
	memset(&lo, 0, sizeof lo);
	lo.session_opts = &so;
	lo.max_sessions = 1u << 20;
	lo.max_half_open = 4096; /* clients keep at most 8 x 16 in flight */
	lo.cookie_threshold = -1;
	lo.max_memory = UINT64_MAX;
	lo.close_fd = 1;
	if (sio_listener_new(&h->l, h->id, fd, NULL, &lo) || sio_listener_start(h->l)) {
		close(fd);
		hs_teardown(h);
		return bench_fail("listener"), -1;
	}
	*st = h;
	return 0;
}

/* Accepts and frees peers until none came for QUIET_MS. */
static void hs_drain(struct hs *h, int quiet_ms)
{
	sio_session *s;
	while (sio_listener_accept(h->l, &s, quiet_ms) == 0)
		sio_session_free(s);
}

static int hs_run(void *st, uint64_t n)
{
	struct hs *h = st;
	hs_drain(h, 0);
	for (int i = 0; i < h->nclients; i++)
		if (write(h->cmd[i], "g", 1) != 1)
			return bench_fail("client %d gone", i), -1;
	uint64_t got = 0;
	int rc = 0;
	/* steady state first: as many peers as the clients keep in flight,
	 * so that the window does not include filling the pipeline */
	for (int w = 0; w < h->nclients * HS_INFLIGHT; w++) {
		sio_session *s;
		if (sio_listener_accept(h->l, &s, 30000) != 0) {
			rc = -1;
			break;
		}
		sio_session_free(s);
	}
	bench_start();
	uint64_t c0 = cpu_ns(CLOCK_PROCESS_CPUTIME_ID);
	while (rc == 0 && got < n) {
		sio_session *s;
		int r = sio_listener_accept(h->l, &s, 30000);
		if (r != 0) {
			rc = -1;
			break;
		}
		sio_session_free(s);
		got++;
	}
	uint64_t c1 = cpu_ns(CLOCK_PROCESS_CPUTIME_ID);
	bench_stop();
	bench_cpu_add(c1 - c0);
	int gone = 0;
	for (int i = 0; i < h->nclients; i++) {
		char c;
		if (write(h->cmd[i], "s", 1) != 1 || read(h->ack[i], &c, 1) != 1)
			gone = 1;
	}
	hs_drain(h, 200); /* exchanges still in flight when the clients stopped */
	if (gone && !rc)
		return bench_fail("a client process ended"), -1;
	if (rc)
		return bench_fail("%llu of %llu peers accepted (no peer for 30 s%s)", (unsigned long long)got,
				  (unsigned long long)n, got ? "" : ", already while warming up"), -1;
	return 0;
}

const struct bench_row bench_rows_listener[] = {
	{"HandshakeCryptoBound", "limit", 0, 0, bound_setup, bound_run, bound_teardown, 0},
	{"ListenerHandshakeRate", "listener", 0, 0, hs_setup, hs_run, hs_teardown, 0},
	{NULL, NULL, 0, 0, NULL, NULL, NULL, 0},
};
