/* Anti-replay sliding window over 64-bit packet numbers (RFC 6479 style):
 * a ring of 64-bit blocks, O(1) per packet (a jump ahead clears at most the
 * whole ring once). Check before decrypting, update only after the packet
 * authenticated, so forged packets never move the window. */
#ifndef SIO_REPLAY_H
#define SIO_REPLAY_H

#include <stddef.h>
#include <stdint.h>

enum { SIO_REPLAY_OK = 0, SIO_REPLAY_DUP = 1, SIO_REPLAY_OLD = 2 };

typedef struct sio_replay {
	int32_t window;  /* >1: window size; 1: strictly increasing; <0: off */
	uint32_t nblocks; /* power of two; 0 when no bitmap is needed */
	uint64_t top;    /* highest packet number accepted */
	int any;         /* at least one packet accepted */
	uint64_t *bits;  /* nblocks words, owned by the caller */
} sio_replay;

/* Words of bitmap storage WINDOW needs (0 for window <= 1). */
size_t sio_replay_words(int32_t window);

/* Initialises R for WINDOW (0 is not allowed: resolve defaults first) with
 * BITS of sio_replay_words(window) words (nblocks), which may be set later
 * (the core allocates them when a key is installed) but before any check. */
void sio_replay_init(sio_replay *r, int32_t window, uint64_t *bits);

/* Forgets every packet (new key). */
void sio_replay_reset(sio_replay *r);

/* SIO_REPLAY_OK if PN may be accepted, else DUP or OLD. No side effect. */
int sio_replay_check(const sio_replay *r, uint64_t pn);

/* Records PN as received (call after sio_replay_check said OK and the
 * packet authenticated). With the window off only TOP is kept. */
void sio_replay_update(sio_replay *r, uint64_t pn);

/* 1 if PN is above every number recorded so far (a packet that cannot be a
 * replay even with the window off), else 0. No side effect. */
int sio_replay_newest(const sio_replay *r, uint64_t pn);

#endif
