/* Test helper: an in-process man-in-the-middle UDP relay on loopback.
 * Session A talks to relay side A, session B to relay side B (connected
 * UDP sockets, so every packet the relay sends comes from the address the
 * session expects). A relay thread forwards both ways, records every packet
 * it sees (before any filter), and lets a test drop or alter packets, or
 * inject its own toward either side. */
#ifndef SIO_TEST_MITM_H
#define SIO_TEST_MITM_H

#include <stddef.h>
#include <stdint.h>

enum { MITM_A2B = 0, MITM_B2A = 1 };

typedef struct mitm mitm;

/* Return 1 to forward the (possibly modified, *LEN may shrink) packet, 0 to
 * drop it. Runs on the relay thread. */
typedef int (*mitm_filter_fn)(void *ctx, int dir, uint8_t *pkt, size_t *len);

/* Opens the relay: *FD_A and *FD_B are the sessions' sockets (connected to
 * the relay; they belong to the relay and are closed by mitm_free, which
 * must come after the sessions are freed). */
int mitm_open(mitm **out, int *fd_a, int *fd_b);
void mitm_set_filter(mitm *m, mitm_filter_fn fn, void *ctx);
/* Recording on (default) or off (long runs). */
void mitm_record(mitm *m, int on);
/* Packets recorded in direction DIR so far. */
size_t mitm_count(mitm *m, int dir);
/* Copies recorded packet I of DIR into BUF; returns its length (0 if none). */
size_t mitm_get(mitm *m, int dir, size_t i, uint8_t *buf, size_t cap);
/* Forgets the recorded packets. */
void mitm_clear(mitm *m);
/* Sends PKT toward B (DIR MITM_A2B) or A (MITM_B2A) as if from the peer. */
int mitm_inject(mitm *m, int dir, const void *pkt, size_t len);
void mitm_free(mitm *m);

#endif
