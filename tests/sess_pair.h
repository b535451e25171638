/* Test helper: two sessions in one process over a real transport. */
#ifndef SIO_TEST_SESS_PAIR_H
#define SIO_TEST_SESS_PAIR_H

#include "secureio.h"

enum pair_kind {
	PK_UNIX_STREAM,
	PK_UNIX_DGRAM,
	PK_SEQPACKET,
	PK_TCP,
	PK_UDP_CONNECTED,
	PK_UDP_UNCONNECTED, /* a: fixed peer address, b: learns its peer */
	PK_PIPES,
	PK_CUSTOM, /* callbacks over a seqpacket socketpair, poll_fd set */
	PK_CUSTOM_STREAM, /* stream callbacks over a stream socketpair, no poll_fd */
	PK_COUNT
};

const char *pair_kind_name(enum pair_kind k);
/* 1 for kinds that keep message boundaries (datagram transports). */
int pair_kind_datagram(enum pair_kind k);

struct pair {
	sio_identity *ida, *idb;
	sio_remote *ra, *rb; /* ra: what a expects (b's key), rb: what b expects */
	sio_session *a, *b;
	int fds[4];
};

/* Identities from fixed seeds SEED_A, SEED_B (1, 2 by default if 0). */
int pair_identities(struct pair *p, int seed_a, int seed_b);
/* Opens transports of KIND into TA, TB (fds remembered in P for closing). */
int pair_transports(struct pair *p, enum pair_kind k, sio_transport *ta, sio_transport *tb);
/* Identities (1, 2), transports, sessions (not started). */
int pair_open(struct pair *p, enum pair_kind k, const sio_options *oa, const sio_options *ob,
	      const sio_callbacks *ca, const sio_callbacks *cb);
/* Starts both and waits for "established" (bounded). Returns 0 or an error. */
int pair_start(struct pair *p);
/* Frees sessions, identities, and closes the descriptors. */
void pair_free(struct pair *p);

#endif
