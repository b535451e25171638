/* Test helper: a key-holding forger. It owns an identity that the victim's
 * pin set also holds (a two-key set), and, when there is one, the PSK. It
 * watches the key exchanges of an honest peer and the victim, forges key
 * exchanges signed with its own key that carry the honest peer's session id
 * (the victim's next generation, its current one, or a newer "new session"
 * of the peer), and once the victim replies to one of them, seals a data
 * packet under the keys that forgery would agree (a last DATA_RW frame whose
 * payload starts with FORGE_MARK). A victim that binds each session to one
 * identity drops every forgery before its signature is even checked, and
 * the data packet then fails to decrypt. Used by the simulator
 * (tests/lib/sim.c), the session attacks (tests/test_attacks.c) and the
 * forging relay run against sio (tests/tools/forge_relay.c). */
#ifndef SIO_TEST_FORGE_H
#define SIO_TEST_FORGE_H

#include <stddef.h>
#include <stdint.h>

#define FORGE_MARK "ADV!"
#define FORGE_SLOTS 16
#define FORGE_KX_MAX (1 + 24 + 175 + 16) /* SIO_KX_WIRE_MAX */
#define FORGE_DATA_LEN (5 + 1 + 12 + 16)

enum { FORGE_NEXT_GEN = 0, FORGE_SAME_GEN = 1, FORGE_NEW_SESSION = 2 };

typedef struct forge_slot {
	uint32_t gen;
	uint8_t sid[16];  /* sender session id it claims */
	uint8_t msg[175]; /* the signed message */
	uint8_t e_sk[32];
	int used;
} forge_slot;

typedef struct forge {
	uint8_t sk[64], pk[32];
	uint8_t psk[64];
	size_t psk_len;
	uint8_t honest_sid[16], victim_sid[16];
	int have_honest, have_victim;
	uint32_t victim_gen;
	uint8_t victim_flags;
	forge_slot slot[FORGE_SLOTS];
	unsigned nslots;
	uint64_t forged, data_made;
	uint32_t pn;
	/* randomness (NULL: libsodium's) */
	void (*random)(void *ctx, uint8_t *buf, size_t len);
	void *rctx;
} forge;

/* SK: the forger's 64-byte Ed25519 secret key. PSK may be NULL. */
void forge_init(forge *g, const uint8_t sk[64], const uint8_t *psk, size_t psk_len);
void forge_wipe(forge *g);

/* Watches one packet sent by the victim (FROM_VICTIM) or the honest peer.
 * When it is the victim's key exchange answering one of our forgeries,
 * writes a sealed data packet (FORGE_DATA_LEN bytes) into OUT and returns
 * its length; otherwise 0. */
size_t forge_observe(forge *g, int from_victim, const uint8_t *pkt, size_t len,
		     uint8_t out[FORGE_DATA_LEN]);

/* Builds forgery VARIANT (FORGE_*) claiming creation time WALL_NS into OUT;
 * returns its length, or 0 while both session ids are not known yet. */
size_t forge_kx(forge *g, int variant, uint64_t wall_ns, uint8_t out[FORGE_KX_MAX]);

#endif
