/* `sio listen --multi ADDRESS`: a hub serving many peers on one datagram
 * socket through the library's listener (server mode).
 *
 * Every message a peer sends (one line in the clients' --lines mode) is
 * written to stdout as one line "FINGERPRINT MESSAGE", MESSAGE escaped for
 * a terminal (escape.c, docs/SIO.md "Terminal safety"); every stdin line is
 * sent to every connected peer. Peers come and go; stderr says so. -r names
 * an authorized_keys-style file of allowed peers, reloaded on SIGHUP.
 * SIGINT/SIGTERM (or the end of stdin) close every session and exit. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define MAX_PEERS 65536

static volatile sig_atomic_t m_stop, m_hup;
static int m_out_err; /* errno of a failed stdout write (atomic access) */

static void on_sig(int sig)
{
	if (sig == SIGHUP)
		m_hup = 1;
	else
		m_stop = 1;
}

struct peer {
	sio_session *s;
	char fp[SIO_FINGERPRINT_MAX];
	int gone;
	int accepted;
	uint64_t lines; /* messages received (on the session's I/O thread) */
	struct peer *all; /* every peer ever made, freed at exit */
};

static struct peer *g_all;
static struct cli_mode g_hub_mode; /* what the hub announces (docs/SIO.md) */
static pthread_mutex_t g_all_mu = PTHREAD_MUTEX_INITIALIZER;

struct hub {
	pthread_mutex_t mu; /* stdout and the peer list */
	struct peer **p;
	size_t n, cap;
	uint32_t type;
	int quiet;
	const struct cli_opts *o;
};

static void on_msg(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	struct peer *p = ctx;
	(void)type;
	p->lines++;
	if (!p->fp[0]) {
		uint8_t pk[SIO_PUBLIC_KEY_BYTES];
		if (sio_session_remote_key(s, pk) == 0)
			sio_fingerprint(pk, p->fp, sizeof p->fp);
	}
	/* One line "FINGERPRINT TEXT": the peer's bytes escaped (cli_escape),
	 * so that no newline, carriage return or terminal control sequence of
	 * theirs can end, repaint or fake a line of another peer. Written in
	 * pieces straight to the descriptor (no stdio buffer keeps a copy);
	 * the stdout lock keeps lines whole between peers' threads. */
	char out[4 * 4096 + SIO_FINGERPRINT_MAX + 2];
	int utf8 = cli_utf8_locale();
	size_t n = (size_t)snprintf(out, sizeof out, "%s ", p->fp), i = 0;
	int e = 0;
	flockfile(stdout);
	do {
		size_t k = len - i;
		if (k > 4096) {
			k = 4096;
			/* a UTF-8 character cut at the piece boundary would be
			 * escaped byte by byte: end the piece before its lead byte */
			size_t b = k;
			while (utf8 && b > k - 3 && (d[i + b] & 0xc0) == 0x80)
				b--;
			if ((d[i + b] & 0xc0) != 0x80)
				k = b;
		}
		n += cli_escape(d + i, k, utf8, out + n);
		i += k;
		if (i == len)
			out[n++] = '\n';
		if (!e)
			e = cli_write_all(STDOUT_FILENO, out, n);
		n = 0;
	} while (i < len);
	if (e && !__atomic_load_n(&m_out_err, __ATOMIC_RELAXED))
		__atomic_store_n(&m_out_err, e, __ATOMIC_RELAXED);
	funlockfile(stdout);
	explicit_bzero(out, sizeof out); /* the peer's plaintext */
}

static void on_herr(sio_session *s, uint32_t type, int err, void *ctx)
{
	struct peer *p = ctx;
	(void)s;
	(void)type;
	if (__atomic_load_n(&p->accepted, __ATOMIC_ACQUIRE))
		fprintf(stderr, "sio: peer %s left: %s\n", p->fp,
		        err == SIO_ECLOSED ? "closed" : sio_strerror(err));
	__atomic_store_n(&p->gone, 1, __ATOMIC_RELEASE);
}

/* The control channel: a client's HELLO gets the hub's in answer; a client
 * whose mode does not fit (not --multi --lines on our channel) is told so
 * by that answer and closed. */
static void on_ctl(sio_session *s, uint32_t type, const uint8_t *d, size_t len, void *ctx)
{
	struct peer *p = ctx;
	struct cli_mode m;
	(void)type;
	if (len == 9 && d[0] == C_LEND) {
		/* LEND: the client's lines ended. Every line it sent that
		 * arrived is written: confirm them (LACK), and end our side at
		 * once (DONE): the hub's lines to a client have no end */
		uint8_t f[17];
		f[0] = C_LACK;
		for (int i = 0; i < 8; i++)
			f[1 + i] = (uint8_t)(p->lines >> (56 - 8 * i));
		sio_write_message(s, CLI_CTL_CHANNEL, f, 9);
		f[0] = C_DONE;
		memset(f + 1, 0, 8);
		for (int i = 0; i < 8; i++)
			f[9 + i] = (uint8_t)(p->lines >> (56 - 8 * i));
		sio_write_message(s, CLI_CTL_CHANNEL, f, 17);
		return;
	}
	if (!len || d[0] != CLI_HELLO)
		return;
	int bad = cli_hello_decode(d, len, &m) < 0 || cli_mode_check(&g_hub_mode, &m) < 0;
	if (!(m.flags & CLI_HF_READY) || bad) {
		struct cli_mode ours = g_hub_mode;
		uint8_t f[CLI_HELLO_LEN];
		ours.flags |= CLI_HF_SEEN | CLI_HF_READY;
		cli_hello_encode(&ours, f);
		sio_write_message(s, CLI_CTL_CHANNEL, f, sizeof f);
	}
	if (bad) {
		char txt[128] = "an unreadable announcement";
		if (cli_hello_decode(d, len, &m) == 0)
			cli_mode_text(&m, txt, sizeof txt);
		if (!p->fp[0]) {
			uint8_t pk[SIO_PUBLIC_KEY_BYTES];
			if (sio_session_remote_key(s, pk) == 0)
				sio_fingerprint(pk, p->fp, sizeof p->fp);
		}
		fprintf(stderr, "sio: peer %s refused: mode mismatch: it runs %s\n", p->fp, txt);
		sio_close(s);
	}
}

/* Each new peer session gets its handler before it starts. */
static void on_session(sio_listener *l, sio_session *s, void *ctx)
{
	struct hub *h = ctx;
	(void)l;
	struct peer *p = calloc(1, sizeof *p);
	if (!p)
		return;
	p->s = s;
	pthread_mutex_lock(&g_all_mu);
	p->all = g_all;
	g_all = p;
	pthread_mutex_unlock(&g_all_mu);
	sio_set_handler(s, h->type, on_msg, on_herr, p);
	sio_set_handler(s, CLI_CTL_CHANNEL, on_ctl, NULL, p);
}

static struct peer *peer_of(sio_session *s)
{
	pthread_mutex_lock(&g_all_mu);
	struct peer *p = g_all;
	while (p && p->s != s)
		p = p->all;
	pthread_mutex_unlock(&g_all_mu);
	return p;
}

static void broadcast(struct hub *h, const char *line, size_t len)
{
	pthread_mutex_lock(&h->mu);
	for (size_t i = 0; i < h->n; i++)
		if (!__atomic_load_n(&h->p[i]->gone, __ATOMIC_ACQUIRE)) {
			sio_send_info *si = sio_write_message_async(h->p[i]->s, h->type, line, len, NULL, NULL, NULL);
			if (si)
				sio_send_info_release(si); /* the message still leaves */
		}
	pthread_mutex_unlock(&h->mu);
}

/* Frees the sessions of peers that left. */
static void reap(struct hub *h)
{
	pthread_mutex_lock(&h->mu);
	for (size_t i = 0; i < h->n;) {
		struct peer *p = h->p[i];
		if (__atomic_load_n(&p->gone, __ATOMIC_ACQUIRE)) {
			h->p[i] = h->p[--h->n];
			pthread_mutex_unlock(&h->mu);
			sio_session_free(p->s);
			pthread_mutex_lock(&h->mu);
			continue;
		}
		i++;
	}
	pthread_mutex_unlock(&h->mu);
}

static void hub_diag(sio_listener *l, int level, const char *msg, void *ctx)
{
	(void)l;
	cli_diag(((struct hub *)ctx)->o, level, msg);
}

static void peer_diag(sio_session *s, int level, const char *msg, void *ctx)
{
	(void)s;
	cli_diag(ctx, level, msg);
}

int cli_multi(struct cli_opts *o)
{
	int code = CLI_ERR, rc;
	char err[512];
	struct cli_addr addr;
	if (cli_addr_parse(o->address, 1, &addr, err, sizeof err) != 0)
		return cli_usage_error(o->cmd, "%s", err);
	if (addr.kind != CLI_UDP && addr.kind != CLI_UNIXGRAM)
		return cli_usage_error(o->cmd, "--multi needs a datagram address (udp: or unixgram:)");
	if ((rc = sio_init()) < 0) {
		cli_err("cannot initialise the library: %s", sio_strerror(rc));
		return CLI_ERR;
	}
	sio_identity *id = NULL;
	sio_remote *allowed = NULL;
	sio_listener *l = NULL;
	struct cli_conn conn = {.fd = -1};
	struct hub h;
	memset(&h, 0, sizeof h);
	pthread_mutex_init(&h.mu, NULL);
	h.type = o->have_channel ? o->channel : SIO_TYPE_READWRITE;
	cli_mode_of(o, 1, &g_hub_mode);
	h.quiet = o->quiet;
	h.o = o;
	uint8_t psk[1025];
	size_t psk_len = 0;

	if (cli_load_identity(o, &id))
		goto out;
	if (o->remote && cli_load_remote(o->remote, &allowed))
		goto out;
	if (o->psk_file && cli_read_psk(o->psk_file, psk, sizeof psk, &psk_len))
		goto out;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_sig;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	int c = cli_open(&addr, CLI_LISTEN_SHARED, 0, &m_stop, &conn, err, sizeof err);
	if (c) {
		cli_err("%s", err);
		code = c;
		goto out;
	}
	sio_options so;
	memset(&so, 0, sizeof so);
	cli_set_rekey(&so, o->rekey_s);
	if (psk_len) {
		so.psk = psk;
		so.psk_len = psk_len;
	}
	sio_callbacks scb;
	memset(&scb, 0, sizeof scb);
	scb.ctx = o;
	scb.on_diag = peer_diag; /* -v: what each peer session does */
	scb.diag_level = cli_diag_level(o);
	sio_listener_options lo;
	memset(&lo, 0, sizeof lo);
	lo.session_opts = &so;
	lo.session_cbs = &scb;
	lo.on_diag = hub_diag; /* refused identities, drop summaries */
	lo.diag_level = cli_diag_level(o);
	lo.on_session = on_session;
	lo.ctx = &h;
	rc = sio_listener_new(&l, id, conn.fd, allowed, &lo);
	if (rc == 0)
		rc = sio_listener_start(l);
	if (rc < 0) {
		cli_err("cannot start the listener: %s", sio_strerror(rc));
		goto out;
	}
	if (!o->quiet)
		fprintf(stderr, "sio: serving many peers on %s%s\n", o->address,
		        allowed ? " (allowed keys from -r; SIGHUP reloads)" : "");
	code = CLI_OK;
	char line[65536];
	size_t used = 0;
	int in_open = 1;
	while (!m_stop) {
		if (m_hup) {
			m_hup = 0;
			if (o->remote) {
				rc = sio_listener_reload_allowed(l, o->remote);
				if (rc < 0)
					cli_err("%s: reload failed, keeping the old keys: %s", o->remote, sio_strerror(rc));
				else if (!o->quiet)
					fprintf(stderr, "sio: allowed keys reloaded from %s\n", o->remote);
			}
		}
		sio_session *s = NULL;
		while (sio_listener_accept(l, &s, 0) == 0) {
			struct peer *p = peer_of(s);
			uint8_t pk[SIO_PUBLIC_KEY_BYTES];
			if (!p) {
				sio_session_free(s);
				continue;
			}
			if (!p->fp[0] && sio_session_remote_key(s, pk) == 0)
				sio_fingerprint(pk, p->fp, sizeof p->fp);
			__atomic_store_n(&p->accepted, 1, __ATOMIC_RELEASE);
			if (!o->quiet)
				fprintf(stderr, "sio: peer %s joined\n", p->fp);
			int added = 0;
			pthread_mutex_lock(&h.mu);
			if (h.n == h.cap) {
				size_t nc = h.cap ? h.cap * 2 : 16;
				struct peer **np = realloc(h.p, nc * sizeof *np);
				if (np) {
					h.p = np;
					h.cap = nc;
				}
			}
			if (h.n < h.cap) {
				h.p[h.n++] = p;
				added = 1;
			}
			pthread_mutex_unlock(&h.mu);
			if (!added)
				sio_session_free(s);
		}
		reap(&h);
		int oe = __atomic_load_n(&m_out_err, __ATOMIC_RELAXED);
		if (oe) { /* nowhere to write what peers send: stop, as the relay does */
			cli_err("stdout: %s", strerror(oe));
			code = CLI_ERR;
			break;
		}
		struct pollfd pf = {in_open ? 0 : -1, POLLIN, 0};
		int pr = poll(&pf, 1, 100);
		if (pr > 0 && in_open) {
			ssize_t k = read(0, line + used, sizeof line - used);
			if (k <= 0) {
				in_open = 0;
				if (used)
					broadcast(&h, line, used);
				break;
			}
			used += (size_t)k;
			size_t start = 0;
			for (size_t i = 0; i < used; i++)
				if (line[i] == '\n') {
					broadcast(&h, line + start, i - start);
					start = i + 1;
				}
			if (start == 0 && used == sizeof line) {
				broadcast(&h, line, used); /* an overlong line goes as is */
				start = used;
			}
			memmove(line, line + start, used - start);
			used -= start;
		}
	}
	if (o->stats) {
		sio_listener_stats st;
		sio_listener_stats_get(l, &st);
		fprintf(stderr,
		        "sio: listener: %llu peers accepted, %llu roams, %llu cookies; dropped: malformed %llu, "
		        "unknown %llu, unauthorized %llu, refused %llu, half-open full %llu, sessions full %llu, "
		        "bad cookie %llu, queue %llu, expired %llu, replayed %llu, memory %llu; %llu datagrams "
		        "withheld from unvalidated addresses\n",
		        (unsigned long long)st.accepted, (unsigned long long)st.roams,
		        (unsigned long long)st.cookies_sent, (unsigned long long)st.drop_malformed,
		        (unsigned long long)st.drop_unknown, (unsigned long long)st.drop_unauthorized,
		        (unsigned long long)st.drop_refused, (unsigned long long)st.drop_half_open,
		        (unsigned long long)st.drop_sessions, (unsigned long long)st.drop_cookie,
		        (unsigned long long)st.drop_queue, (unsigned long long)st.expired,
		        (unsigned long long)st.drop_replay, (unsigned long long)st.drop_memory,
		        (unsigned long long)st.amp_limited);
	}
	/* graceful goodbye to everyone */
	pthread_mutex_lock(&h.mu);
	for (size_t i = 0; i < h.n; i++)
		sio_close(h.p[i]->s);
	for (size_t i = 0; i < h.n; i++)
		sio_close_and_wait(h.p[i]->s, 2000);
	pthread_mutex_unlock(&h.mu);
out:
	for (size_t i = 0; i < h.n; i++)
		sio_session_free(h.p[i]->s);
	free(h.p);
	sio_listener_free(l);
	while (g_all) {
		struct peer *p = g_all;
		g_all = p->all;
		free(p);
	}
	cli_conn_close(&conn);
	explicit_bzero(psk, sizeof psk);
	sio_remote_free(allowed);
	sio_identity_free(id);
	pthread_mutex_destroy(&h.mu);
	return code;
}
