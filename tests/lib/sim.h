/* Deterministic simulator: two protocol cores over a simulated clock and
 * network (seeded loss, duplication, reordering, delay, corruption, clock
 * jumps). Everything derives from one seed, so a failing run is replayed
 * exactly by its seed. Reusable by other tests: add hooks, not copies. */
#ifndef SIO_TEST_SIM_H
#define SIO_TEST_SIM_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"
#include "forge.h"

#define SIM_MS 1000000ull
#define SIM_S 1000000000ull

typedef struct sim_net {
	double loss;      /* probability a packet vanishes */
	double dup;       /* probability a packet is delivered twice */
	double corrupt;   /* probability one bit of a packet is flipped */
	double reorder;   /* probability a packet gets extra delay */
	uint64_t delay;   /* base one-way delay (ns) */
	uint64_t jitter;  /* uniform extra delay 0..jitter (ns) */
	uint64_t reorder_delay; /* extra delay of reordered packets (ns) */
	double clock_jump; /* probability per simulated second of a forward jump */
	uint64_t clock_jump_max; /* largest jump (ns) */
	size_t mtu;        /* datagram: larger packets vanish (0 = no limit) */
} sim_net;

typedef struct sim_msg {
	uint32_t type;
	uint32_t len;
	uint8_t *data;
} sim_msg;

typedef struct sim_peer {
	sio_core *core;
	uint8_t sk[64], pk[32];
	sio_remote *remote;
	uint64_t rng;
	int side;
	struct sim *sim;
	/* record */
	sim_msg *msgs;
	size_t nmsgs, capmsgs;
	int errors[64];
	size_t nerrors;
	sio_state states[16];
	size_t nstates;
	uint64_t sent_ok, sent_fail;
	uint64_t corrupted_in, dropped_on_corrupt, corrupt_accepted;
	uint64_t recv_calls, recv_authentic;
	uint64_t answered_drop;  /* dropped packets that caused output: must be 0 */
	uint64_t uncounted_drop; /* recv returned 0 without a drop counter: must be 0 */
	uint64_t deadline_spins; /* deadline <= now right after tick + flush: must be 0 */
	int refuse_identity; /* remote_identity callback returns nonzero */
	/* sim_config.learn: this side models an unconnected UDP socket that
	 * learns its peer's address (src/transport/transport.c, docs/PROTOCOL.md §4.5):
	 * its packets vanish until a key exchange was accepted, then at most
	 * 3x the bytes accepted go out until a data packet authenticated. */
	int learn, learn_known, learn_valid;
	uint64_t unval_rx, unval_tx, budget_drops;
	uint64_t established_at;
} sim_peer;

/* A key-holding adversary (sim_config.adversary): a forger (forge.h) whose
 * identity the victim's pin set also holds, with the PSK when there is one,
 * watching the wire. Once the victim has accepted its honest peer, it forges
 * a key exchange every period (the three variants in turn) and seals data
 * under the keys any reply would agree. Everything it injects is marked
 * corrupted, so the simulator's checks require each packet to be dropped
 * and counted; a delivered forgery is a payload nobody sent. */
typedef struct sim_adversary {
	int victim;
	forge g;
	int victim_bound;
	uint64_t next_forge, period;
} sim_adversary;

typedef struct sim_pkt {
	uint64_t at;
	int to;
	int corrupted;
	size_t len;
	uint8_t *data;
} sim_pkt;

typedef struct sim {
	uint64_t seed, rng, now, wall;
	sim_net net;
	int datagram;
	sim_peer p[2];
	sim_pkt *q;
	size_t nq, capq;
	uint64_t packets, jumps, mtu_drops;
	uint64_t last_at[2]; /* stream mode: arrival order */
	int keep_msgs; /* record delivered payloads (default 1) */
	/* Optional hook on every packet put on the wire (before loss). */
	void (*on_wire)(struct sim *s, int from, const uint8_t *pkt, size_t len, void *ctx);
	void *hook_ctx;
	sim_adversary *adv; /* sim_config.adversary */
	/* Optional hook on every delivered message. */
	void (*on_deliver)(struct sim *s, int side, uint32_t type, const uint8_t *d, size_t len,
			   void *ctx);
} sim;

typedef struct sim_config {
	int datagram;
	sio_options opts[2]; /* per side */
	int pin[2];          /* 1 = side I pins the other's key (else learns) */
	sim_net net;
	uint8_t id_seed[2][32]; /* zero = derived from the seed */
	int no_start[2];
	uint8_t pin_key[2][32]; /* nonzero: side I pins this key instead */
	int64_t wall_offset[2]; /* side I's wall clock is off by this (ns) */
	int learn[2];           /* side I learns its peer's address (sim_peer.learn) */
	int adversary;          /* 1 + the side a key-holding adversary attacks
				 * (see sim_adversary); 0 = none */
} sim_config;

uint64_t sim_rand(uint64_t *state);
double sim_uniform(uint64_t *state);

/* Creates both cores (not started if no_start) and starts them at time 0. */
int sim_init(sim *s, uint64_t seed, const sim_config *cfg);
void sim_free(sim *s);

/* Runs until simulated time T (absolute, ns) or until STOP(s, ctx) != 0.
 * Returns 1 if stopped by the predicate, 0 if time ran out. */
int sim_run(sim *s, uint64_t t, int (*stop)(sim *s, void *ctx), void *ctx);

/* Pushes output of both cores to the network now. */
void sim_flush(sim *s);

/* Injects raw bytes to side TO at time AT (to test hostile input). */
void sim_inject(sim *s, int to, const uint8_t *pkt, size_t len, uint64_t at);

int sim_established(const sim *s);
int sim_has_error(const sim_peer *p, int err);

/* Prints the replay hint for a failing seed. */
void sim_replay_hint(const char *test, uint64_t seed);

#endif
