/* Protocol core, diagnostics: one-line human messages for the program's
 * sio_callbacks.on_diag (docs/API.md, "Diagnostics"). The core hands them
 * to cb.diag, which the session layer only queues (lock held); the program
 * sees them later, from the session's event dispatch.
 *
 * Nothing here runs unless cb.diag is set. Drops are not reported one by
 * one: the counters of sio_stats are compared with what was last reported,
 * and each reason gets at most one line a second, counting what came since
 * its previous line, so a flood of junk yields a bounded number of lines
 * whose counts add up to the counters. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "core_int.h"

#define DG_PERIOD_NS 1000000000ull
/* Signature checks spent on reporting refused identities: bursts of 8,
 * then 4 a second, apart from the key exchange's own budget. */
#define DG_VERIFY_RATE 4
#define DG_VERIFY_BURST 8

void sio_core_diag(sio_core *c, int level, const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	c->cb.diag(c->cb.ctx, level, buf);
}

void sio_core_diag_fp(const uint8_t pk[32], char *out)
{
	if (sio_fingerprint(pk, out, SIO_FINGERPRINT_MAX) != 0)
		strcpy(out, "SHA256:?");
}

static uint64_t reason_count(const sio_core *c, int r)
{
	const sio_stats *s = &c->st;
	switch (r) {
	case SIO_DG_MALFORMED:
		return s->drop_malformed;
	case SIO_DG_DECRYPT:
		return s->drop_decrypt;
	case SIO_DG_REPLAY:
		return s->drop_replay + s->drop_too_old;
	case SIO_DG_UNKNOWN_KEY:
		return s->drop_unknown_key;
	case SIO_DG_IDENTITY:
		return c->auth_refused;
	case SIO_DG_KX_LIMITED:
		return s->drop_kx_limited;
	case SIO_DG_KX:
		/* every refused identity and every message over the budget
		 * is also in drop_kx: the rest are invalid ones */
		return s->drop_kx - s->drop_kx_limited - c->auth_refused;
	case SIO_DG_FRAGMENTS:
		return s->drop_fragments;
	default:
		return s->drop_unknown_type;
	}
}

static const char *const reason_text[SIO_DG_REASONS] = {
	[SIO_DG_MALFORMED] = "malformed",
	[SIO_DG_DECRYPT] = "decrypt: authentication failed",
	[SIO_DG_REPLAY] = "replay: duplicate or too old",
	[SIO_DG_UNKNOWN_KEY] = "unknown key",
	[SIO_DG_IDENTITY] = "identity: key exchange from an identity not accepted",
	[SIO_DG_KX_LIMITED] = "kx_limited: over the signature-check budget",
	[SIO_DG_KX] = "kx: invalid key-exchange message",
	[SIO_DG_FRAGMENTS] = "fragments",
	[SIO_DG_UNKNOWN_TYPE] = "unknown message type",
};

static int bucket(uint64_t *tat, uint64_t now, unsigned rate, unsigned burst)
{
	const uint64_t per = 1000000000ull / rate;
	uint64_t t = *tat > now ? *tat : now;
	if (t - now > (burst - 1) * per)
		return 0;
	*tat = t + per;
	return 1;
}

void sio_core_diag_warn(sio_core *c, const char *msg)
{
	sio_diag_state *d = &c->dg;
	if (!bucket(&d->warn_tat, d->now, 1, 4)) {
		d->warn_hidden++;
		return;
	}
	if (d->warn_hidden)
		sio_core_diag(c, SIO_DIAG_WARN, "%s (and %llu such lines not shown)", msg,
			      (unsigned long long)d->warn_hidden);
	else
		sio_core_diag(c, SIO_DIAG_WARN, "%s", msg);
	d->warn_hidden = 0;
}

void sio_core_diag_drops(sio_core *c, uint64_t now)
{
	sio_diag_state *d = &c->dg;
	d->now = now;
	if (!SIO_DIAG_ON(c, SIO_DIAG_INFO))
		return;
	d->next = UINT64_MAX;
	for (int r = 0; r < SIO_DG_REASONS; r++) {
		uint64_t n = reason_count(c, r);
		if (n == d->seen[r])
			continue;
		if (now < d->quiet_until[r]) {
			if (d->quiet_until[r] < d->next)
				d->next = d->quiet_until[r];
			continue;
		}
		uint64_t k = n - d->seen[r];
		const char *what = r == SIO_DG_UNKNOWN_TYPE ? "message" : "packet";
		sio_core_diag(c, SIO_DIAG_INFO, "dropped %llu %s%s (%s)%s", (unsigned long long)k, what,
			      k == 1 ? "" : "s", reason_text[r],
			      d->quiet_until[r] ? " since the last report" : "");
		d->seen[r] = n;
		d->quiet_until[r] = now + DG_PERIOD_NS;
	}
}

void sio_core_diag_refused(sio_core *c, uint64_t now, const uint8_t m[SIO_KX_MSG_LEN],
			   const uint8_t pk[32], int pinned)
{
	sio_diag_state *d = &c->dg;
	if (!SIO_DIAG_ON(c, SIO_DIAG_WARN))
		return;
	uint32_t n = d->nrefused < SIO_DG_REFUSED_KEYS ? d->nrefused : SIO_DG_REFUSED_KEYS;
	for (uint32_t i = 0; i < n; i++)
		if (memcmp(d->refused[i], pk, 32) == 0)
			return; /* reported already (counted in the drop summaries) */
	/* Only a message its identity signed names that identity: anyone can
	 * write any key into junk, and the log must not say otherwise. */
	if (!bucket(&d->verify_tat, now, DG_VERIFY_RATE, DG_VERIFY_BURST) || sio_kx_verify(m) != 0)
		return;
	memcpy(d->refused[d->nrefused % SIO_DG_REFUSED_KEYS], pk, 32);
	d->nrefused++;
	char fp[SIO_FINGERPRINT_MAX];
	sio_core_diag_fp(pk, fp);
	sio_core_diag(c, SIO_DIAG_WARN, "refused %s (%s)", fp,
		      pinned ? "pinned, but not allowed from this address" : "not pinned");
}
