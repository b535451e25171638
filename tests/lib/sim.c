/* Deterministic two-core network simulator (see sim.h). */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

uint64_t sim_rand(uint64_t *state)
{
	/* splitmix64 */
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

double sim_uniform(uint64_t *state)
{
	return (double)(sim_rand(state) >> 11) / 9007199254740992.0;
}

static void cb_random(void *ctx, uint8_t *buf, size_t len)
{
	sim_peer *p = ctx;
	for (size_t i = 0; i < len; i += 8) {
		uint64_t r = sim_rand(&p->rng);
		size_t n = len - i < 8 ? len - i : 8;
		memcpy(buf + i, &r, n);
	}
}

static void cb_deliver(void *ctx, uint32_t type, const uint8_t *data, size_t len)
{
	sim_peer *p = ctx;
	sim *s = p->sim;
	if (s->on_deliver)
		s->on_deliver(s, p->side, type, data, len, s->hook_ctx);
	if (!s->keep_msgs)
		return;
	if (p->nmsgs == p->capmsgs) {
		p->capmsgs = p->capmsgs ? 2 * p->capmsgs : 64;
		p->msgs = realloc(p->msgs, p->capmsgs * sizeof *p->msgs);
	}
	sim_msg *m = &p->msgs[p->nmsgs++];
	m->type = type;
	m->len = (uint32_t)len;
	m->data = malloc(len ? len : 1);
	memcpy(m->data, data, len);
}

static void cb_state(void *ctx, sio_state o, sio_state n)
{
	sim_peer *p = ctx;
	(void)o;
	if (p->nstates < 16)
		p->states[p->nstates++] = n;
	if (n == SIO_STATE_ESTABLISHED && !p->established_at)
		p->established_at = p->sim->now ? p->sim->now : 1;
}

static void cb_error(void *ctx, int err, const char *msg)
{
	sim_peer *p = ctx;
	(void)msg;
	if (getenv("SIM_VERBOSE"))
		fprintf(stderr, "sim t=%.3f side %d error %d: %s\n", p->sim->now / 1e9, p->side, err,
			msg);
	if (p->nerrors < 64)
		p->errors[p->nerrors++] = err;
}

static int cb_remote_identity(void *ctx, const uint8_t pk[32])
{
	sim_peer *p = ctx;
	sim_peer *o = &p->sim->p[!p->side];
	if (p->refuse_identity)
		return -1;
	return memcmp(pk, o->pk, 32) == 0 ? 0 : -1;
}

static void cb_sent(void *ctx, uint64_t token, int err)
{
	sim_peer *p = ctx;
	(void)token;
	if (err)
		p->sent_fail++;
	else
		p->sent_ok++;
}

/* The adversary's randomness, from the simulation's seed. */
static void adv_random(void *ctx, uint8_t *buf, size_t len)
{
	sim *s = ctx;
	for (size_t i = 0; i < len; i += 8) {
		uint64_t r = sim_rand(&s->rng);
		size_t n = len - i < 8 ? len - i : 8;
		memcpy(buf + i, &r, n);
	}
}

int sim_init(sim *s, uint64_t seed, const sim_config *cfg)
{
	memset(s, 0, sizeof *s);
	s->seed = seed;
	s->rng = seed * 0x2545f4914f6cdd1dull + 1;
	s->net = cfg->net;
	s->datagram = cfg->datagram;
	s->keep_msgs = 1;
	s->wall = 1700000000ull * SIM_S + (sim_rand(&s->rng) % SIM_S);
	for (int i = 0; i < 2; i++) {
		sim_peer *p = &s->p[i];
		uint8_t seedb[32];
		p->side = i;
		p->sim = s;
		p->rng = sim_rand(&s->rng);
		if (sodium_is_zero(cfg->id_seed[i], 32))
			cb_random(p, seedb, 32);
		else
			memcpy(seedb, cfg->id_seed[i], 32);
		crypto_sign_seed_keypair(p->pk, p->sk, seedb);
	}
	if (cfg->adversary) {
		sim_adversary *a = calloc(1, sizeof *a);
		uint8_t seedb[32];
		if (!a)
			return -1;
		uint8_t sk[64], pk[32];
		const sio_options *vo;
		a->victim = cfg->adversary - 1;
		vo = &cfg->opts[a->victim];
		adv_random(s, seedb, 32);
		crypto_sign_seed_keypair(pk, sk, seedb);
		forge_init(&a->g, sk, vo->psk, vo->psk_len);
		sodium_memzero(sk, sizeof sk);
		a->g.random = adv_random;
		a->g.rctx = s;
		a->period = 300 * SIM_MS;
		s->adv = a;
	}
	for (int i = 0; i < 2; i++) {
		sim_peer *p = &s->p[i];
		sio_core_config cc;
		sio_core_cbs cb = {
			.ctx = p,
			.deliver = cb_deliver,
			.state = cb_state,
			.error = cb_error,
			.remote_identity = cb_remote_identity,
			.sent = cb_sent,
			.random = cb_random,
		};
		memset(&cc, 0, sizeof cc);
		if (cfg->pin[i] || !sodium_is_zero(cfg->pin_key[i], 32)) {
			const uint8_t *k = sodium_is_zero(cfg->pin_key[i], 32) ? s->p[!i].pk
										: cfg->pin_key[i];
			if (sio_remote_from_public_key(&p->remote, k) != 0)
				return -1;
			/* The victim's set holds the adversary's key too. */
			if (s->adv && s->adv->victim == i && sio_remote_add(p->remote, s->adv->g.pk) != 0)
				return -1;
		}
		cc.ed25519_sk = p->sk;
		cc.remote = p->remote;
		cc.datagram = cfg->datagram;
		cc.opts = cfg->opts[i];
		cc.wallclock_ns = s->wall + (uint64_t)i * 1000 + (uint64_t)cfg->wall_offset[i];
		int r = sio_core_new(&p->core, &cc, &cb);
		if (r)
			return r;
		if (cfg->learn[i]) {
			p->learn = 1;
			sio_core_set_reply_only(p->core, 1);
		}
	}
	for (int i = 0; i < 2; i++)
		if (!cfg->no_start[i])
			sio_core_start(s->p[i].core, 0);
	return 0;
}

void sim_free(sim *s)
{
	for (int i = 0; i < 2; i++) {
		sim_peer *p = &s->p[i];
		sio_core_free(p->core);
		sio_remote_free(p->remote);
		for (size_t j = 0; j < p->nmsgs; j++)
			free(p->msgs[j].data);
		free(p->msgs);
	}
	if (s->adv)
		forge_wipe(&s->adv->g);
	free(s->adv);
	for (size_t i = 0; i < s->nq; i++)
		free(s->q[i].data);
	free(s->q);
	memset(s, 0, sizeof *s);
}

static void enqueue(sim *s, int to, const uint8_t *d, size_t len, uint64_t at, int corrupted)
{
	if (s->nq == s->capq) {
		s->capq = s->capq ? 2 * s->capq : 64;
		s->q = realloc(s->q, s->capq * sizeof *s->q);
	}
	sim_pkt *p = &s->q[s->nq++];
	p->at = at;
	p->to = to;
	p->corrupted = corrupted;
	p->len = len;
	p->data = malloc(len ? len : 1);
	memcpy(p->data, d, len);
}

void sim_inject(sim *s, int to, const uint8_t *pkt, size_t len, uint64_t at)
{
	enqueue(s, to, pkt, len, at, 1);
}

/* ---- the key-holding adversary (sim.h, forge.h) ---------------------------- */

/* Watches every packet put on the wire (before loss); answers the victim's
 * reply to a forgery with data sealed under the forged keys. */
static void adv_observe(sim *s, int from, const uint8_t *d, size_t len)
{
	sim_adversary *a = s->adv;
	uint8_t out[FORGE_DATA_LEN];
	if (a && forge_observe(&a->g, from == a->victim, d, len, out))
		sim_inject(s, a->victim, out, sizeof out, s->now);
}

/* Forges one key exchange every period once the victim has a peer, the
 * three variants in turn. */
static void adv_tick(sim *s)
{
	sim_adversary *a = s->adv;
	uint8_t pk[32], out[FORGE_KX_MAX];
	if (!a)
		return;
	/* The worst timing for the victim: forge as soon as it has accepted the
	 * honest peer's first message (an oracle the simulation can afford). */
	if (!a->victim_bound && sio_core_remote_key(s->p[a->victim].core, pk) == 0)
		a->victim_bound = 1;
	if (!a->victim_bound || s->now < a->next_forge)
		return;
	size_t n = forge_kx(&a->g, (int)(a->g.forged % 3), s->wall + s->now + SIM_S, out);
	if (!n)
		return;
	a->next_forge = s->now + a->period;
	sim_inject(s, a->victim, out, n, s->now);
}

static void net_send(sim *s, int from, const uint8_t *d, size_t len)
{
	sim_net *n = &s->net;
	int to = !from;
	s->packets++;
	adv_observe(s, from, d, len);
	if (s->on_wire)
		s->on_wire(s, from, d, len, s->hook_ctx);
	if (s->datagram && sim_uniform(&s->rng) < n->loss)
		return;
	if (s->datagram && n->mtu && len > n->mtu) {
		s->mtu_drops++;
		return;
	}
	int copies = s->datagram && sim_uniform(&s->rng) < n->dup ? 2 : 1;
	for (int c = 0; c < copies; c++) {
		uint64_t at = s->now + n->delay + (n->jitter ? sim_rand(&s->rng) % (n->jitter + 1) : 0);
		if (s->datagram && sim_uniform(&s->rng) < n->reorder)
			at += n->reorder_delay;
		if (!s->datagram) {
			/* a stream never reorders */
			if (at < s->last_at[to])
				at = s->last_at[to];
			s->last_at[to] = at;
		}
		int corrupt = sim_uniform(&s->rng) < n->corrupt;
		enqueue(s, to, d, len, at, 0);
		if (corrupt && len) {
			sim_pkt *p = &s->q[s->nq - 1];
			uint64_t bit = sim_rand(&s->rng) % (len * 8);
			p->data[bit / 8] ^= (uint8_t)(1u << (bit % 8));
			p->corrupted = 1;
		}
	}
}

void sim_flush(sim *s)
{
	struct iovec iov[64];
	for (int i = 0; i < 2; i++) {
		sio_core *c = s->p[i].core;
		for (;;) {
			size_t n = sio_core_pending(c, s->now, iov, 64);
			if (!n)
				break;
			for (size_t k = 0; k < n; k++) {
				sim_peer *p = &s->p[i];
				size_t len = iov[k].iov_len;
				if (p->learn && !p->learn_valid) {
					if (!p->learn_known)
						continue; /* no peer address yet */
					if (p->unval_tx + len > 3 * p->unval_rx) {
						p->budget_drops++;
						continue;
					}
					p->unval_tx += len;
				}
				net_send(s, i, iov[k].iov_base, len);
			}
			sio_core_sent(c, n, 0);
		}
	}
}

static void deliver_due(sim *s)
{
	for (;;) {
		size_t best = SIZE_MAX;
		for (size_t i = 0; i < s->nq; i++)
			if (s->q[i].at <= s->now && (best == SIZE_MAX || s->q[i].at < s->q[best].at))
				best = i;
		if (best == SIZE_MAX)
			return;
		sim_pkt p = s->q[best];
		memmove(&s->q[best], &s->q[best + 1], (s->nq - best - 1) * sizeof *s->q);
		s->nq--;
		sim_peer *peer = &s->p[p.to];
		sio_stats before, after;
		struct iovec iov[64];
		sio_core_stats(peer->core, &before);
		size_t out_before = sio_core_pending(peer->core, s->now, iov, 64);
		int r = sio_core_recv(peer->core, s->now, p.data, p.len);
		sio_core_stats(peer->core, &after);
		/* A dropped packet is never answered. */
		if (!r && sio_core_pending(peer->core, s->now, iov, 64) != out_before)
			peer->answered_drop++;
		uint64_t drops_b = before.drop_malformed + before.drop_decrypt + before.drop_replay +
				   before.drop_too_old + before.drop_unknown_key + before.drop_kx;
		uint64_t drops_a = after.drop_malformed + after.drop_decrypt + after.drop_replay +
				   after.drop_too_old + after.drop_unknown_key + after.drop_kx;
		peer->recv_calls++;
		if (r == SIO_CORE_RX_DATA)
			peer->learn_valid = 1;
		else if (r == SIO_CORE_RX_KX || r == SIO_CORE_RX_KX_REPEAT) {
			peer->learn_known = 1;
			peer->unval_rx += p.len;
		}
		if (r)
			peer->recv_authentic++;
		else if (drops_a != drops_b + 1)
			peer->uncounted_drop++;
		if (p.corrupted) {
			peer->corrupted_in++;
			if (!r && drops_a == drops_b + 1)
				peer->dropped_on_corrupt++;
			if (r)
				peer->corrupt_accepted++;
		}
		free(p.data);
		sim_flush(s);
		if (s->adv && p.to == s->adv->victim)
			adv_tick(s); /* forge right after the victim took its peer */
	}
}

int sim_run(sim *s, uint64_t t, int (*stop)(sim *s, void *ctx), void *ctx)
{
	sim_flush(s);
	while (s->now < t) {
		if (stop && stop(s, ctx))
			return 1;
		uint64_t next = t;
		for (int i = 0; i < 2; i++) {
			uint64_t d = sio_core_deadline(s->p[i].core);
			if (d < next)
				next = d;
		}
		for (size_t i = 0; i < s->nq; i++)
			if (s->q[i].at < next)
				next = s->q[i].at;
		if (s->adv && s->adv->victim_bound && s->adv->next_forge < next)
			next = s->adv->next_forge;
		if (next <= s->now)
			next = s->now + 1;
		/* Clock jumps: the process was suspended; both clocks move. */
		if (s->net.clock_jump > 0 && next / SIM_S != s->now / SIM_S &&
		    sim_uniform(&s->rng) < s->net.clock_jump) {
			uint64_t j = sim_rand(&s->rng) % (s->net.clock_jump_max + 1);
			next += j;
			s->jumps++;
		}
		if (next > t)
			next = t;
		s->now = next;
		adv_tick(s);
		deliver_due(s);
		for (int i = 0; i < 2; i++)
			sio_core_tick(s->p[i].core, s->now);
		sim_flush(s);
		/* After its timers ran and its output was taken, a core must not
		 * ask to run again at once (an I/O thread would spin). */
		for (int i = 0; i < 2; i++)
			if (sio_core_deadline(s->p[i].core) <= s->now)
				s->p[i].deadline_spins++;
	}
	return stop && stop(s, ctx);
}

int sim_established(const sim *s)
{
	return sio_core_state(s->p[0].core) == SIO_STATE_ESTABLISHED &&
	       sio_core_state(s->p[1].core) == SIO_STATE_ESTABLISHED;
}

int sim_has_error(const sim_peer *p, int err)
{
	for (size_t i = 0; i < p->nerrors; i++)
		if (p->errors[i] == err)
			return 1;
	return 0;
}

void sim_replay_hint(const char *test, uint64_t seed)
{
	fprintf(stderr, "  replay with: SIO_SIM_SEED=%llu ./%s\n", (unsigned long long)seed, test);
}
