/* Test helper: two sessions in one process over a real transport. */
#include "sess_pair.h"
#include "lclient.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

const char *pair_kind_name(enum pair_kind k)
{
	static const char *n[PK_COUNT] = {"unix-stream", "unix-dgram", "seqpacket", "tcp",
					  "udp-connected", "udp-unconnected", "pipes", "custom",
					  "custom-stream"};
	return k < PK_COUNT ? n[k] : "?";
}

int pair_kind_datagram(enum pair_kind k)
{
	return k == PK_UNIX_DGRAM || k == PK_SEQPACKET || k == PK_UDP_CONNECTED ||
	       k == PK_UDP_UNCONNECTED || k == PK_CUSTOM;
}

int pair_identities(struct pair *p, int seed_a, int seed_b)
{
	uint8_t seed[SIO_SEED_BYTES], pk[SIO_PUBLIC_KEY_BYTES];
	memset(seed, seed_a ? seed_a : 1, sizeof seed);
	if (sio_identity_from_seed(&p->ida, seed))
		return -1;
	memset(seed, seed_b ? seed_b : 2, sizeof seed);
	if (sio_identity_from_seed(&p->idb, seed))
		return -1;
	sio_identity_public_key(p->idb, pk);
	if (sio_remote_from_public_key(&p->ra, pk))
		return -1;
	sio_identity_public_key(p->ida, pk);
	if (sio_remote_from_public_key(&p->rb, pk))
		return -1;
	return 0;
}

static ssize_t cb_send(void *ctx, const void *buf, size_t len)
{
	ssize_t r = send(*(int *)ctx, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
	return r < 0 ? -errno : r;
}

static ssize_t cb_recv(void *ctx, void *buf, size_t len)
{
	ssize_t r = recv(*(int *)ctx, buf, len, MSG_DONTWAIT);
	return r < 0 ? -errno : r;
}

int pair_transports(struct pair *p, enum pair_kind k, sio_transport *ta, sio_transport *tb)
{
	int sv[2], p1[2], p2[2];
	for (int i = 0; i < 4; i++)
		p->fds[i] = -1;
	switch (k) {
	case PK_UNIX_STREAM:
	case PK_UNIX_DGRAM:
	case PK_SEQPACKET:
	case PK_CUSTOM:
	case PK_CUSTOM_STREAM: {
		int type = k == PK_UNIX_STREAM || k == PK_CUSTOM_STREAM ? SOCK_STREAM
			   : k == PK_UNIX_DGRAM			  ? SOCK_DGRAM
								  : SOCK_SEQPACKET;
		if (socketpair(AF_UNIX, type, 0, sv))
			return -1;
		p->fds[0] = sv[0];
		p->fds[1] = sv[1];
		if (k != PK_CUSTOM && k != PK_CUSTOM_STREAM) {
			sio_transport_fd(ta, sv[0], sv[0]);
			sio_transport_fd(tb, sv[1], sv[1]);
			return 0;
		}
		sio_transport *t[2] = {ta, tb};
		for (int i = 0; i < 2; i++) {
			memset(t[i], 0, sizeof **t);
			t[i]->read_fd = t[i]->write_fd = -1;
			t[i]->send = cb_send;
			t[i]->recv = cb_recv;
			t[i]->poll_fd = k == PK_CUSTOM ? p->fds[i] : -1; /* -1: polled */
			t[i]->ctx = &p->fds[i];
			if (k == PK_CUSTOM_STREAM)
				t[i]->kind = SIO_TRANSPORT_STREAM;
		}
		return 0;
	}
	case PK_TCP: {
		struct sockaddr_in a;
		memset(&a, 0, sizeof a);
		a.sin_family = AF_INET;
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		socklen_t l = sizeof a;
		int ls = socket(AF_INET, SOCK_STREAM, 0);
		if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1) ||
		    getsockname(ls, (struct sockaddr *)&a, &l))
			return -1;
		int c = socket(AF_INET, SOCK_STREAM, 0);
		if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof a))
			return -1;
		int s = accept(ls, NULL, NULL);
		close(ls);
		if (s < 0)
			return -1;
		int one = 1;
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		p->fds[0] = c;
		p->fds[1] = s;
		sio_transport_fd(ta, c, c);
		sio_transport_fd(tb, s, s);
		return 0;
	}
	case PK_UDP_CONNECTED:
	case PK_UDP_UNCONNECTED: {
		struct sockaddr_in aa, ba;
		int a = udp_loopback(&aa, 0, 0), b = udp_loopback(&ba, 0, 0);
		if (a < 0 || b < 0)
			return -1;
		p->fds[0] = a;
		p->fds[1] = b;
		sio_transport_fd(ta, a, a);
		sio_transport_fd(tb, b, b);
		if (k == PK_UDP_CONNECTED) {
			if (connect(a, (struct sockaddr *)&ba, sizeof ba) || connect(b, (struct sockaddr *)&aa, sizeof aa))
				return -1;
		} else {
			memcpy(&ta->peer, &ba, sizeof ba);
			ta->peer_len = sizeof ba;
		}
		return 0;
	}
	case PK_PIPES:
		if (pipe(p1) || pipe(p2))
			return -1;
		p->fds[0] = p1[0];
		p->fds[1] = p1[1];
		p->fds[2] = p2[0];
		p->fds[3] = p2[1];
		sio_transport_fd(ta, p1[0], p2[1]);
		sio_transport_fd(tb, p2[0], p1[1]);
		return 0;
	default:
		return -1;
	}
}

int pair_open(struct pair *p, enum pair_kind k, const sio_options *oa, const sio_options *ob,
	      const sio_callbacks *ca, const sio_callbacks *cb)
{
	memset(p, 0, sizeof *p);
	sio_transport ta, tb;
	if (pair_identities(p, 0, 0) || pair_transports(p, k, &ta, &tb))
		return -1;
	if (sio_session_new(&p->a, p->ida, p->ra, &ta, oa, ca))
		return -1;
	if (sio_session_new(&p->b, p->idb, p->rb, &tb, ob, cb))
		return -1;
	return 0;
}

int pair_start(struct pair *p)
{
	int r = sio_session_start(p->a);
	if (!r)
		r = sio_session_start(p->b);
	if (!r)
		r = sio_session_wait_state(p->a, SIO_STATE_ESTABLISHED, 20000);
	if (!r)
		r = sio_session_wait_state(p->b, SIO_STATE_ESTABLISHED, 20000);
	return r;
}

void pair_free(struct pair *p)
{
	sio_session_free(p->a);
	sio_session_free(p->b);
	p->a = p->b = NULL;
	sio_identity_free(p->ida);
	sio_identity_free(p->idb);
	sio_remote_free(p->ra);
	sio_remote_free(p->rb);
	for (int i = 0; i < 4; i++)
		if (p->fds[i] >= 0)
			close(p->fds[i]);
}
