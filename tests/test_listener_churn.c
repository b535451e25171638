/* Listener churn with many workers (issue #17), for ThreadSanitizer above
 * all (`make tsan` runs every registered test): an 8-worker listener on an
 * SO_REUSEPORT socket, 200 in-process peers exchanging traffic plus 20
 * peers in a child process, and, while traffic flows:
 *   - 20 clients close gracefully: their accepted sessions reach CLOSED;
 *   - 20 clients are freed abruptly (their process would have died);
 *   - the child process is killed with SIGKILL;
 *   - the program frees 20 accepted sessions from its own threads while
 *     their clients keep sending (later datagrams: drop_unknown);
 *   - finally sio_listener_free() while a program thread keeps writing on
 *     the remaining accepted sessions and their clients keep sending: every
 *     one of them then ends (CLOSED), and freeing them afterwards is safe.
 * The surviving 140 peers must have every reply, in order and intact, up
 * to the listener's end. Outcomes are counted, never timed (generous
 * deadlines only). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "lib/lclient.h"
#include "secureio.h"

#define NPEERS 200
#define NCHILD 20
#define NPROG 4 /* program threads accepting (and freeing) sessions */
#define TYPE_DATA 9u
#define MSGLEN 200
#define DEADLINE_MS 120000

enum { CAT_KEEP, CAT_CLOSE, CAT_KILL, CAT_SRVFREE };
static int category(int idx)
{
	switch (idx % 10) {
	case 1:
		return CAT_CLOSE;
	case 2:
		return CAT_KILL;
	case 3:
		return CAT_SRVFREE;
	default:
		return CAT_KEEP;
	}
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void msg_fill(uint8_t *b, uint32_t peer, uint32_t seq)
{
	memcpy(b, &peer, 4);
	memcpy(b + 4, &seq, 4);
	for (size_t j = 8; j < MSGLEN; j++)
		b[j] = (uint8_t)(peer * 7 + seq * 13 + j);
}

/* ---- the child: 20 blocking peers sending until SIGKILL ------------------- */

static void child_main(int rfd)
{
	struct sockaddr_in sa;
	uint8_t spk[32];
	if (read(rfd, &sa, sizeof(sa)) != (ssize_t)sizeof(sa) || read(rfd, spk, 32) != 32)
		_exit(1);
	if (sio_init() != 0)
		_exit(1);
	sio_remote *srv = NULL;
	sio_session *s[NCHILD];
	if (sio_remote_from_public_key(&srv, spk) != 0)
		_exit(1);
	for (int i = 0; i < NCHILD; i++) {
		sio_identity *id = NULL;
		int fd = udp_loopback(NULL, 0, 0);
		if (sio_identity_generate(&id) != 0 || lclient_new(&s[i], id, srv, fd, &sa, sizeof(sa), NULL) != 0 ||
		    sio_session_start(s[i]) != 0)
			_exit(1);
		sio_identity_free(id);
	}
	for (uint32_t seq = 0;; seq++) {
		for (int i = 0; i < NCHILD; i++) {
			uint8_t m[MSGLEN];
			msg_fill(m, 1000u + (uint32_t)i, seq);
			sio_write_message_async(s[i], TYPE_DATA, m, sizeof(m), NULL, NULL, NULL);
		}
		usleep(5000);
	}
}

/* ---- the listener's side ------------------------------------------------------ */

struct slot {
	sio_session *s;
	atomic_int peer; /* -1 until its first message */
	atomic_int got, bad, ended, end_err;
};
static struct slot slots[2 * (NPEERS + NCHILD)];
static atomic_int nslots;
static uint8_t peer_pk[NPEERS][32];

static void srv_msg(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	struct slot *sl = ctx;
	uint32_t p, q;
	if (len != MSGLEN) {
		atomic_fetch_add(&sl->bad, 1);
		return;
	}
	memcpy(&p, d, 4);
	memcpy(&q, d + 4, 4);
	if (atomic_load(&sl->peer) < 0)
		atomic_store(&sl->peer, (int)p);
	atomic_fetch_add(&sl->got, 1);
	(void)sio_write_message(s, type, d, len); /* echo; fails once the session ends */
}

static void srv_end(sio_session *s, uint32_t type, int err, void *ctx)
{
	(void)s;
	(void)type;
	struct slot *sl = ctx;
	atomic_store(&sl->end_err, err);
	atomic_store(&sl->ended, 1);
}

static pthread_mutex_t slots_mu = PTHREAD_MUTEX_INITIALIZER;

static void on_session(sio_listener *l, sio_session *s, void *ctx)
{
	(void)l;
	(void)ctx;
	int k = atomic_fetch_add(&nslots, 1);
	if (k >= (int)(sizeof(slots) / sizeof(slots[0])))
		return;
	atomic_store(&slots[k].peer, -1);
	pthread_mutex_lock(&slots_mu); /* (workers write, program threads read) */
	slots[k].s = s;
	pthread_mutex_unlock(&slots_mu);
	sio_set_handler(s, TYPE_DATA, srv_msg, srv_end, &slots[k]);
}

static struct slot *slot_of(sio_session *s)
{
	/* newest first: a freed session's address may be reused */
	struct slot *r = NULL;
	pthread_mutex_lock(&slots_mu);
	int n = atomic_load(&nslots);
	if (n > (int)(sizeof(slots) / sizeof(slots[0])))
		n = (int)(sizeof(slots) / sizeof(slots[0]));
	for (int i = n - 1; i >= 0 && !r; i--)
		if (slots[i].s == s)
			r = &slots[i];
	pthread_mutex_unlock(&slots_mu);
	return r;
}

/* accepted sessions, shared by the program's threads */
static pthread_mutex_t acc_mu = PTHREAD_MUTEX_INITIALIZER;
static sio_session *acc[NPEERS + NCHILD + 16];
static struct slot *acc_slot[NPEERS + NCHILD + 16];
static int nacc;
static atomic_int srv_freed, accepting, writing;
static sio_listener *lis;

static void *prog_thread(void *arg)
{
	(void)arg;
	while (atomic_load(&accepting)) {
		sio_session *s = NULL;
		if (sio_listener_accept(lis, &s, 20) == 0) {
			pthread_mutex_lock(&acc_mu);
			acc_slot[nacc] = slot_of(s);
			acc[nacc++] = s;
			pthread_mutex_unlock(&acc_mu);
		}
		/* free the sessions of CAT_SRVFREE peers once they had some
		 * traffic, from this thread, while their clients keep sending */
		pthread_mutex_lock(&acc_mu);
		for (int i = 0; i < nacc; i++) {
			struct slot *sl = acc_slot[i];
			int p = sl ? atomic_load(&sl->peer) : -1;
			if (acc[i] && p >= 0 && p < NPEERS && category(p) == CAT_SRVFREE &&
			    atomic_load(&sl->got) >= 5) {
				sio_session *f = acc[i];
				acc[i] = NULL;
				pthread_mutex_unlock(&acc_mu);
				sio_session_free(f);
				atomic_fetch_add(&srv_freed, 1);
				pthread_mutex_lock(&acc_mu);
			}
		}
		pthread_mutex_unlock(&acc_mu);
	}
	return NULL;
}

/* Writes on every accepted session still held, until told to stop (also
 * across sio_listener_free). */
static void *writer_thread(void *arg)
{
	(void)arg;
	uint8_t m[MSGLEN];
	msg_fill(m, 7777, 0);
	while (atomic_load(&writing)) {
		pthread_mutex_lock(&acc_mu);
		for (int i = 0; i < nacc; i++)
			if (acc[i])
				(void)sio_write_message(acc[i], TYPE_DATA + 1, m, sizeof(m));
		pthread_mutex_unlock(&acc_mu);
		usleep(50000);
	}
	return NULL;
}

/* ---- in-process clients: event-loop sessions on two threads ----------------- */

struct client {
	sio_identity *id;
	sio_session *s;
	int idx, est, closing, killed;
	uint32_t sent, next;
	_Atomic uint32_t got; /* replies in order and intact (main reads it) */
	int bad;
	uint64_t last_sent;
};
static struct client cl[NPEERS];
static atomic_int clients_run;
static sio_remote *srv_remote;
static struct sockaddr_in srv_addr;

static void cli_msg(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	(void)s;
	(void)type;
	struct client *c = ctx;
	uint8_t want[MSGLEN];
	uint32_t p, q;
	if (len != MSGLEN) {
		c->bad++;
		return;
	}
	memcpy(&p, d, 4);
	memcpy(&q, d + 4, 4);
	msg_fill(want, (uint32_t)c->idx, q);
	/* in order and intact; a datagram lost under this load is not an
	 * error here (nothing is retransmitted) */
	if (memcmp(d, want, MSGLEN) != 0 || q >= c->sent || (c->got && q < c->next))
		c->bad++;
	else {
		c->got++;
		c->next = q + 1;
	}
}

static void *client_thread(void *arg)
{
	int half = *(int *)arg;
	int lo = half * NPEERS / 2, hi = (half + 1) * NPEERS / 2;
	int ep = epoll_create1(EPOLL_CLOEXEC);
	for (int i = lo; i < hi; i++) {
		struct client *c = &cl[i];
		int fd = udp_loopback(NULL, 0, 0);
		if (lclient_new(&c->s, c->id, srv_remote, fd, &srv_addr, sizeof(srv_addr), NULL) != 0) {
			c->bad++;
			continue;
		}
		sio_set_handler(c->s, TYPE_DATA, cli_msg, NULL, c);
		if (sio_session_start_loop(c->s) != 0)
			c->bad++;
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
		epoll_ctl(ep, EPOLL_CTL_ADD, sio_session_fd(c->s), &ev);
	}
	uint64_t sweep = 0;
	while (atomic_load(&clients_run)) {
		struct epoll_event evs[64];
		int k = epoll_wait(ep, evs, 64, 5);
		for (int i = 0; i < k; i++) {
			struct client *c = evs[i].data.ptr;
			if (c->s)
				sio_session_process(c->s);
		}
		uint64_t t = now_ms();
		int do_sweep = t >= sweep;
		if (do_sweep)
			sweep = t + 5;
		for (int i = lo; i < hi; i++) {
			struct client *c = &cl[i];
			if (!c->s)
				continue;
			if (do_sweep && sio_session_timeout_ms(c->s) == 0)
				sio_session_process(c->s);
			if (!c->est && sio_session_state(c->s) == SIO_STATE_ESTABLISHED)
				c->est = 1;
			int cat = category(c->idx);
			if (cat == CAT_CLOSE && c->got >= 5 && !c->closing) {
				c->closing = 1;
				sio_close(c->s);
				sio_session_process(c->s);
			}
			if (cat == CAT_KILL && c->got >= 5) {
				epoll_ctl(ep, EPOLL_CTL_DEL, sio_session_fd(c->s), NULL);
				sio_session_free(c->s); /* abrupt: as if its process died */
				c->s = NULL;
				c->killed = 1;
				continue;
			}
			/* one message every 10 ms with at most two unanswered;
			 * without answers (a session the program freed, a lost
			 * datagram) one every 100 ms */
			if (c->est && !c->closing &&
			    ((c->sent - c->next < 2 && t >= c->last_sent + 10) || t >= c->last_sent + 100)) {
				uint8_t m[MSGLEN];
				msg_fill(m, (uint32_t)c->idx, c->sent);
				if (sio_write_message(c->s, TYPE_DATA, m, MSGLEN) == 0)
					c->sent++;
				c->last_sent = t;
				sio_session_process(c->s);
			}
		}
	}
	close(ep);
	return NULL;
}

int main(void)
{
	alarm(300);
	/* the child is forked before any thread exists */
	int pp[2];
	if (pipe(pp) != 0)
		return 1;
	pid_t child = fork();
	if (child == 0) {
		close(pp[1]);
		child_main(pp[0]);
	}
	close(pp[0]);
	CHECK_OK(sio_init());
	sio_identity *srv_id = NULL;
	uint8_t srv_pk[32];
	CHECK_OK(sio_identity_generate(&srv_id));
	sio_identity_public_key(srv_id, srv_pk);
	CHECK_OK(sio_remote_from_public_key(&srv_remote, srv_pk));
	for (int i = 0; i < NPEERS; i++) {
		CHECK_OK(sio_identity_generate(&cl[i].id));
		sio_identity_public_key(cl[i].id, peer_pk[i]);
		cl[i].idx = i;
	}
	int sfd = udp_loopback(&srv_addr, UDP_REUSEPORT, 0);
	CHECK(sfd >= 0);
	sio_listener_options lo;
	memset(&lo, 0, sizeof(lo));
	lo.workers = 8;
	lo.close_fd = 1;
	lo.on_session = on_session;
	lo.max_memory = (uint64_t)(NPEERS + NCHILD) * (8u << 20);
	CHECK_OK(sio_listener_new(&lis, srv_id, sfd, NULL, &lo));
	if (!lis)
		return check_done("test_listener_churn");
	CHECK_OK(sio_listener_start(lis));
	CHECK(write(pp[1], &srv_addr, sizeof(srv_addr)) == (ssize_t)sizeof(srv_addr));
	CHECK(write(pp[1], srv_pk, 32) == 32);
	close(pp[1]);

	atomic_store(&accepting, 1);
	atomic_store(&clients_run, 1);
	atomic_store(&writing, 1);
	pthread_t prog[NPROG], cth[2], wth;
	int halves[2] = {0, 1};
	for (int i = 0; i < NPROG; i++)
		CHECK(pthread_create(&prog[i], NULL, prog_thread, NULL) == 0);
	for (int i = 0; i < 2; i++)
		CHECK(pthread_create(&cth[i], NULL, client_thread, &halves[i]) == 0);
	CHECK(pthread_create(&wth, NULL, writer_thread, NULL) == 0);

	/* until every category did its part: all peers accepted (the child's
	 * too, then it is killed), the program freed its 20, the kept peers
	 * have 20 replies */
	uint64_t end = now_ms() + DEADLINE_MS;
	int killed_child = 0;
	for (;;) {
		sio_listener_stats st;
		sio_listener_stats_get(lis, &st);
		int keep_done = 0;
		for (int i = 0; i < NPEERS; i++)
			keep_done += category(i) == CAT_KEEP && atomic_load(&cl[i].got) >= 20;
		if (!killed_child && st.accepted >= NPEERS + NCHILD) {
			kill(child, SIGKILL);
			waitpid(child, NULL, 0);
			killed_child = 1;
		}
		if ((killed_child && keep_done == NPEERS * 7 / 10 && atomic_load(&srv_freed) == NPEERS / 10) ||
		    now_ms() >= end)
			break;
		usleep(10000);
	}
	if (!killed_child) {
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
	}
	CHECK_EQ(atomic_load(&srv_freed), NPEERS / 10);
	atomic_store(&accepting, 0);
	for (int i = 0; i < NPROG; i++)
		pthread_join(prog[i], NULL);
	sio_listener_stats st;
	sio_listener_stats_get(lis, &st);
	CHECK_EQ(st.accepted, NPEERS + NCHILD);
	CHECK_EQ(nacc, NPEERS + NCHILD);
	if (st.accepted != NPEERS + NCHILD) {
		/* which in-process clients never got in, and how they ended */
		for (int i = 0; i < NPEERS; i++)
			if (!cl[i].est)
				printf("client %d not established: %s\n", i,
				       cl[i].s ? sio_state_name(sio_session_state(cl[i].s)) : "freed");
		printf("half-open %llu expired %llu drop_replay %llu drop_half_open %llu drop_unknown %llu\n",
		       (unsigned long long)st.half_open, (unsigned long long)st.expired,
		       (unsigned long long)st.drop_replay, (unsigned long long)st.drop_half_open,
		       (unsigned long long)st.drop_unknown);
	}

	/* graceful closes reached CLOSED on the listener's side */
	int closed_ok = 0;
	for (int i = 0; i < nacc; i++) {
		struct slot *sl = acc_slot[i];
		int p = sl ? atomic_load(&sl->peer) : -1;
		if (acc[i] && p >= 0 && p < NPEERS && category(p) == CAT_CLOSE)
			closed_ok += sio_session_wait_state(acc[i], SIO_STATE_CLOSED, 20000) == 0;
	}
	CHECK_EQ(closed_ok, NPEERS / 10);

	/* the listener goes while sessions are in use: a program thread
	 * writes on them, their clients keep sending */
	sio_listener_free(lis);
	lis = NULL;
	int ended = 0, held = 0;
	for (int i = 0; i < nacc; i++) {
		if (!acc[i])
			continue;
		held++;
		ended += sio_session_wait_state(acc[i], SIO_STATE_CLOSED, 20000) == 0;
	}
	CHECK_EQ(held, NPEERS + NCHILD - NPEERS / 10);
	CHECK_EQ(ended, held);
	atomic_store(&writing, 0);
	pthread_join(wth, NULL);
	atomic_store(&clients_run, 0);
	for (int i = 0; i < 2; i++)
		pthread_join(cth[i], NULL);

	/* the kept peers: every reply in order and intact */
	int bad = 0, kept = 0, srv_bad = 0;
	for (int i = 0; i < NPEERS; i++) {
		bad += cl[i].bad;
		if (category(i) == CAT_KEEP)
			kept += atomic_load(&cl[i].got) >= 20;
	}
	for (int i = 0; i < atomic_load(&nslots); i++)
		srv_bad += atomic_load(&slots[i].bad);
	CHECK_EQ(bad, 0);
	CHECK_EQ(srv_bad, 0);
	CHECK_EQ(kept, NPEERS * 7 / 10);
	printf("churn: %d accepted (%d in a child killed with SIGKILL), %d freed by the program, "
	       "%d closed by their clients, %d clients freed abruptly; %d sessions ended with the "
	       "listener; workers %llu, handoffs %llu, drop_unknown %llu\n",
	       nacc, NCHILD, atomic_load(&srv_freed), closed_ok, NPEERS / 10, ended,
	       (unsigned long long)st.workers, (unsigned long long)st.handoffs,
	       (unsigned long long)st.drop_unknown);

	for (int i = 0; i < nacc; i++)
		sio_session_free(acc[i]);
	for (int i = 0; i < NPEERS; i++) {
		sio_session_free(cl[i].s);
		sio_identity_free(cl[i].id);
	}
	sio_remote_free(srv_remote);
	sio_identity_free(srv_id);
	return check_done("test_listener_churn");
}
