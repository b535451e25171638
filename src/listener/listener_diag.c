/* Listener diagnostics (sio_listener_options.on_diag, docs/API.md
 * "Diagnostics"): refused identities, once each and only when signed, and
 * drop summaries from sio_listener_stats, one line per reason and second at
 * most. Lines are formatted under the listener's lock into a small queue
 * and handed to the program by the thread reading the socket once it has
 * unlocked. Nothing here runs unless lo.on_diag is set. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "listener_int.h"

#define PERIOD_NS 1000000000ull
/* Signature checks spent on naming refused identities: bursts of 8, then
 * 4 a second (admission itself never checks signatures). */
#define VERIFY_RATE 4
#define VERIFY_BURST 8

static int level_on(const struct sio_listener *l, int level)
{
	return level <= (l->lo.diag_level > 0 ? l->lo.diag_level : SIO_DIAG_INFO);
}

static void push(struct sio_listener *l, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void push(struct sio_listener *l, int level, const char *fmt, ...)
{
	struct ldiag *d = &l->dg;
	if (d->n == SIO_L_DIAG_Q) {
		d->lost++;
		return;
	}
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(d->line[d->n], SIO_L_DIAG_LEN, fmt, ap);
	va_end(ap);
	d->level[d->n++] = level;
}

void sio_l_diag_refused(struct sio_listener *l, const uint8_t *msg, const uint8_t *pk, uint64_t now)
{
	struct ldiag *d = &l->dg;
	if (!level_on(l, SIO_DIAG_WARN))
		return;
	uint32_t n = d->nrefused < SIO_L_DIAG_KEYS ? d->nrefused : SIO_L_DIAG_KEYS;
	for (uint32_t i = 0; i < n; i++)
		if (memcmp(d->refused[i], pk, 32) == 0)
			return;
	const uint64_t per = 1000000000ull / VERIFY_RATE;
	uint64_t tat = d->verify_tat > now ? d->verify_tat : now;
	if (tat - now > (VERIFY_BURST - 1) * per)
		return;
	d->verify_tat = tat + per;
	/* anyone can write any key into junk: name only who signed */
	if (sio_kx_verify(msg) != 0)
		return;
	memcpy(d->refused[d->nrefused++ % SIO_L_DIAG_KEYS], pk, 32);
	char fp[SIO_FINGERPRINT_MAX];
	if (sio_fingerprint(pk, fp, sizeof fp) != 0)
		strcpy(fp, "SHA256:?");
	push(l, SIO_DIAG_WARN, "refused %s (not allowed)", fp);
}

static uint64_t count_of(const sio_listener_stats *s, int r)
{
	const uint64_t v[SIO_L_DIAG_REASONS] = {
	    s->drop_malformed, s->drop_unknown, s->drop_unauthorized, s->drop_refused,
	    s->drop_half_open, s->drop_sessions, s->drop_cookie,     s->drop_queue,
	    s->drop_replay,    s->drop_memory,
	};
	return v[r];
}

static const char *const reason_text[SIO_L_DIAG_REASONS] = {
    "malformed", "unknown connection", "identity not allowed", "refused by on_peer",
    "half-open table full", "session table full", "bad cookie", "peer queue full",
    "replayed key exchange", "memory budget",
};

void sio_l_diag_drops(struct sio_listener *l, uint64_t now)
{
	struct ldiag *d = &l->dg;
	if (!level_on(l, SIO_DIAG_INFO))
		return;
	for (int r = 0; r < SIO_L_DIAG_REASONS; r++) {
		uint64_t n = count_of(&l->st, r);
		if (n == d->seen[r] || now < d->quiet_until[r])
			continue;
		uint64_t k = n - d->seen[r];
		push(l, SIO_DIAG_INFO, "dropped %llu datagram%s (%s)%s", (unsigned long long)k,
		     k == 1 ? "" : "s", reason_text[r], d->quiet_until[r] ? " since the last report" : "");
		d->seen[r] = n;
		d->quiet_until[r] = now + PERIOD_NS;
	}
}

void sio_l_diag_flush(struct sio_listener *l)
{
	char line[SIO_L_DIAG_Q][SIO_L_DIAG_LEN];
	int level[SIO_L_DIAG_Q];
	pthread_mutex_lock(&l->mu);
	unsigned n = l->dg.n;
	uint64_t lost = l->dg.lost;
	memcpy(line, l->dg.line, n * sizeof line[0]);
	memcpy(level, l->dg.level, n * sizeof level[0]);
	l->dg.n = 0;
	l->dg.lost = 0;
	pthread_mutex_unlock(&l->mu);
	if (!n && !lost)
		return;
	pthread_mutex_lock(&l->diag_mu); /* several workers: one caller at a time */
	for (unsigned i = 0; i < n; i++)
		l->lo.on_diag(l, level[i], line[i], l->lo.ctx);
	if (lost) {
		snprintf(line[0], sizeof line[0], "%llu diagnostics lines not shown (too many at once)",
			 (unsigned long long)lost);
		l->lo.on_diag(l, SIO_DIAG_WARN, line[0], l->lo.ctx);
	}
	pthread_mutex_unlock(&l->diag_mu);
}
