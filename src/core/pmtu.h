/*
 * Packet-size negotiation (datagram packetization-layer path MTU discovery
 * in the spirit of RFC 8899), as a pure state machine: no clock, no I/O.
 *
 * Inputs:  sio_pmtu_start(now), sio_pmtu_ack(now, id, size) for each probe
 *          acknowledgement, sio_pmtu_loss(now) when the caller suspects that
 *          full-size packets vanish, and sio_pmtu_poll(now) at the deadline.
 * Outputs: the probes to send now (id + exact packet size, from poll), the
 *          packet size to use (sio_pmtu_size), the next deadline, and whether
 *          the initial search is over (sio_pmtu_done).
 *
 * Search: the size BASE is assumed to work (the fallback when nothing is
 * answered). Each round sends PER_ROUND probes spread over (lo, hi] —
 * geometrically while hi > 2 lo, else evenly; the largest is hi itself, so a
 * path that carries MAX settles in one round trip — then lo = largest
 * answered, hi = smallest unanswered - 1. A round ends when its largest probe
 * is answered, when every probe is, or a few round-trip times after the first
 * answer (without any answer yet: after TIMEOUT / 8). Until a first answer,
 * each round also probes lo itself: a round where even that goes unanswered
 * (peer not ready, or loss) teaches nothing and is repeated, so a peer that
 * installs its key late does not make us settle low. An answer that comes
 * after its round ended still counts: it raises lo (and reopens hi) or, once
 * settled, the size in use. The search ends when hi - lo < GRANULARITY,
 * after MAX_ROUNDS rounds, or after TIMEOUT, whichever comes first.
 *
 * Settled: every CONFIRM_NS a probe of the current size confirms the path;
 * when 3 confirmation probes in a row go unanswered (or a loss signal's
 * immediate confirmation and its 2 retries do), the path changed: the size
 * drops to BASE and a new search runs between BASE and the failed size.
 * Every RAISE_NS a search above the current size looks for a larger one.
 */
#ifndef SIO_PMTU_H
#define SIO_PMTU_H

#include <stddef.h>
#include <stdint.h>

#define SIO_PMTU_BASE           1200u /* fits any IPv6 path (1280 - 40 - 8) */
#define SIO_PMTU_MAX_PER_ROUND  8     /* plus one probe of the known size */
#define SIO_PMTU_CONFIRM_MISSES 3
#define SIO_PMTU_HISTORY        32

typedef struct sio_pmtu_cfg {
	uint32_t base;        /* 0 = SIO_PMTU_BASE; clamped to <= max */
	uint32_t max;         /* largest size to try (configured packet size), required */
	uint64_t timeout_ns;  /* 0 = 500 ms: bound on one search */
	uint32_t per_round;   /* 0 = 3 probes per round (max SIO_PMTU_MAX_PER_ROUND) */
	uint32_t max_rounds;  /* 0 = 12 */
	uint32_t granularity; /* 0 = 8 bytes */
	uint64_t confirm_ns;  /* 0 = 10 s; UINT64_MAX = never confirm */
	uint64_t raise_ns;    /* 0 = 600 s; UINT64_MAX = never raise */
} sio_pmtu_cfg;

typedef struct sio_pmtu_probe {
	uint32_t id;   /* echoed by the acknowledgement */
	uint32_t size; /* exact packet size on the wire, headers and tag included */
} sio_pmtu_probe;

typedef struct sio_pmtu_stats {
	uint64_t probes_sent, acks, bad_acks;
	uint64_t searches;       /* searches started (initial, path change, raise) */
	uint64_t path_changes;   /* black holes detected by confirmation */
	uint64_t fallbacks;      /* searches that ended without any answer */
	uint64_t last_search_ns; /* duration of the last finished search */
} sio_pmtu_stats;

enum { SIO_PMTU_IDLE = 0, SIO_PMTU_SEARCH = 1, SIO_PMTU_SETTLED = 2 };

typedef struct sio_pmtu {
	sio_pmtu_cfg cfg;
	int phase, done_once;
	uint32_t size;   /* size in use */
	uint32_t lo, hi; /* search bounds: lo works, sizes > hi failed */
	uint64_t search_start, search_end, round_deadline;
	uint32_t rounds, nprobe, next_id;
	int any_ack;
	struct {
		uint32_t id, size;
		uint64_t sent;
		uint8_t state; /* 0 to send, 1 in flight, 2 acked */
	} probe[SIO_PMTU_MAX_PER_ROUND + 1];
	uint64_t rtt; /* largest recent probe round-trip time, 0 = none yet */
	/* Recently sent probes: a late answer still proves its size. */
	struct {
		uint32_t id, size;
		uint64_t sent;
	} hist[SIO_PMTU_HISTORY];
	uint32_t hist_n;
	/* settled: confirmation and raise timers */
	uint64_t next_confirm, confirm_deadline, next_raise;
	uint64_t confirm_sent;
	uint32_t confirm_id, misses;
	int confirm_state; /* 0 none, 1 to send, 2 in flight */
	sio_pmtu_stats st;
} sio_pmtu;

/* Resolves CFG (zero fields = defaults) and sets the size to BASE. */
void sio_pmtu_init(sio_pmtu *p, const sio_pmtu_cfg *cfg);

/* Starts the initial search. With max <= base it settles at once on max. */
void sio_pmtu_start(sio_pmtu *p, uint64_t now);

/* Settles at once on SIZE without probing (negotiation disabled, streams). */
void sio_pmtu_fixed(sio_pmtu *p, uint32_t size);

/* Runs timers due at NOW and returns up to MAX probes to send now (each is
 * returned once; the caller builds a packet of exactly probe.size bytes). */
size_t sio_pmtu_poll(sio_pmtu *p, uint64_t now, sio_pmtu_probe *out, size_t max);

/* A probe acknowledgement for ID carrying SIZE. Unknown ids or a size that
 * differs from the probe's are ignored (counted in bad_acks). Returns 1 if
 * it matched an outstanding probe. */
int sio_pmtu_ack(sio_pmtu *p, uint64_t now, uint32_t id, uint32_t size);

/* The caller suspects full-size packets are being lost: confirm the current
 * size now (settled phase only; at most one confirmation in flight). */
void sio_pmtu_loss(sio_pmtu *p, uint64_t now);

/* Packet size to use now (never above max, never below base once started). */
static inline uint32_t sio_pmtu_size(const sio_pmtu *p)
{
	return p->size;
}

/* 1 once the initial search has finished (settled at least once). */
static inline int sio_pmtu_done(const sio_pmtu *p)
{
	return p->done_once;
}

/* Absolute time sio_pmtu_poll() must next run, UINT64_MAX if none. Probes
 * waiting to be sent make it 0. */
uint64_t sio_pmtu_deadline(const sio_pmtu *p);

#endif /* SIO_PMTU_H */
