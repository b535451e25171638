/* Fragmentation and packet-size negotiation through two cores over the
 * simulator (issue #4):
 *  - messages of random sizes from 0 bytes to several packets across many
 *    channels, both ways: lossless -> each exactly once, in order per
 *    channel, intact (datagram and stream);
 *  - with loss, duplication and reordering -> what arrives is intact and
 *    never duplicated;
 *  - the path MTU lowered mid-session -> the size adapts, traffic goes on;
 *  - the NEGOTIATION state, negotiation off, stream transports;
 *  - SIO_ETOOBIG without fragmentation / above max_message_size; messages
 *    larger than the send ring, with a close right after;
 *  - a hostile (authenticated) peer: conflicting overlaps, duplicates, huge
 *    announcements, endless partial messages, malformed fragment frames,
 *    lost fragments timing out.
 * SIO_SIM_SEED=s replays one seed; SIO_SIM_SEEDS=n runs n seeds (default 20). */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core_int.h"
#include "lib/sim.h"

#define NCH     9 /* channels 0..7 and SIO_TYPE_READWRITE */
#define MAXSENT 4096

static uint32_t chan_type(int ch)
{
	return ch == NCH - 1 ? SIO_TYPE_READWRITE : (uint32_t)ch * 1000003u % 0x7fffffffu;
}

static int chan_of(uint32_t type)
{
	for (int ch = 0; ch < NCH; ch++)
		if (chan_type(ch) == type)
			return ch;
	return -1;
}

/* Message content: bytes 0..3 sequence number, 4 channel, then a pattern. */
static void gen(uint8_t *b, size_t len, int side, int ch, uint32_t seq)
{
	uint8_t hdr[5] = {(uint8_t)seq, (uint8_t)(seq >> 8), (uint8_t)(seq >> 16),
	                  (uint8_t)(seq >> 24), (uint8_t)(ch | side << 7)};
	for (size_t k = 0; k < len; k++)
		b[k] =
		    k < 5 ? hdr[k] : (uint8_t)(k * 131 + seq * 7 + (size_t)ch * 13 + (size_t)side);
}

typedef struct traffic {
	uint32_t len[2][NCH][MAXSENT]; /* per side, channel: sizes sent */
	uint32_t nsent[2][NCH];
	size_t total[2];
} traffic;

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

/* sio_core_write, repeated (same arguments) while the ring is full. */
static int write_retry(sim *s, int side, uint32_t type, const uint8_t *d, size_t len)
{
	for (int i = 0; i < 100000; i++) {
		int r = sio_core_write(s->p[side].core, s->now, type, d, len, 0);
		if (r != SIO_EAGAIN)
			return r;
		sim_run(s, s->now + SIM_MS / 10, NULL, NULL);
	}
	return SIO_EAGAIN;
}

/* Writes N random messages (0 .. MAXLEN bytes, MINLEN at least) on random
 * channels from both sides. Returns the number that failed to queue. */
static int send_random(sim *s, traffic *t, uint64_t *rng, int n, size_t minlen, size_t maxlen,
                       int both)
{
	uint8_t *buf = malloc(maxlen + 1);
	int failed = 0;
	for (int i = 0; i < n; i++) {
		int side = both ? (int)(sim_rand(rng) % 2) : 0;
		int ch = (int)(sim_rand(rng) % NCH);
		size_t len;
		uint64_t r = sim_rand(rng) % 100;
		if (r < 15)
			len = minlen + sim_rand(rng) % 8; /* tiny, 0 included */
		else
			len = minlen + sim_rand(rng) % (maxlen - minlen + 1);
		uint32_t seq = t->nsent[side][ch];
		if (seq >= MAXSENT)
			continue;
		gen(buf, len, side, ch, seq);
		int rc = write_retry(s, side, chan_type(ch), buf, len);
		if (rc) {
			failed++;
			continue;
		}
		t->len[side][ch][seq] = (uint32_t)len;
		t->nsent[side][ch]++;
		t->total[side]++;
		/* Sometimes let time pass (merging windows close, packets fly). */
		if (sim_rand(rng) % 4 == 0)
			sim_run(s, s->now + sim_rand(rng) % (2 * SIM_MS), NULL, NULL);
	}
	free(buf);
	return failed;
}

typedef struct want {
	size_t n[2];
} want;

static int all_delivered(sim *s, void *ctx)
{
	want *w = ctx;
	return s->p[1].nmsgs >= w->n[0] && s->p[0].nmsgs >= w->n[1];
}

/* Checks what side RX received from side !RX. ORDERED: each message exactly
 * once and in order per channel; else intact and never duplicated.
 * Returns the number of messages verified. */
static size_t verify(sim *s, traffic *t, int rx, int ordered)
{
	int tx = !rx;
	uint32_t next[NCH] = {0};
	static uint8_t seen[NCH][MAXSENT];
	uint8_t *buf = NULL;
	size_t cap = 0, ok = 0;
	memset(seen, 0, sizeof seen);
	for (size_t i = 0; i < s->p[rx].nmsgs; i++) {
		sim_msg *m = &s->p[rx].msgs[i];
		int ch = chan_of(m->type);
		CHECK(ch >= 0);
		if (ch < 0)
			continue;
		uint32_t seq;
		if (ordered) {
			seq = next[ch]++;
		} else {
			if (m->len < 5) /* too short to name itself: content checked below */
				continue;
			seq = (uint32_t)m->data[0] | (uint32_t)m->data[1] << 8 |
			      (uint32_t)m->data[2] << 16 | (uint32_t)m->data[3] << 24;
		}
		CHECK(seq < t->nsent[tx][ch]);
		if (seq >= t->nsent[tx][ch])
			continue;
		CHECK(!seen[ch][seq]); /* never twice */
		seen[ch][seq] = 1;
		CHECK_EQ(m->len, t->len[tx][ch][seq]);
		if (m->len != t->len[tx][ch][seq])
			continue;
		if (m->len > cap) {
			cap = m->len;
			buf = realloc(buf, cap);
		}
		gen(buf, m->len, tx, ch, seq);
		int same = m->len == 0 || memcmp(buf, m->data, m->len) == 0;
		CHECK(same);
		ok += same;
	}
	if (ordered)
		for (int ch = 0; ch < NCH; ch++)
			CHECK_EQ(next[ch], t->nsent[tx][ch]);
	free(buf);
	return ok;
}

static uint64_t nseeds(void)
{
	const char *v = getenv("SIO_SIM_SEEDS");
	return v ? strtoull(v, NULL, 10) : 20;
}

static int seed_given(uint64_t *seed)
{
	const char *v = getenv("SIO_SIM_SEED");
	if (!v)
		return 0;
	*seed = strtoull(v, NULL, 10);
	return 1;
}

/* ---- lossless: exactly once, in order, intact ---------------------------- */

static void run_lossless(uint64_t seed, int datagram)
{
	sim s;
	static traffic t;
	memset(&t, 0, sizeof t);
	sim_config cfg = base(datagram);
	uint64_t rng = seed * 977 + (uint64_t)datagram;
	if (!datagram)
		cfg.opts[0].max_packet_size = cfg.opts[1].max_packet_size = 4096 + 512 * (seed % 4);
	if (seed % 3 == 1)
		cfg.opts[0].send_delay_ns = cfg.opts[1].send_delay_ns = -1;
	unsigned long f0 = check_failed;
	CHECK_OK(sim_init(&s, seed, &cfg));
	CHECK(sim_run(&s, 5 * SIM_S, both_established, NULL));
	size_t maxp = sio_core_pkt_size(s.p[0].core);
	CHECK_EQ(maxp, datagram ? 1452 : cfg.opts[0].max_packet_size);
	CHECK_EQ(send_random(&s, &t, &rng, 600, 0, 4 * maxp, 1), 0);
	want w = {{t.total[0], t.total[1]}};
	CHECK(sim_run(&s, s.now + 60 * SIM_S, all_delivered, &w));
	sim_run(&s, s.now + 100 * SIM_MS, NULL, NULL); /* nothing more may come */
	CHECK_EQ(verify(&s, &t, 1, 1), t.total[0]);
	CHECK_EQ(verify(&s, &t, 0, 1), t.total[1]);
	sio_stats st;
	sio_core_stats(s.p[1].core, &st);
	CHECK_EQ(st.drop_fragments, 0);
	CHECK_EQ(st.drop_malformed, 0);
	CHECK_EQ(sio_frag_rx_partials(s.p[1].core->msg.rx), 0);
	sio_frag_stats fs;
	sio_frag_rx_stats(s.p[1].core->msg.rx, &fs);
	CHECK(fs.delivered > t.total[0] / 4); /* many were fragmented */
	if (getenv("SIO_SIM_VERBOSE"))
		fprintf(stderr,
		        "lossless seed %llu dg %d: %zu+%zu msgs, %llu reassembled, %llu packets\n",
		        (unsigned long long)seed, datagram, t.total[0], t.total[1],
		        (unsigned long long)fs.delivered, (unsigned long long)s.packets);
	if (check_failed != f0)
		sim_replay_hint("test_sim_messages", seed);
	sim_free(&s);
}

/* ---- lossy: intact, never duplicated ------------------------------------- */

static void run_lossy(uint64_t seed)
{
	sim s;
	static traffic t;
	memset(&t, 0, sizeof t);
	sim_config cfg = base(1);
	uint64_t rng = seed * 31337;
	cfg.net.loss = 0.02 + (double)(seed % 5) * 0.02;
	cfg.net.dup = 0.05;
	cfg.net.reorder = 0.1;
	cfg.net.reorder_delay = 3 * SIM_MS;
	cfg.net.jitter = SIM_MS;
	/* Duplicated packets reach the reassembly only without the replay
	 * window (which then lets whole small messages repeat, by definition):
	 * odd seeds turn it off and send only fragmented messages, which the
	 * reassembly must still never deliver twice. */
	int norp = seed % 2;
	if (norp)
		cfg.opts[0].replay_window = cfg.opts[1].replay_window = -1;
	unsigned long f0 = check_failed;
	CHECK_OK(sim_init(&s, seed, &cfg));
	CHECK(sim_run(&s, 30 * SIM_S, both_established, NULL));
	size_t maxp = sio_core_pkt_size(s.p[0].core);
	CHECK(maxp >= 1200 && maxp <= 1452);
	CHECK_EQ(send_random(&s, &t, &rng, 500, norp ? maxp : 5, 4 * maxp, 1), 0);
	sim_run(&s, s.now + 10 * SIM_S, NULL, NULL);
	size_t got1 = verify(&s, &t, 1, 0), got0 = verify(&s, &t, 0, 0);
	CHECK_EQ(got1, s.p[1].nmsgs);
	CHECK_EQ(got0, s.p[0].nmsgs);
	/* Loss costs messages, but most arrive. */
	CHECK(got1 > t.total[0] / 2);
	CHECK(got1 < t.total[0] || cfg.net.loss == 0);
	sio_stats st;
	sio_core_stats(s.p[1].core, &st);
	CHECK(st.drop_fragments > 0); /* lost fragments timed out */
	if (getenv("SIO_SIM_VERBOSE"))
		fprintf(stderr,
		        "lossy seed %llu loss %.2f: %zu/%zu arrived, %llu fragments dropped\n",
		        (unsigned long long)seed, cfg.net.loss, got1, t.total[0],
		        (unsigned long long)st.drop_fragments);
	CHECK_EQ(sio_frag_rx_partials(s.p[1].core->msg.rx), 0);
	if (check_failed != f0)
		sim_replay_hint("test_sim_messages", seed);
	sim_free(&s);
}

/* ---- negotiation ---------------------------------------------------------- */

static void test_negotiation(void)
{
	sim s;
	sio_stats st;
	/* Path MTU 1300 from the start: probing settles just below it, within
	 * the negotiation timeout, through the NEGOTIATION state. */
	sim_config cfg = base(1);
	cfg.net.mtu = 1300;
	CHECK_OK(sim_init(&s, 11, &cfg));
	CHECK(sim_run(&s, 5 * SIM_S, both_established, NULL));
	for (int i = 0; i < 2; i++) {
		sim_peer *p = &s.p[i];
		CHECK_EQ(p->states[2], SIO_STATE_NEGOTIATION);
		CHECK_EQ(p->states[3], SIO_STATE_ESTABLISHED);
		sio_core_stats(p->core, &st);
		CHECK(st.packet_size <= 1300 && st.packet_size + 8 >= 1300);
		CHECK_EQ(st.packet_size, sio_core_pkt_size(p->core));
		CHECK(p->core->msg.pmtu.st.last_search_ns <= 500 * SIM_MS);
	}
	CHECK(s.mtu_drops > 0); /* the too-large probes */
	/* A message as large as the negotiated packet allows fits in one. */
	uint8_t big[4000];
	memset(big, 7, sizeof big);
	size_t room = sio_core_pkt_size(s.p[0].core) - SIO_OVERHEAD - 1;
	uint64_t pk = s.packets;
	CHECK_OK(sio_core_write(s.p[0].core, s.now, SIO_TYPE_READWRITE, big, room, 0));
	sim_run(&s, s.now + 20 * SIM_MS, NULL, NULL);
	CHECK_EQ(s.p[1].nmsgs, 1);
	CHECK_EQ(s.packets - pk, 1);
	uint64_t drops = s.mtu_drops;
	CHECK_OK(sio_core_write(s.p[0].core, s.now, SIO_TYPE_READWRITE, big, sizeof big, 0));
	sim_run(&s, s.now + 20 * SIM_MS, NULL, NULL);
	CHECK_EQ(s.p[1].nmsgs, 2);
	CHECK_EQ(s.mtu_drops, drops);
	sim_free(&s);

	/* The peer's answers are lost at first (heavy loss): still settles. */
	cfg = base(1);
	cfg.net.loss = 0.3;
	CHECK_OK(sim_init(&s, 12, &cfg));
	CHECK(sim_run(&s, 60 * SIM_S, both_established, NULL));
	sio_core_stats(s.p[0].core, &st);
	CHECK(st.packet_size >= 1200 && st.packet_size <= 1452);
	sim_free(&s);

	/* Negotiation off: the configured size at once, no probe at all. */
	cfg = base(1);
	cfg.opts[0].negotiation = cfg.opts[1].negotiation = -1;
	cfg.opts[0].max_packet_size = cfg.opts[1].max_packet_size = 1400;
	CHECK_OK(sim_init(&s, 13, &cfg));
	CHECK(sim_run(&s, 5 * SIM_S, both_established, NULL));
	sio_core_stats(s.p[0].core, &st);
	CHECK_EQ(st.packet_size, 1400);
	CHECK_EQ(s.p[0].core->msg.pmtu.st.probes_sent, 0);
	sim_free(&s);

	/* Stream transports never probe. */
	cfg = base(0);
	CHECK_OK(sim_init(&s, 14, &cfg));
	CHECK(sim_run(&s, 5 * SIM_S, both_established, NULL));
	sio_core_stats(s.p[1].core, &st);
	CHECK_EQ(st.packet_size, 65535);
	CHECK_EQ(s.p[1].core->msg.pmtu.st.probes_sent, 0);
	sim_free(&s);
}

/* The path MTU drops mid-session: big packets vanish, the sender notices
 * (nothing comes back), confirms with probes, searches again, and traffic
 * goes on at the smaller size. */
static void test_mtu_lowered(void)
{
	sim s;
	static traffic t;
	memset(&t, 0, sizeof t);
	uint64_t rng = 4242;
	sim_config cfg = base(1);
	CHECK_OK(sim_init(&s, 15, &cfg));
	CHECK(sim_run(&s, 5 * SIM_S, both_established, NULL));
	CHECK_EQ(sio_core_pkt_size(s.p[0].core), 1452);
	CHECK_EQ(send_random(&s, &t, &rng, 100, 5, 5000, 0), 0);
	want w = {{t.total[0], 0}};
	CHECK(sim_run(&s, s.now + 10 * SIM_S, all_delivered, &w));

	s.net.mtu = 1280;
	uint64_t t0 = s.now;
	CHECK_EQ(send_random(&s, &t, &rng, 50, 5, 5000, 0), 0); /* mostly lost */
	for (int i = 0; i < 100 && sio_core_pkt_size(s.p[0].core) > 1280; i++)
		sim_run(&s, s.now + 100 * SIM_MS, NULL, NULL);
	uint32_t ps = sio_core_pkt_size(s.p[0].core);
	CHECK(ps <= 1280 && ps + 8 >= 1280);
	CHECK(s.now - t0 < 10 * SIM_S);
	CHECK_EQ(s.p[0].core->msg.pmtu.st.path_changes, 1);
	CHECK_EQ(sio_core_state(s.p[0].core), SIO_STATE_ESTABLISHED);

	/* Traffic continues: everything written from now on arrives. */
	size_t before = s.p[1].nmsgs;
	traffic *t2 = calloc(1, sizeof *t2);
	(void)t2;
	size_t sent_before = t.total[0];
	CHECK_EQ(send_random(&s, &t, &rng, 100, 5, 5000, 0), 0);
	size_t n_new = t.total[0] - sent_before;
	want w2 = {{before + n_new, 0}};
	CHECK(sim_run(&s, s.now + 10 * SIM_S, all_delivered, &w2));
	CHECK_EQ(s.p[1].nmsgs, before + n_new);
	/* And all that arrived is intact and unique. */
	CHECK_EQ(verify(&s, &t, 1, 0), s.p[1].nmsgs);
	free(t2);
	sim_free(&s);
}

/* ---- refusals at the sender ----------------------------------------------- */

static void test_toobig(void)
{
	sim s;
	sim_config cfg = base(1);
	cfg.opts[0].fragmentation = -1;
	cfg.opts[1].max_message_size = 100000;
	CHECK_OK(sim_init(&s, 16, &cfg));
	CHECK(sim_run(&s, 5 * SIM_S, both_established, NULL));
	static uint8_t buf[100001];
	size_t room = sio_core_pkt_size(s.p[0].core) - SIO_OVERHEAD - 1;
	/* Fragmentation off: the largest that fits goes, one more is refused. */
	CHECK_OK(sio_core_write(s.p[0].core, s.now, SIO_TYPE_READWRITE, buf, room, 0));
	CHECK_EQ(sio_core_write(s.p[0].core, s.now, SIO_TYPE_READWRITE, buf, room + 1, 0),
	         SIO_ETOOBIG);
	CHECK_EQ(sio_core_write(s.p[0].core, s.now, 5, buf, 5000, 0), SIO_ETOOBIG);
	/* Fragmentation on: up to max_message_size, not one byte more. */
	CHECK_OK(write_retry(&s, 1, 5, buf, 100000));
	CHECK_EQ(sio_core_write(s.p[1].core, s.now, 5, buf, 100001, 0), SIO_ETOOBIG);
	sim_run(&s, s.now + SIM_S, NULL, NULL);
	CHECK_EQ(s.p[1].nmsgs, 1);
	/* Side 0 has fragmentation off: it drops fragments it receives (counted). */
	CHECK_EQ(s.p[0].nmsgs, 0);
	sio_stats st;
	sio_core_stats(s.p[0].core, &st);
	CHECK(st.drop_fragments > 0);
	sim_free(&s);
}

/* A message larger than the send ring is accepted whole: the core keeps
 * its remaining bytes and queues them as packets leave; meanwhile other
 * writes wait (order is kept), and a close sends CLOSE only after it. */
static void test_big_write(void)
{
	sim s;
	sim_config cfg = base(0);
	cfg.opts[0].max_packet_size = cfg.opts[1].max_packet_size = 4096;
	CHECK_OK(sim_init(&s, 17, &cfg));
	CHECK(sim_run(&s, 5 * SIM_S, both_established, NULL));
	size_t len = 4u << 20; /* much more than the ring holds */
	uint8_t *big = malloc(len), *ref = malloc(len), small[3] = {1, 2, 3};
	gen(big, len, 0, 3, 0);
	memcpy(ref, big, len);
	sio_core *c = s.p[0].core;
	CHECK_OK(sio_core_write(c, s.now, chan_type(3), big, len, 77));
	memset(big, 0, len); /* the caller's buffer is free at once */
	CHECK(c->msg.tx_active);
	CHECK_EQ(sio_core_write(c, s.now, chan_type(3), small, 3, 0), SIO_EAGAIN);
	CHECK_EQ(sio_core_write(c, s.now, chan_type(4), small, 3, 0), SIO_EAGAIN);
	CHECK_OK(write_retry(&s, 0, chan_type(3), small, 3));
	/* A second big one, then close at once: both arrive before the end. */
	CHECK_OK(write_retry(&s, 0, chan_type(5), ref, len));
	CHECK_OK(sio_core_close(c, s.now));
	CHECK_EQ(sio_core_state(c), SIO_STATE_CLOSING);
	CHECK_EQ(sio_core_write(c, s.now, chan_type(3), small, 3, 0), SIO_ECLOSED);
	sim_run(&s, s.now + 20 * SIM_S, NULL, NULL);
	CHECK_EQ(s.p[1].nmsgs, 3);
	if (s.p[1].nmsgs == 3) {
		CHECK(s.p[1].msgs[0].len == len && memcmp(s.p[1].msgs[0].data, ref, len) == 0);
		CHECK_EQ(s.p[1].msgs[1].len, 3);
		CHECK(s.p[1].msgs[2].len == len && memcmp(s.p[1].msgs[2].data, ref, len) == 0);
		CHECK_EQ(s.p[1].msgs[2].type, chan_type(5));
	}
	CHECK_EQ(sio_core_state(c), SIO_STATE_CLOSED);
	CHECK_EQ(sio_core_state(s.p[1].core), SIO_STATE_CLOSED);
	CHECK_EQ(s.p[0].nerrors, 0);
	CHECK_EQ(s.p[0].sent_ok, 1); /* token 77 */
	CHECK_EQ(s.p[0].sent_fail, 0);
	sim_free(&s);

	/* Freed while the rest is still waiting: its token fails. */
	CHECK_OK(sim_init(&s, 19, &cfg));
	CHECK(sim_run(&s, 5 * SIM_S, both_established, NULL));
	CHECK_OK(sio_core_write(s.p[0].core, s.now, 1, ref, len, 5));
	sio_core_free(s.p[0].core);
	s.p[0].core = NULL;
	CHECK_EQ(s.p[0].sent_fail, 1);
	sim_free(&s);
	free(big);
	free(ref);
}

/* ---- a hostile peer: crafted fragment frames under valid keys ------------- */

static void frag_frame(sim *s, const sio_frag_hdr *h, const uint8_t *payload)
{
	uint8_t hdr[SIO_FRAG_HDR_MAX];
	size_t hl = sio_frag_hdr_put(hdr, h, 0);
	CHECK_OK(sio_core_tx_frame(s->p[0].core, s->now, hdr, hl, payload, h->len, 0));
}

static void test_attacks(void)
{
	sim s;
	sio_stats st;
	sio_frag_stats fs;
	sim_config cfg = base(1);
	cfg.opts[1].max_message_size = 1 << 20;
	cfg.opts[1].max_reassembly_bytes = 2 << 20;
	cfg.opts[1].max_partial_messages = 16;
	CHECK_OK(sim_init(&s, 18, &cfg));
	CHECK(sim_run(&s, 5 * SIM_S, both_established, NULL));
	sio_frag_rx *rx = s.p[1].core->msg.rx;
	uint8_t a[1000], b[1000];
	memset(a, 'a', sizeof a);
	memcpy(b, a, sizeof b);
	b[999] = 'b';

	/* Overlap with different bytes: discarded, never delivered. */
	sio_frag_hdr h = {1, 1000, 3000, 0, 1000};
	frag_frame(&s, &h, a);
	h.off = 500;
	frag_frame(&s, &h, b); /* bytes 500..999 overlap: b[499] = 'a' ok, the last differs */
	h.off = 1000;
	frag_frame(&s, &h, a);
	h.off = 2000;
	frag_frame(&s, &h, a);
	sio_core_flush(s.p[0].core, s.now);
	sim_run(&s, s.now + 10 * SIM_MS, NULL, NULL);
	sio_frag_rx_stats(rx, &fs);
	CHECK_EQ(s.p[1].nmsgs, 0);
	CHECK_EQ(fs.conflicts, 1);
	sio_core_stats(s.p[1].core, &st);
	CHECK(st.drop_fragments >= 3);

	/* Duplicated fragments: delivered exactly once. */
	h = (sio_frag_hdr){2, 1001, 2000, 0, 1000};
	frag_frame(&s, &h, a);
	frag_frame(&s, &h, a);
	h.off = 1000;
	frag_frame(&s, &h, a);
	frag_frame(&s, &h, a);
	h.off = 0;
	frag_frame(&s, &h, a);
	sio_core_flush(s.p[0].core, s.now);
	sim_run(&s, s.now + 10 * SIM_MS, NULL, NULL);
	CHECK_EQ(s.p[1].nmsgs, 1);
	CHECK(s.p[1].nmsgs == 1 && s.p[1].msgs[0].len == 2000 && s.p[1].msgs[0].type == 2);

	/* Huge announcements allocate nothing. */
	uint64_t bytes0;
	sio_frag_rx_stats(rx, &fs);
	bytes0 = fs.bytes;
	h = (sio_frag_hdr){3, 1002, 0xffffffffu, 0, 1000};
	frag_frame(&s, &h, a);
	h = (sio_frag_hdr){3, 1003, (1 << 20) + 1, 0, 1000};
	frag_frame(&s, &h, a);
	sio_core_flush(s.p[0].core, s.now);
	sim_run(&s, s.now + 10 * SIM_MS, NULL, NULL);
	sio_frag_rx_stats(rx, &fs);
	CHECK_EQ(fs.too_big, 2);
	CHECK_EQ(fs.bytes, bytes0);

	/* Endless partial messages of the largest size: bounded. */
	for (uint32_t id = 2000; id < 2400; id++) {
		h = (sio_frag_hdr){4, id, 1 << 20, 0, 100};
		frag_frame(&s, &h, a);
		if (id % 16 == 0) {
			sio_core_flush(s.p[0].core, s.now);
			sim_run(&s, s.now + 2 * SIM_MS, NULL, NULL);
			sio_frag_rx_stats(rx, &fs);
			CHECK(fs.bytes <= (2u << 20));
			CHECK(sio_frag_rx_partials(rx) <= 16);
		}
	}
	sio_core_flush(s.p[0].core, s.now);
	sim_run(&s, s.now + 10 * SIM_MS, NULL, NULL);
	sio_frag_rx_stats(rx, &fs);
	CHECK(fs.peak_bytes <= (2u << 20));
	CHECK(fs.evicted > 300);
	CHECK_EQ(s.p[1].nmsgs, 1);

	/* Lost fragments time out (and are counted); the session lives on. */
	sim_run(&s, s.now + 5 * SIM_S, NULL, NULL);
	CHECK_EQ(sio_frag_rx_partials(rx), 0);
	sio_frag_rx_stats(rx, &fs);
	CHECK(fs.timeouts >= 1);
	CHECK_EQ(sio_core_state(s.p[1].core), SIO_STATE_ESTABLISHED);

	/* Malformed fragment frames (off + len > total, zero length) end the
	 * packet and are counted as malformed. */
	sio_core_stats(s.p[1].core, &st);
	uint64_t mal = st.drop_malformed;
	uint8_t bad[] = {SIO_FR_FRAGMENT, 0x02, 0x01, 0x0a, 0x08, 0x05};
	CHECK_OK(sio_core_tx_frame(s.p[0].core, s.now, bad, sizeof bad, a, 5, 1));
	uint8_t zero[] = {SIO_FR_FRAGMENT, 0x02, 0x02, 0x0a, 0x00, 0x00};
	CHECK_OK(sio_core_tx_frame(s.p[0].core, s.now, zero, sizeof zero, NULL, 0, 1));
	sim_run(&s, s.now + 10 * SIM_MS, NULL, NULL);
	sio_core_stats(s.p[1].core, &st);
	CHECK_EQ(st.drop_malformed, mal + 2);

	/* Through all this, normal traffic still works (the honest sender's
	 * message ids continue after the crafted ones). */
	s.p[0].core->msg.next_id = 2400;
	size_t n = s.p[1].nmsgs;
	CHECK_OK(write_retry(&s, 0, 9, a, 1000));
	static uint8_t big[50000];
	CHECK_OK(write_retry(&s, 0, 9, big, sizeof big));
	sim_run(&s, s.now + 100 * SIM_MS, NULL, NULL);
	CHECK_EQ(s.p[1].nmsgs, n + 2);
	sim_free(&s);
}

int main(void)
{
	CHECK_OK(sio_init());
	uint64_t one;
	if (seed_given(&one)) {
		run_lossless(one, 1);
		run_lossless(one, 0);
		run_lossy(one);
		return check_done("test_sim_messages");
	}
	for (uint64_t seed = 1; seed <= nseeds(); seed++) {
		run_lossless(seed, 1);
		run_lossless(seed, 0);
		run_lossy(seed);
	}
	test_negotiation();
	test_mtu_lowered();
	test_toobig();
	test_big_write();
	test_attacks();
	return check_done("test_sim_messages");
}
