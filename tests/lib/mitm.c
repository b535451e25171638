/* In-process man-in-the-middle UDP relay for attack tests (see mitm.h). */
#include "mitm.h"
#include "lclient.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MITM_MAX_RECORD 8192

struct rec {
	uint8_t *p;
	size_t len;
};

struct mitm {
	int fd[4]; /* session A, relay side A, relay side B, session B */
	int wake[2];
	pthread_t th;
	pthread_mutex_t mu;
	mitm_filter_fn filter;
	void *ctx;
	struct rec rec[2][MITM_MAX_RECORD];
	size_t n[2];
	int norec;
};

static void *relay(void *arg)
{
	mitm *m = arg;
	static __thread uint8_t buf[65536];
	struct pollfd pf[3] = {{m->fd[1], POLLIN, 0}, {m->fd[2], POLLIN, 0}, {m->wake[0], POLLIN, 0}};
	for (;;) {
		if (poll(pf, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pf[2].revents)
			break;
		for (int side = 0; side < 2; side++) {
			if (!(pf[side].revents & POLLIN))
				continue;
			ssize_t r = recv(m->fd[1 + side], buf, sizeof buf, MSG_DONTWAIT);
			if (r < 0)
				continue;
			size_t len = (size_t)r;
			int dir = side == 0 ? MITM_A2B : MITM_B2A, fwd = 1;
			pthread_mutex_lock(&m->mu);
			if (!m->norec && m->n[dir] < MITM_MAX_RECORD) {
				struct rec *rc = &m->rec[dir][m->n[dir]];
				rc->p = malloc(len ? len : 1);
				if (rc->p) {
					memcpy(rc->p, buf, len);
					rc->len = len;
					m->n[dir]++;
				}
			}
			if (m->filter)
				fwd = m->filter(m->ctx, dir, buf, &len);
			pthread_mutex_unlock(&m->mu);
			if (fwd)
				send(m->fd[side == 0 ? 2 : 1], buf, len, MSG_DONTWAIT);
		}
	}
	return NULL;
}

int mitm_open(mitm **out, int *fd_a, int *fd_b)
{
	mitm *m = calloc(1, sizeof *m);
	struct sockaddr_in ad[4];
	if (!m)
		return -1;
	for (int i = 0; i < 4; i++)
		if ((m->fd[i] = udp_loopback(&ad[i], 0, 4 << 20)) < 0)
			goto fail;
	/* A <-> relay A, relay B <-> B */
	if (connect(m->fd[0], (struct sockaddr *)&ad[1], sizeof ad[1]) ||
	    connect(m->fd[1], (struct sockaddr *)&ad[0], sizeof ad[0]) ||
	    connect(m->fd[2], (struct sockaddr *)&ad[3], sizeof ad[3]) ||
	    connect(m->fd[3], (struct sockaddr *)&ad[2], sizeof ad[2]))
		goto fail;
	if (pipe(m->wake))
		goto fail;
	pthread_mutex_init(&m->mu, NULL);
	if (pthread_create(&m->th, NULL, relay, m))
		goto fail;
	*fd_a = m->fd[0];
	*fd_b = m->fd[3];
	*out = m;
	return 0;
fail:
	for (int i = 0; i < 4; i++)
		if (m->fd[i] > 0)
			close(m->fd[i]);
	free(m);
	return -1;
}

void mitm_set_filter(mitm *m, mitm_filter_fn fn, void *ctx)
{
	pthread_mutex_lock(&m->mu);
	m->filter = fn;
	m->ctx = ctx;
	pthread_mutex_unlock(&m->mu);
}

void mitm_record(mitm *m, int on)
{
	pthread_mutex_lock(&m->mu);
	m->norec = !on;
	pthread_mutex_unlock(&m->mu);
}

size_t mitm_count(mitm *m, int dir)
{
	pthread_mutex_lock(&m->mu);
	size_t n = m->n[dir];
	pthread_mutex_unlock(&m->mu);
	return n;
}

size_t mitm_get(mitm *m, int dir, size_t i, uint8_t *buf, size_t cap)
{
	size_t len = 0;
	pthread_mutex_lock(&m->mu);
	if (i < m->n[dir] && m->rec[dir][i].len <= cap) {
		len = m->rec[dir][i].len;
		memcpy(buf, m->rec[dir][i].p, len);
	}
	pthread_mutex_unlock(&m->mu);
	return len;
}

void mitm_clear(mitm *m)
{
	pthread_mutex_lock(&m->mu);
	for (int d = 0; d < 2; d++) {
		for (size_t i = 0; i < m->n[d]; i++)
			free(m->rec[d][i].p);
		m->n[d] = 0;
	}
	pthread_mutex_unlock(&m->mu);
}

int mitm_inject(mitm *m, int dir, const void *pkt, size_t len)
{
	int fd = m->fd[dir == MITM_A2B ? 2 : 1];
	for (int tries = 0; tries < 1000; tries++) {
		if (send(fd, pkt, len, MSG_DONTWAIT) >= 0)
			return 0;
		if (errno != EAGAIN && errno != ENOBUFS)
			return -1;
		usleep(1000);
	}
	return -1;
}

void mitm_free(mitm *m)
{
	if (!m)
		return;
	if (write(m->wake[1], "x", 1) != 1)
		abort();
	pthread_join(m->th, NULL);
	mitm_clear(m);
	for (int i = 0; i < 4; i++)
		close(m->fd[i]);
	close(m->wake[0]);
	close(m->wake[1]);
	pthread_mutex_destroy(&m->mu);
	free(m);
}
