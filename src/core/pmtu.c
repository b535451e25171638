/* Packet-size negotiation state machine (see pmtu.h, docs/PROTOCOL.md §14). */
#include <string.h>

#include "pmtu.h"

#define DEF_TIMEOUT_NS 500000000ull
#define DEF_CONFIRM_NS 10000000000ull
#define DEF_RAISE_NS   600000000000ull
#define MIN_WAIT_NS    2000000ull /* after a first answer, wait at least this for the rest */

static uint64_t min64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static uint64_t max64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

void sio_pmtu_init(sio_pmtu *p, const sio_pmtu_cfg *cfg)
{
	memset(p, 0, sizeof *p);
	p->cfg = *cfg;
	sio_pmtu_cfg *c = &p->cfg;
	if (!c->base)
		c->base = SIO_PMTU_BASE;
	if (c->base > c->max)
		c->base = c->max;
	if (!c->timeout_ns)
		c->timeout_ns = DEF_TIMEOUT_NS;
	if (!c->per_round)
		c->per_round = 3;
	if (c->per_round > SIO_PMTU_MAX_PER_ROUND)
		c->per_round = SIO_PMTU_MAX_PER_ROUND;
	if (!c->max_rounds)
		c->max_rounds = 12;
	if (!c->granularity)
		c->granularity = 8;
	if (!c->confirm_ns)
		c->confirm_ns = DEF_CONFIRM_NS;
	if (!c->raise_ns)
		c->raise_ns = DEF_RAISE_NS;
	p->size = c->base;
	p->next_id = 1;
	p->next_confirm = p->next_raise = UINT64_MAX;
}

static void settle(sio_pmtu *p, uint64_t now, uint32_t size)
{
	p->phase = SIO_PMTU_SETTLED;
	p->size = size;
	p->nprobe = 0;
	p->st.last_search_ns = now - p->search_start;
	p->done_once = 1;
	p->confirm_state = 0;
	p->misses = 0;
	/* Nothing to confirm at the base size: it cannot go lower. */
	p->next_confirm = p->cfg.confirm_ns == UINT64_MAX || size <= p->cfg.base
	                      ? UINT64_MAX
	                      : now + p->cfg.confirm_ns;
	p->next_raise = p->cfg.raise_ns == UINT64_MAX || size >= p->cfg.max ? UINT64_MAX
	                                                                    : now + p->cfg.raise_ns;
}

/* Time to wait for the answers of a round. */
static uint64_t round_wait(const sio_pmtu *p)
{
	uint64_t first = p->cfg.timeout_ns / 8;
	if (!p->rtt)
		return first;
	return min64(first, max64(4 * p->rtt, MIN_WAIT_NS));
}

/* Size of probe I (1..K) between lo and hi (probe K is hi). */
static uint32_t probe_size(const sio_pmtu *p, uint32_t i, uint32_t k)
{
	if (i == k)
		return p->hi;
	if (p->hi > 2 * (uint64_t)p->lo) {
		/* Geometric: lo * (hi / lo)^(i / k), by repeated k-th roots. */
		double r = (double)p->hi / (double)p->lo, f, lo = 1.0, hi = r;
		for (int it = 0; it < 60; it++) { /* f = r^(1/k) by bisection */
			double m = (lo + hi) / 2, pw = 1.0;
			for (uint32_t j = 0; j < k; j++)
				pw *= m;
			if (pw < r)
				lo = m;
			else
				hi = m;
		}
		f = lo;
		double s = p->lo;
		for (uint32_t j = 0; j < i; j++)
			s *= f;
		return (uint32_t)s;
	}
	return p->lo + (uint32_t)(((uint64_t)(p->hi - p->lo) * i + k - 1) / k);
}

static void remember(sio_pmtu *p, uint32_t id, uint32_t size, uint64_t now)
{
	uint32_t i = p->hist_n++ % SIO_PMTU_HISTORY;
	p->hist[i].id = id;
	p->hist[i].size = size;
	p->hist[i].sent = now;
}

static void forget(sio_pmtu *p, uint32_t id)
{
	for (uint32_t i = 0; i < SIO_PMTU_HISTORY; i++)
		if (p->hist[i].id == id)
			p->hist[i].id = 0;
}

static void new_round(sio_pmtu *p, uint64_t now)
{
	uint32_t k = p->cfg.per_round, prev = p->lo;
	p->nprobe = 0;
	if (!p->any_ack) {
		/* Until something is answered, one probe of the size known to
		 * work tells "the peer does not answer (yet)" apart from "these
		 * sizes are too big". */
		p->probe[0].id = p->next_id++;
		p->probe[0].size = p->lo;
		p->probe[0].sent = now;
		p->probe[0].state = 0;
		p->nprobe = 1;
	}
	for (uint32_t i = 1; i <= k; i++) {
		uint32_t s = probe_size(p, i, k);
		if (s <= prev || s > p->hi)
			continue;
		prev = s;
		p->probe[p->nprobe].id = p->next_id++;
		p->probe[p->nprobe].size = s;
		p->probe[p->nprobe].sent = now;
		p->probe[p->nprobe].state = 0;
		p->nprobe++;
	}
	p->rounds++;
	p->round_deadline = min64(now + round_wait(p), p->search_end);
}

static void begin_search(sio_pmtu *p, uint64_t now, uint32_t lo, uint32_t hi)
{
	p->phase = SIO_PMTU_SEARCH;
	p->lo = lo;
	p->hi = hi;
	p->rounds = 0;
	p->any_ack = 0;
	p->search_start = now;
	p->search_end = now + p->cfg.timeout_ns;
	p->confirm_state = 0;
	p->st.searches++;
	if (hi <= lo) {
		settle(p, now, lo);
		return;
	}
	new_round(p, now);
}

void sio_pmtu_start(sio_pmtu *p, uint64_t now)
{
	p->search_start = now;
	if (p->cfg.max <= p->cfg.base) {
		settle(p, now, p->cfg.max);
		return;
	}
	p->size = p->cfg.base;
	begin_search(p, now, p->cfg.base, p->cfg.max);
}

void sio_pmtu_fixed(sio_pmtu *p, uint32_t size)
{
	p->phase = SIO_PMTU_SETTLED;
	p->size = size;
	p->done_once = 1;
	p->nprobe = 0;
	p->next_confirm = p->next_raise = UINT64_MAX;
}

static void end_round(sio_pmtu *p, uint64_t now)
{
	uint32_t best = p->lo, fail = p->hi + 1;
	if (!p->any_ack) /* not even the known size: no conclusion, try again */
		goto next;
	for (uint32_t i = 0; i < p->nprobe; i++)
		if (p->probe[i].state == 2 && p->probe[i].size > best)
			best = p->probe[i].size;
	for (uint32_t i = 0; i < p->nprobe; i++)
		if (p->probe[i].state != 2 && p->probe[i].size > best && p->probe[i].size < fail)
			fail = p->probe[i].size;
	p->lo = best;
	p->hi = fail - 1;
next:
	p->nprobe = 0;
	if (p->hi < p->lo + p->cfg.granularity || p->rounds >= p->cfg.max_rounds ||
	    now >= p->search_end) {
		if (!p->any_ack && p->lo == p->cfg.base)
			p->st.fallbacks++;
		/* lo >= the size in use: a raise search starts from it, a
		 * path-change search from base. */
		settle(p, now, p->lo);
		return;
	}
	new_round(p, now);
}

static void confirm_missed(sio_pmtu *p, uint64_t now)
{
	p->misses++;
	if (p->misses >= SIO_PMTU_CONFIRM_MISSES) {
		uint32_t failed = p->size;
		p->st.path_changes++;
		p->size = p->cfg.base;
		begin_search(p, now, p->cfg.base, failed - 1);
		return;
	}
	p->confirm_state = 1; /* retry at once */
}

size_t sio_pmtu_poll(sio_pmtu *p, uint64_t now, sio_pmtu_probe *out, size_t max)
{
	size_t n = 0;
	if (p->phase == SIO_PMTU_SEARCH && now >= p->round_deadline)
		end_round(p, now);
	if (p->phase == SIO_PMTU_SETTLED) {
		if (p->confirm_state == 2 && now >= p->confirm_deadline)
			confirm_missed(p, now);
	}
	if (p->phase == SIO_PMTU_SETTLED) {
		if (p->confirm_state == 0 && now >= p->next_raise) {
			begin_search(p, now, p->size, p->cfg.max);
		} else if (p->confirm_state == 0 && now >= p->next_confirm) {
			p->confirm_state = 1;
		}
	}
	if (p->phase == SIO_PMTU_SEARCH) {
		for (uint32_t i = 0; i < p->nprobe && n < max; i++) {
			if (p->probe[i].state != 0)
				continue;
			p->probe[i].state = 1;
			p->probe[i].sent = now;
			remember(p, p->probe[i].id, p->probe[i].size, now);
			out[n].id = p->probe[i].id;
			out[n].size = p->probe[i].size;
			n++;
			p->st.probes_sent++;
		}
	} else if (p->phase == SIO_PMTU_SETTLED && p->confirm_state == 1 && n < max) {
		p->confirm_id = p->next_id++;
		p->confirm_state = 2;
		p->confirm_sent = now;
		remember(p, p->confirm_id, p->size, now);
		p->confirm_deadline =
		    now + min64(max64(4 * p->rtt, 10 * MIN_WAIT_NS), p->cfg.timeout_ns);
		out[n].id = p->confirm_id;
		out[n].size = p->size;
		n++;
		p->st.probes_sent++;
	}
	return n;
}

static void rtt_sample(sio_pmtu *p, uint64_t rtt)
{
	/* Largest recent sample, decaying slowly: waits stay generous. */
	if (rtt > p->rtt)
		p->rtt = rtt;
	else
		p->rtt = (p->rtt * 7 + rtt) / 8;
	if (!p->rtt)
		p->rtt = 1;
}

int sio_pmtu_ack(sio_pmtu *p, uint64_t now, uint32_t id, uint32_t size)
{
	if (p->phase == SIO_PMTU_SEARCH) {
		for (uint32_t i = 0; i < p->nprobe; i++) {
			if (p->probe[i].id != id || p->probe[i].state != 1)
				continue;
			if (p->probe[i].size != size)
				break;
			p->probe[i].state = 2;
			forget(p, id);
			p->any_ack = 1;
			p->st.acks++;
			rtt_sample(p, now - p->probe[i].sent);
			int all = 1, top = 1;
			for (uint32_t j = 0; j < p->nprobe; j++) {
				if (p->probe[j].state != 2)
					all = 0;
				if (p->probe[j].size > size)
					top = 0;
			}
			if (all || top)
				end_round(p, now);
			else
				p->round_deadline =
				    min64(p->round_deadline, now + max64(3 * p->rtt, MIN_WAIT_NS));
			return 1;
		}
	} else if (p->phase == SIO_PMTU_SETTLED && p->confirm_state == 2 && id == p->confirm_id &&
	           size == p->size) {
		p->st.acks++;
		forget(p, id);
		rtt_sample(p, now - p->confirm_sent);
		p->confirm_state = 0;
		p->misses = 0;
		p->next_confirm =
		    p->cfg.confirm_ns == UINT64_MAX ? UINT64_MAX : now + p->cfg.confirm_ns;
		return 1;
	}
	/* A late answer (its round or confirmation already ended). */
	for (uint32_t i = 0; i < SIO_PMTU_HISTORY && i < p->hist_n; i++) {
		if (p->hist[i].id != id || p->hist[i].size != size || !id)
			continue;
		p->hist[i].id = 0; /* once */
		p->st.acks++;
		rtt_sample(p, now - p->hist[i].sent);
		if (p->phase == SIO_PMTU_SEARCH && size > p->lo) {
			p->lo = size;
			p->any_ack = 1;
			if (p->hi < p->lo)
				p->hi = p->cfg.max;
		} else if (p->phase == SIO_PMTU_SETTLED && size > p->size) {
			p->size = size;
		}
		return 1;
	}
	p->st.bad_acks++;
	return 0;
}

void sio_pmtu_loss(sio_pmtu *p, uint64_t now)
{
	(void)now;
	if (p->phase == SIO_PMTU_SETTLED && p->confirm_state == 0 && p->cfg.max > p->cfg.base &&
	    p->size > p->cfg.base)
		p->confirm_state = 1;
}

uint64_t sio_pmtu_deadline(const sio_pmtu *p)
{
	if (p->phase == SIO_PMTU_SEARCH) {
		for (uint32_t i = 0; i < p->nprobe; i++)
			if (p->probe[i].state == 0)
				return 0;
		return p->round_deadline;
	}
	if (p->phase != SIO_PMTU_SETTLED)
		return UINT64_MAX;
	if (p->confirm_state == 1)
		return 0;
	if (p->confirm_state == 2)
		return p->confirm_deadline;
	return min64(p->next_confirm, p->next_raise);
}
