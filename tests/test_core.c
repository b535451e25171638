/* Two cores over the simulator without impairments: key exchange in every
 * answers mode, datagram and stream, messages of every size up to a packet,
 * merging, graceful close, the state sequence, the basic refusals, and a
 * reply-only core's silence toward a peer that never answered. */
#include <sodium.h>
#include <string.h>

#include "check.h"
#include "core_int.h"
#include "lib/sim.h"

static sim_config base(int datagram)
{
	sim_config cfg;
	memset(&cfg, 0, sizeof cfg);
	cfg.datagram = datagram;
	cfg.net.delay = 1 * SIM_MS;
	cfg.pin[0] = cfg.pin[1] = 1;
	return cfg;
}

static int both_established(sim *s, void *ctx)
{
	(void)ctx;
	return sim_established(s);
}

static void test_handshake(int datagram, int mode)
{
	sim s;
	sim_config cfg = base(datagram);
	cfg.opts[0].answers_mode = cfg.opts[1].answers_mode = (sio_answers_mode)mode;
	CHECK_OK(sim_init(&s, 1, &cfg));
	CHECK(sim_run(&s, 5 * SIM_S, both_established, NULL));
	for (int i = 0; i < 2; i++) {
		sim_peer *p = &s.p[i];
		/* the exact state sequence */
		CHECK_EQ(p->nstates, 4);
		CHECK_EQ(p->states[0], SIO_STATE_INITIALIZATION);
		CHECK_EQ(p->states[1], SIO_STATE_KEY_EXCHANGING);
		CHECK_EQ(p->states[2], SIO_STATE_NEGOTIATION);
		CHECK_EQ(p->states[3], SIO_STATE_ESTABLISHED);
		uint8_t pk[32];
		CHECK_OK(sio_core_remote_key(p->core, pk));
		CHECK(memcmp(pk, s.p[!i].pk, 32) == 0);
		CHECK_EQ(p->nerrors, 0);
	}
	sim_free(&s);
}

/* Messages of every size class up to the largest one packet holds. */
static void test_sizes(int datagram)
{
	sim s;
	sim_config cfg = base(datagram);
	CHECK_OK(sim_init(&s, 2, &cfg));
	CHECK(sim_run(&s, 5 * SIM_S, both_established, NULL));
	size_t maxp = sio_core_max_packet(s.p[0].core);
	/* largest: one frame byte (+ 2 bytes of channel number 8000) */
	size_t sizes[] = {0, 1, 2, 127, 128, 129, 1000, maxp - SIO_OVERHEAD - 4,
			  maxp - SIO_OVERHEAD - 3};
	size_t n = sizeof sizes / sizeof *sizes;
	uint8_t *buf = calloc(1, maxp); /* the last writes below go past sizes[n - 1] */
	for (size_t i = 0; i < n; i++) {
		for (size_t k = 0; k < sizes[i]; k++)
			buf[k] = (uint8_t)(k * 7 + i);
		CHECK_OK(sio_core_write(s.p[0].core, s.now, SIO_TYPE_READWRITE, buf, sizes[i], 0));
		CHECK_OK(sio_core_write(s.p[1].core, s.now, (uint32_t)i * 1000, buf, sizes[i], 0));
		sim_run(&s, s.now + 50 * SIM_MS, NULL, NULL);
	}
	/* One byte too many for a packet: fragmented (test_sim_messages.c covers
	 * fragmentation; SIO_ETOOBIG when it is off). */
	CHECK_OK(sio_core_write(s.p[0].core, s.now, SIO_TYPE_READWRITE, buf,
				maxp - SIO_OVERHEAD - 1, 0));
	CHECK_OK(sio_core_write(s.p[0].core, s.now, SIO_TYPE_READWRITE, buf, maxp - SIO_OVERHEAD,
				0));
	CHECK_OK(sio_core_write(s.p[1].core, s.now, 8000, buf, maxp - SIO_OVERHEAD - 2, 0));
	sim_run(&s, s.now + 50 * SIM_MS, NULL, NULL);
	CHECK_EQ(s.p[1].nmsgs, n + 2);
	if (s.p[1].nmsgs == n + 2) {
		CHECK_EQ(s.p[1].msgs[n].len, maxp - SIO_OVERHEAD - 1);
		CHECK_EQ(s.p[1].msgs[n + 1].len, maxp - SIO_OVERHEAD);
	}
	CHECK_EQ(sio_core_write(s.p[0].core, s.now, 0x80000001u, buf, 1, 0), SIO_EINVAL);
	CHECK_EQ(s.p[0].nmsgs, n + 1);
	for (size_t i = 0; i < n && i < s.p[1].nmsgs && i < s.p[0].nmsgs; i++) {
		sim_msg *m = &s.p[1].msgs[i], *m0 = &s.p[0].msgs[i];
		CHECK_EQ(m->type, SIO_TYPE_READWRITE);
		CHECK_EQ(m->len, sizes[i]);
		CHECK_EQ(m0->type, i * 1000);
		CHECK_EQ(m0->len, sizes[i]);
		for (size_t k = 0; k < sizes[i]; k++)
			if (m->data[k] != (uint8_t)(k * 7 + i) || m0->data[k] != m->data[k]) {
				CHECK(!"payload altered");
				break;
			}
	}
	free(buf);
	sim_free(&s);
}

/* Small messages written within the send delay travel in one packet; a
 * message never waits longer than the delay. */
static void test_merging(void)
{
	sim s;
	sim_config cfg = base(1);
	cfg.opts[0].send_delay_ns = 1 * SIM_MS;
	CHECK_OK(sim_init(&s, 3, &cfg));
	CHECK(sim_run(&s, 5 * SIM_S, both_established, NULL));
	sim_flush(&s);
	uint64_t before = s.p[0].sent_ok;
	sio_stats st0;
	sio_core_stats(s.p[0].core, &st0);
	for (int i = 0; i < 100; i++) {
		uint8_t b = (uint8_t)i;
		CHECK_OK(sio_core_write(s.p[0].core, s.now, SIO_TYPE_READWRITE, &b, 1, 1 + i));
	}
	/* Nothing is due before the send delay. */
	struct iovec iov[8];
	CHECK_EQ(sio_core_pending(s.p[0].core, s.now, iov, 8), 0);
	CHECK_EQ(sio_core_deadline(s.p[0].core), s.now + 1 * SIM_MS);
	CHECK_EQ(sio_core_pending(s.p[0].core, s.now + 1 * SIM_MS, iov, 8), 1);
	/* 100 one-byte messages: 2 header bytes each but the last (1), + 21 */
	CHECK_EQ(iov[0].iov_len, 21 + 100 * 3 - 1);
	sim_run(&s, s.now + 20 * SIM_MS, NULL, NULL);
	sio_stats st1;
	sio_core_stats(s.p[0].core, &st1);
	CHECK_EQ(st1.packets_sent - st0.packets_sent, 1);
	CHECK_EQ(s.p[0].sent_ok - before, 100);
	CHECK_EQ(s.p[1].nmsgs, 100);
	for (size_t i = 0; i < s.p[1].nmsgs; i++)
		CHECK(s.p[1].msgs[i].len == 1 && s.p[1].msgs[i].data[0] == i);
	/* A lone message: 1 frame byte + 21. */
	uint8_t b = 9;
	CHECK_OK(sio_core_write(s.p[0].core, s.now, SIO_TYPE_READWRITE, &b, 1, 0));
	sio_core_flush(s.p[0].core, s.now);
	CHECK_EQ(sio_core_pending(s.p[0].core, s.now, iov, 8), 1);
	CHECK_EQ(iov[0].iov_len, 21 + 1 + 1);
	sim_run(&s, s.now + 20 * SIM_MS, NULL, NULL);
	CHECK_EQ(s.p[1].nmsgs, 101);
	sim_free(&s);
}

/* Data written before "established" is queued and sent afterwards. */
/* A peer that starts while the other has been retrying: the first key
 * exchange it sends names no receiver, and the other side answers with its
 * own message at once (PROTOCOL.md §4.3) rather than at its next retry, so
 * both are established within a few round trips of virtual time. */
static void test_late_peer(int datagram)
{
	sim s;
	sim_config cfg = base(datagram);
	cfg.no_start[1] = 1;
	CHECK_OK(sim_init(&s, 5, &cfg));
	sim_run(&s, 2 * SIM_S + 500 * SIM_MS, NULL, NULL);
	CHECK_EQ(sio_core_state(s.p[0].core), SIO_STATE_KEY_EXCHANGING);
	uint64_t t0 = s.now;
	CHECK_OK(sio_core_start(s.p[1].core, s.now));
	/* virtual time: the retry period is 1 s and the next retry is at 3 s,
	 * so establishing within 100 ms needs the immediate answer */
	CHECK(sim_run(&s, t0 + 100 * SIM_MS, both_established, NULL));
	CHECK_EQ(s.p[0].nerrors, 0);
	CHECK_EQ(s.p[1].nerrors, 0);
	sim_free(&s);
}

static void test_early_writes(void)
{
	sim s;
	sim_config cfg = base(1);
	cfg.no_start[1] = 1;
	CHECK_OK(sim_init(&s, 4, &cfg));
	for (int i = 0; i < 10; i++) {
		uint8_t b = (uint8_t)i;
		CHECK_OK(sio_core_write(s.p[0].core, 0, 7, &b, 1, 0));
	}
	sim_run(&s, 2 * SIM_S, NULL, NULL);
	CHECK_EQ(sio_core_state(s.p[0].core), SIO_STATE_KEY_EXCHANGING);
	CHECK_OK(sio_core_start(s.p[1].core, s.now));
	CHECK(sim_run(&s, 5 * SIM_S, both_established, NULL));
	sim_run(&s, s.now + 100 * SIM_MS, NULL, NULL);
	CHECK_EQ(s.p[1].nmsgs, 10);
	for (size_t i = 0; i < s.p[1].nmsgs; i++)
		CHECK(s.p[1].msgs[i].type == 7 && s.p[1].msgs[i].data[0] == i);
	sim_free(&s);
}

static int both_closed(sim *s, void *ctx)
{
	(void)ctx;
	return sio_core_state(s->p[0].core) == SIO_STATE_CLOSED &&
	       sio_core_state(s->p[1].core) == SIO_STATE_CLOSED;
}

static void test_close(int datagram)
{
	sim s;
	sim_config cfg = base(datagram);
	CHECK_OK(sim_init(&s, 5, &cfg));
	CHECK(sim_run(&s, 5 * SIM_S, both_established, NULL));
	for (int i = 0; i < 50; i++) {
		uint8_t b[100];
		memset(b, i, sizeof b);
		CHECK_OK(sio_core_write(s.p[0].core, s.now, SIO_TYPE_READWRITE, b, sizeof b, 0));
	}
	CHECK_OK(sio_core_close(s.p[0].core, s.now));
	CHECK_EQ(sio_core_state(s.p[0].core), SIO_STATE_CLOSING);
	CHECK_EQ(sio_core_write(s.p[0].core, s.now, 1, (const uint8_t *)"x", 1, 0), SIO_ECLOSED);
	CHECK(sim_run(&s, s.now + 5 * SIM_S, both_closed, NULL));
	CHECK_EQ(s.p[1].nmsgs, 50);
	for (int i = 0; i < 2; i++) {
		CHECK_EQ(s.p[i].nerrors, 0);
		CHECK_EQ(s.p[i].states[s.p[i].nstates - 2], SIO_STATE_CLOSING);
		CHECK_EQ(s.p[i].states[s.p[i].nstates - 1], SIO_STATE_CLOSED);
		CHECK_EQ(sio_core_deadline(s.p[i].core), UINT64_MAX);
	}
	sim_free(&s);

	/* An abrupt end of the transport is reported as a truncation. */
	CHECK_OK(sim_init(&s, 6, &cfg));
	CHECK(sim_run(&s, 5 * SIM_S, both_established, NULL));
	sio_core_transport_closed(s.p[1].core, s.now, 0);
	CHECK_EQ(sio_core_state(s.p[1].core), SIO_STATE_CLOSED);
	CHECK(sim_has_error(&s.p[1], SIO_ETRUNCATED));
	sim_free(&s);
}

/* The simulated path MTU (for packet-size tests): larger packets vanish. */
static void test_sim_mtu(void)
{
	sim s;
	sim_config cfg = base(1);
	CHECK_OK(sim_init(&s, 9, &cfg));
	CHECK(sim_run(&s, 5 * SIM_S, both_established, NULL));
	s.net.mtu = 600;
	uint8_t buf[1000];
	memset(buf, 1, sizeof buf);
	CHECK_OK(sio_core_write(s.p[0].core, s.now, 1, buf, 500, 0));
	sim_run(&s, s.now + 50 * SIM_MS, NULL, NULL);
	CHECK_OK(sio_core_write(s.p[0].core, s.now, 1, buf, 1000, 0));
	sim_run(&s, s.now + 50 * SIM_MS, NULL, NULL);
	CHECK_EQ(s.p[1].nmsgs, 1);
	CHECK_EQ(s.mtu_drops, 1);
	sim_free(&s);
}

/* Control packets padded to an exact size (packet-size probes) arrive and
 * are parsed up to the padding. */
static void test_padded_ctrl(void)
{
	sim s;
	sim_config cfg = base(1);
	CHECK_OK(sim_init(&s, 10, &cfg));
	CHECK(sim_run(&s, 5 * SIM_S, both_established, NULL));
	sio_core *a = s.p[0].core;
	uint8_t fr[3] = {SIO_FR_DATA_RW, 1, 'p'};
	CHECK_EQ(sio_core_ctrl_packet_sized(a, s.now, a->tx_slot, fr, 3, 1453), SIO_ETOOBIG);
	CHECK_EQ(sio_core_ctrl_packet_sized(a, s.now, a->tx_slot, fr, 3, 23), SIO_EINVAL);
	CHECK_OK(sio_core_ctrl_packet_sized(a, s.now, a->tx_slot, fr, 3, 1452));
	CHECK_OK(sio_core_ctrl_packet_sized(a, s.now, a->tx_slot, fr, 3, 24));
	struct iovec iov[4];
	CHECK_EQ(sio_core_pending(a, s.now, iov, 4), 2);
	CHECK_EQ(iov[0].iov_len, 1452);
	CHECK_EQ(iov[1].iov_len, 24);
	sim_run(&s, s.now + 50 * SIM_MS, NULL, NULL);
	CHECK_EQ(s.p[1].nmsgs, 2);
	for (size_t i = 0; i < s.p[1].nmsgs; i++)
		CHECK(s.p[1].msgs[i].len == 1 && s.p[1].msgs[i].data[0] == 'p');
	sim_free(&s);
}

/* Frames with an overlong varint (not the shortest encoding: 82 00 for 2,
 * 80 80 00 for 0) or one above 2^32-1, in any field of any frame kind, are
 * malformed: the packet authenticates, what came before the bad frame is
 * delivered, the rest is not, and drop_malformed counts it once. And the L
 * bit means nothing on frames without a body (ANSWER, KEEPALIVE, CLOSE,
 * CLOSE_ACK): parsing goes on after their kind byte either way. */
static void test_frame_varints(void)
{
	static const struct {
		uint8_t len, b[12];
	} bad[] = {
	    {5, {SIO_FR_DATA_RW, 0x82, 0x00, 'a', 'b'}},                    /* len 2 */
	    {4, {SIO_FR_DATA_RW, 0x80, 0x80, 0x00}},                        /* len 0 */
	    {7, {SIO_FR_DATA_RW, 0xff, 0xff, 0xff, 0xff, 0x1f, 'a'}},       /* len 2^33-1 */
	    {8, {SIO_FR_DATA_RW, 0x81, 0x80, 0x80, 0x80, 0x80, 0x00, 'a'}}, /* six bytes */
	    {4, {SIO_FR_DATA | SIO_FR_LAST, 0x83, 0x00, 'a'}},              /* channel 3 */
	    {5, {SIO_FR_DATA, 0x03, 0x81, 0x00, 'a'}},                      /* len 1 */
	    {4, {SIO_FR_EXT_MIN, 0x81, 0x00, 'e'}},                         /* extension len 1 */
	    {10, {SIO_FR_FRAGMENT | SIO_FR_LAST, 0x00, 0x81, 0x00, 0x05, 0x00, 1, 2, 3, 4, 5}},
	    {4, {SIO_FR_PROBE_ACK, 0x85, 0x00, 0x18}}, /* id 5 */
	};
	sim s;
	sim_config cfg = base(1);
	CHECK_OK(sim_init(&s, 12, &cfg));
	CHECK(sim_run(&s, 5 * SIM_S, both_established, NULL));
	sio_core *a = s.p[0].core, *b = s.p[1].core;
	sio_stats st;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		/* a good message, then the bad frame, then another good one */
		uint8_t fr[32];
		size_t n = 0;
		fr[n++] = SIO_FR_DATA_RW;
		fr[n++] = 1;
		fr[n++] = 'g';
		memcpy(fr + n, bad[i].b, bad[i].len);
		n += bad[i].len;
		int lastbad = (bad[i].b[0] & SIO_FR_LAST) != 0;
		if (!lastbad) {
			fr[n++] = SIO_FR_DATA_RW | SIO_FR_LAST;
			fr[n++] = 'h';
		}
		sio_core_stats(b, &st);
		uint64_t mal = st.drop_malformed, auth = st.packets_received;
		size_t msgs = s.p[1].nmsgs;
		CHECK_OK(sio_core_ctrl_packet(a, s.now, a->tx_slot, fr, n));
		sim_run(&s, s.now + 20 * SIM_MS, NULL, NULL);
		sio_core_stats(b, &st);
		CHECK_EQ(st.drop_malformed, mal + 1);
		CHECK_EQ(st.packets_received, auth + 1);
		CHECK_EQ(s.p[1].nmsgs, msgs + 1);
		CHECK(s.p[1].nmsgs == msgs + 1 && s.p[1].msgs[msgs].len == 1 &&
		      s.p[1].msgs[msgs].data[0] == 'g');
	}
	/* The shortest encodings of the same frames are taken. */
	uint8_t good[] = {SIO_FR_DATA_RW, 0x02, 'a',  'b',
	                  SIO_FR_DATA,    0x03, 0x01, 'a',
	                  SIO_FR_EXT_MIN, 0x01, 'e',  SIO_FR_DATA | SIO_FR_LAST,
	                  0x03,           'c'};
	sio_core_stats(b, &st);
	uint64_t mal = st.drop_malformed;
	size_t msgs = s.p[1].nmsgs;
	CHECK_OK(sio_core_ctrl_packet(a, s.now, a->tx_slot, good, sizeof good));
	sim_run(&s, s.now + 20 * SIM_MS, NULL, NULL);
	sio_core_stats(b, &st);
	CHECK_EQ(st.drop_malformed, mal);
	CHECK_EQ(s.p[1].nmsgs, msgs + 3);
	/* Bodiless frames with L set, then more frames: all parsed. */
	uint8_t bodiless[] = {SIO_FR_KEEPALIVE | SIO_FR_LAST, SIO_FR_ANSWER | SIO_FR_LAST,
	                      SIO_FR_DATA_RW | SIO_FR_LAST, 'k'};
	msgs = s.p[1].nmsgs;
	CHECK_OK(sio_core_ctrl_packet(a, s.now, a->tx_slot, bodiless, sizeof bodiless));
	sim_run(&s, s.now + 20 * SIM_MS, NULL, NULL);
	sio_core_stats(b, &st);
	CHECK_EQ(st.drop_malformed, mal);
	CHECK(s.p[1].nmsgs == msgs + 1 && s.p[1].msgs[msgs].len == 1 &&
	      s.p[1].msgs[msgs].data[0] == 'k');
	CHECK_EQ(sio_core_state(b), SIO_STATE_ESTABLISHED);
	sim_free(&s);
}

/* Freeing the core fails every token not yet reported, sealed or not. */
static void test_free_cancels(void)
{
	sim s;
	sim_config cfg = base(1);
	CHECK_OK(sim_init(&s, 8, &cfg));
	CHECK(sim_run(&s, 5 * SIM_S, both_established, NULL));
	uint8_t b = 1;
	CHECK_OK(sio_core_write(s.p[0].core, s.now, 3, &b, 1, 11));
	sio_core_flush(s.p[0].core, s.now); /* sealed, not handed out */
	CHECK_OK(sio_core_write(s.p[0].core, s.now, 3, &b, 1, 12)); /* still open */
	uint64_t ok = s.p[0].sent_ok;
	sio_core_free(s.p[0].core);
	s.p[0].core = NULL;
	CHECK_EQ(s.p[0].sent_fail, 2);
	CHECK_EQ(s.p[0].sent_ok, ok);
	sim_free(&s);
}

static void count_wire(sim *s, int from, const uint8_t *pkt, size_t len, void *ctx)
{
	uint64_t *c = ctx;
	(void)s;
	(void)pkt;
	c[2 * from]++;
	c[2 * from + 1] += len;
}

/* A reply-only core (a socket learning its peer's address, PROTOCOL.md
 * §4.5) that got one first key-exchange message from a peer that then stays
 * silent answers it once (its own message and an ANSWER) and never again on
 * its retry timer: 197 bytes for 175 over 30 s of virtual time. Nothing at
 * all leaves before a message arrived. */
static void test_reply_only(void)
{
	sim a, b;
	sim_config cfg = base(1);
	cfg.no_start[1] = 1;
	CHECK_OK(sim_init(&a, 9, &cfg)); /* only to make side 0's first message */
	struct iovec iov[4];
	CHECK_EQ(sio_core_pending(a.p[0].core, 0, iov, 4), 1);
	uint8_t kx[SIO_KX_WIRE_MAX];
	size_t kl = iov[0].iov_len;
	memcpy(kx, iov[0].iov_base, kl);
	sio_core_sent(a.p[0].core, 1, 0);
	cfg.no_start[1] = 0;
	cfg.no_start[0] = 1;
	cfg.learn[1] = 1;
	CHECK_OK(sim_init(&b, 9, &cfg)); /* same seed: same identities */
	uint64_t wire[4] = {0};
	b.on_wire = count_wire;
	b.hook_ctx = wire;
	sim_run(&b, 5 * SIM_S, NULL, NULL);
	CHECK_EQ(wire[2], 0);
	sim_inject(&b, 1, kx, kl, b.now);
	sim_run(&b, b.now + 30 * SIM_S, NULL, NULL);
	CHECK_EQ(kl, SIO_KX_MSG_LEN);
	CHECK_EQ(wire[2], 2);
	CHECK_EQ(wire[3], SIO_KX_MSG_LEN + SIO_OVERHEAD + 1);
	CHECK_EQ(b.p[1].budget_drops, 0); /* the core itself stayed quiet */
	CHECK_EQ(sio_core_state(b.p[1].core), SIO_STATE_KEY_EXCHANGING);
	sim_free(&a);
	sim_free(&b);
}

static uint8_t cap_pkt[2048];
static size_t cap_len;

static void capture_data(sim *s, int from, const uint8_t *pkt, size_t len, void *ctx)
{
	(void)s;
	(void)ctx;
	if (from == 0 && (pkt[0] & 0xc0) == 0x40 && len <= sizeof cap_pkt) {
		memcpy(cap_pkt, pkt, len);
		cap_len = len;
	}
}

/* With replay protection off (replay_window negative) a duplicate is still
 * delivered, but reported as SIO_CORE_RX_DATA_OLD: it proves nothing about
 * its source, so it can neither validate nor move a peer address. */
static void test_unchecked_replay(void)
{
	sim s;
	sim_config cfg = base(1);
	cfg.opts[0].replay_window = cfg.opts[1].replay_window = -1;
	CHECK_OK(sim_init(&s, 3, &cfg));
	CHECK(sim_run(&s, 5 * SIM_S, both_established, NULL));
	s.on_wire = capture_data;
	cap_len = 0;
	CHECK_OK(sio_core_write(s.p[0].core, s.now, 1, (const uint8_t *)"x", 1, 0));
	sio_core_flush(s.p[0].core, s.now);
	sim_flush(&s);
	s.on_wire = NULL;
	CHECK(cap_len > 0);
	uint8_t p[2048];
	size_t before = s.p[1].nmsgs;
	memcpy(p, cap_pkt, cap_len);
	CHECK_EQ(sio_core_recv(s.p[1].core, s.now, p, cap_len), SIO_CORE_RX_DATA);
	memcpy(p, cap_pkt, cap_len);
	CHECK_EQ(sio_core_recv(s.p[1].core, s.now, p, cap_len), SIO_CORE_RX_DATA_OLD);
	CHECK_EQ(s.p[1].nmsgs, before + 2);
	sim_free(&s);
}

int main(void)
{
	CHECK_OK(sio_init());
	for (int dg = 0; dg < 2; dg++)
		for (int mode = 1; mode <= 3; mode++)
			test_handshake(dg, mode);
	test_sizes(1);
	test_sizes(0);
	test_merging();
	test_early_writes();
	test_late_peer(1);
	test_late_peer(0);
	test_close(1);
	test_close(0);
	test_free_cancels();
	test_sim_mtu();
	test_padded_ctrl();
	test_frame_varints();
	test_reply_only();
	test_unchecked_replay();
	return check_done("test_core");
}
