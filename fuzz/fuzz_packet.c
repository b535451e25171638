/* libFuzzer target: a stateful attacker against an established session.
 * Two cores complete a real handshake; then the input is a program of
 * operations (one op byte + arguments each): genuine traffic both ways
 * (captured), replays, bit flips and truncations of captured packets,
 * raw attacker packets, packets of a third identity, and time jumps that
 * run timers (retransmits, renewal, keepalives). First byte bit 0: PSK.
 *
 * Invariants checked on every delivery (abort = finding): each message
 * arrives intact (its bytes are a function of its sequence number) and at
 * most once, and never more messages arrive than were written.
 *
 * The cores' randomness (hence every session key) is salted per process,
 * so the attacker cannot forge packets by predicting the keys (fixed keys
 * would let libFuzzer "invent" valid packets the sender never sealed). The
 * salt is printed at start; SIO_FUZZ_SALT=<hex> reproduces a run exactly. */
#include <inttypes.h>
#include <stdio.h>
#include "fuzz_pair.h"

typedef struct side {
	fz_ctx r;	    /* must be first */
	uint32_t written;   /* by the peer */
	uint8_t seen[4096]; /* sequence numbers delivered */
} side;

static uint8_t pattern(uint32_t seq, size_t i)
{
	return (uint8_t)(seq * 31u + (uint32_t)i * 7u + 3u);
}

static void check_deliver(void *ctx, uint32_t type, const uint8_t *d, size_t len)
{
	side *s = ctx;
	uint32_t seq, l;
	(void)type;
	if (len < 8)
		abort(); /* every genuine message has a header */
	memcpy(&seq, d, 4);
	memcpy(&l, d + 4, 4);
	if (l != len || seq >= s->written || seq >= sizeof s->seen * 8)
		abort(); /* altered length or a message never written */
	if (s->seen[seq / 8] & (1u << (seq % 8)))
		abort(); /* delivered twice */
	s->seen[seq / 8] |= (uint8_t)(1u << (seq % 8));
	for (size_t i = 8; i < len; i++)
		if (d[i] != pattern(seq, i))
			abort(); /* altered content */
	s->r.msgs++;
}

static uint8_t msg[1500], scratch[4096];

/* Writes one genuine message of LEN bytes from core FROM, whose peer's
 * bookkeeping is TO. */
static void genuine(sio_core *from, side *to, uint64_t now, size_t len)
{
	uint32_t seq = to->written, l;
	if (len < 8)
		len = 8;
	if (len > sizeof msg)
		len = sizeof msg;
	if (seq >= sizeof to->seen * 8)
		return;
	l = (uint32_t)len;
	memcpy(msg, &seq, 4);
	memcpy(msg + 4, &l, 4);
	for (size_t i = 8; i < len; i++)
		msg[i] = pattern(seq, i);
	if (sio_core_write(from, now, SIO_TYPE_READWRITE, msg, len, 0) == 0) {
		to->written++;
		sio_core_flush(from, now);
	}
}

static void inject(sio_core *c, uint64_t now, const uint8_t *p, size_t len)
{
	if (len > sizeof scratch)
		len = sizeof scratch;
	memcpy(scratch, p, len);
	sio_core_recv(c, now, scratch, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static side s[2];
	static fz_ctx r3;
	static fz_wire cap, third;
	static uint64_t salt;
	if (!salt) {
		const char *e = getenv("SIO_FUZZ_SALT");
		fz_init();
		if (e)
			salt = strtoull(e, NULL, 16);
		else
			randombytes_buf(&salt, sizeof salt);
		salt |= 1u << 31;
		fprintf(stderr, "fuzz_packet: SIO_FUZZ_SALT=%" PRIx64 "\n", salt);
	}
	if (size < 1)
		return 0;
	int psk = data[0] & 1;
	data++;
	size--;
	memset(s, 0, sizeof s);
	memset(&cap, 0, sizeof cap);
	memset(&third, 0, sizeof third);
	s[0].r.s = salt ^ 1;
	s[1].r.s = salt ^ 2;
	r3 = (fz_ctx){salt ^ 3, 0, 0};
	sio_core *c[2] = {fz_core_cb(0, &s[0], psk, check_deliver),
			  fz_core_cb(1, &s[1], psk, check_deliver)};
	/* A third identity that starts its own handshake: its packets are
	 * well-formed and signed, just not by the expected peer session. */
	sio_core *c3 = fz_core(2, &r3, psk);
	fz_pump(c3, NULL, 0, &third);
	uint64_t now = fz_handshake(c[0], c[1], 1000, &cap);

	while (size >= 3) {
		uint8_t op = data[0], a = data[1], b = data[2];
		int to = op >> 7; /* target core */
		data += 3;
		size -= 3;
		fz_wire *w = (op & 0x40) ? &third : &cap;
		size_t k = w->n ? a % (w->n < FZ_CAP ? w->n : FZ_CAP) : 0;
		switch (op & 7) {
		case 0: /* genuine message, delivered and captured */
			genuine(c[!to], &s[to], now, (size_t)a * 6 + b);
			fz_pump(c[!to], c[to], now, &cap);
			break;
		case 1: /* genuine message, captured but lost */
			genuine(c[!to], &s[to], now, (size_t)a * 6 + b);
			fz_pump(c[!to], NULL, now, &cap);
			break;
		case 2: /* replay a captured packet */
			if (w->n)
				inject(c[to], now, w->pkt[k], w->len[k]);
			break;
		case 3: /* flip bits of one byte of a captured packet */
			if (w->n && size >= 1) {
				memcpy(scratch, w->pkt[k], w->len[k]);
				scratch[((size_t)b << 8 | data[0]) % w->len[k]] ^= (uint8_t)(op | 1);
				sio_core_recv(c[to], now, scratch, w->len[k]);
				data++;
				size--;
			}
			break;
		case 4: /* truncate a captured packet */
			if (w->n)
				inject(c[to], now, w->pkt[k], b % (w->len[k] + 1));
			break;
		case 5: { /* raw attacker bytes: a says how many */
			size_t l = a < size ? a : size;
			inject(c[to], now, data, l);
			data += l;
			size -= l;
			break;
		}
		case 6: /* time passes: timers, then the wire carries everything */
			now += ((uint64_t)a << 8 | b) * 1000000ull;
			sio_core_tick(c[0], now);
			sio_core_tick(c[1], now);
			fz_pump(c[0], c[1], now, &cap);
			fz_pump(c[1], c[0], now, &cap);
			break;
		case 7: /* the wire delivers what is pending, some of it twice */
			fz_pump(c[0], c[1], now, &cap);
			fz_pump(c[1], c[0], now, &cap);
			if (cap.n && (a & 1))
				inject(c[to], now, cap.pkt[(cap.n - 1) % FZ_CAP],
				       cap.len[(cap.n - 1) % FZ_CAP]);
			break;
		}
	}
	if (s[0].r.msgs > s[0].written || s[1].r.msgs > s[1].written)
		abort();
	sio_core_free(c[0]);
	sio_core_free(c[1]);
	sio_core_free(c3);
	return 0;
}
