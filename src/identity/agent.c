/* ssh-agent client: an identity whose signatures the agent makes, so the
 * private key never enters this process. One short connection per request
 * (the agent may be restarted at the same path between key renewals; no
 * shared connection state between the threads of several sessions). */
#include <errno.h>
#include <poll.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "sshwire.h"
#include "identity.h"

#define AGENT_TIMEOUT_MS 60000 /* a person may have to confirm (ssh-add -c) */

struct agent_ctx {
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	uint8_t blob[SIO_PUBKEY_BLOB_BYTES];
	int timeout_ms;
};

/* ---- parsing (pure) ------------------------------------------------------ */

static int is_ed25519_blob(const uint8_t *b, size_t len, const uint8_t **pk)
{
	struct rd r = {b, len, 0};
	size_t tl, kl;
	const uint8_t *t = rd_str(&r, &tl);
	const uint8_t *k = rd_str(&r, &kl);
	if (r.bad || r.left || tl != 11 || memcmp(t, "ssh-ed25519", 11) != 0 || kl != 32)
		return 0;
	*pk = k;
	return 1;
}

int sio_agent_parse_identities(const uint8_t *msg, size_t len, const uint8_t *want,
                               uint8_t pk_out[32])
{
	if (!msg || len < 1)
		return SIO_EPROTO;
	if (msg[0] == SIO_AGENT_FAILURE && len == 1)
		return SIO_EAGENT;
	if (msg[0] != SIO_AGENT_IDENTITIES_ANSWER)
		return SIO_EPROTO;
	struct rd r = {msg + 1, len - 1, 0};
	uint32_t n = rd_u32(&r);
	if (r.bad || n > r.left / 8) /* each key takes at least two lengths */
		return SIO_EPROTO;
	int found = 0;
	for (uint32_t i = 0; i < n; i++) {
		size_t bl, cl;
		const uint8_t *blob = rd_str(&r, &bl);
		rd_str(&r, &cl); /* comment */
		if (r.bad)
			return SIO_EPROTO;
		const uint8_t *pk;
		if (found || !is_ed25519_blob(blob, bl, &pk))
			continue;
		if (want ? sodium_memcmp(pk, want, 32) == 0 : 1) {
			found = 1;
			if (pk_out)
				memcpy(pk_out, pk, 32);
		}
	}
	if (r.left != 0)
		return SIO_EPROTO;
	return found ? 0 : SIO_EAGENT;
}

int sio_agent_parse_sign(const uint8_t *msg, size_t len, uint8_t sig[64])
{
	if (!msg || len < 1)
		return SIO_EPROTO;
	if (msg[0] == SIO_AGENT_FAILURE && len == 1)
		return SIO_ESIGN;
	if (msg[0] != SIO_AGENT_SIGN_RESPONSE)
		return SIO_EPROTO;
	struct rd r = {msg + 1, len - 1, 0};
	size_t sl, tl, kl;
	const uint8_t *s = rd_str(&r, &sl);
	if (r.bad || r.left)
		return SIO_EPROTO;
	struct rd q = {s, sl, 0};
	const uint8_t *t = rd_str(&q, &tl);
	const uint8_t *k = rd_str(&q, &kl);
	if (q.bad || q.left || tl != 11 || memcmp(t, "ssh-ed25519", 11) != 0 || kl != 64)
		return SIO_EPROTO;
	memcpy(sig, k, 64);
	return 0;
}

/* ---- talking to the agent ------------------------------------------------ */

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for FD to be ready for EV until DEADLINE (monotonic ms). */
static int wait_fd(int fd, short ev, int64_t deadline)
{
	for (;;) {
		int64_t left = deadline - mono_ms();
		if (left <= 0)
			return -1;
		struct pollfd p = {fd, ev, 0};
		int r = poll(&p, 1, left > 1000000 ? 1000000 : (int)left);
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return -1;
	}
}

/* Sends REQ (LEN bytes, length prefix included) to the agent at PATH and
 * reads one reply (without its length prefix) into a malloc'ed *OUT.
 * Returns 0 or SIO_EAGENT (no agent, closed early, too slow, too long). */
static int agent_call(const char *path, const uint8_t *req, size_t len, int timeout_ms,
                      uint8_t **out, size_t *outlen)
{
	int64_t deadline = mono_ms() + timeout_ms;
	struct sockaddr_un a;
	memset(&a, 0, sizeof a);
	a.sun_family = AF_UNIX;
	if (!path || !*path || strlen(path) >= sizeof a.sun_path)
		return SIO_EAGENT;
	memcpy(a.sun_path, path, strlen(path));
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return SIO_EAGENT;
	int rc = SIO_EAGENT;
	uint8_t *buf = NULL;
	if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
		goto out;
	for (size_t n = 0; n < len;) {
		if (wait_fd(fd, POLLOUT, deadline))
			goto out;
		ssize_t w = send(fd, req + n, len - n, MSG_NOSIGNAL);
		if (w < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (w <= 0)
			goto out;
		n += (size_t)w;
	}
	uint8_t hdr[4];
	size_t want = 4, got = 0, total = 0;
	uint8_t *dst = hdr;
	for (int phase = 0; phase < 2; phase++) {
		while (got < want) {
			if (wait_fd(fd, POLLIN, deadline))
				goto out;
			ssize_t r = recv(fd, dst + got, want - got, 0);
			if (r < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (r <= 0)
				goto out;
			got += (size_t)r;
		}
		if (phase == 0) {
			total = (size_t)hdr[0] << 24 | (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3];
			if (total == 0 || total > SIO_AGENT_MAX_REPLY)
				goto out;
			buf = malloc(total);
			if (!buf) {
				rc = SIO_ENOMEM;
				goto out;
			}
			dst = buf;
			want = total;
			got = 0;
		}
	}
	*out = buf;
	*outlen = total;
	buf = NULL;
	rc = 0;
out:
	free(buf);
	close(fd);
	return rc;
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static int agent_sign(void *vctx, uint8_t sig[64], const uint8_t *msg, size_t len)
{
	struct agent_ctx *a = vctx;
	if (len > 4096)
		return SIO_EINVAL;
	uint8_t req[4 + 1 + 4 + SIO_PUBKEY_BLOB_BYTES + 4 + 4096 + 4];
	size_t n = 4;
	req[n++] = SIO_AGENTC_SIGN_REQUEST;
	put32(req + n, SIO_PUBKEY_BLOB_BYTES);
	n += 4;
	memcpy(req + n, a->blob, SIO_PUBKEY_BLOB_BYTES);
	n += SIO_PUBKEY_BLOB_BYTES;
	put32(req + n, (uint32_t)len);
	n += 4;
	memcpy(req + n, msg, len);
	n += len;
	put32(req + n, 0); /* flags: none (they only concern RSA) */
	n += 4;
	put32(req, (uint32_t)(n - 4));
	uint8_t *rep = NULL;
	size_t rlen = 0;
	int rc = agent_call(a->path, req, n, a->timeout_ms, &rep, &rlen);
	if (rc == SIO_EAGENT)
		return SIO_ESIGN; /* the agent went away or did not answer in time */
	if (rc)
		return rc;
	rc = sio_agent_parse_sign(rep, rlen, sig);
	free(rep);
	return rc == SIO_EPROTO ? SIO_ESIGN : rc;
}

int sio_identity_from_agent(sio_identity **out, const char *socket_path,
                            const uint8_t pk[SIO_PUBLIC_KEY_BYTES])
{
	if (!out)
		return SIO_EINVAL;
	*out = NULL;
	if (sodium_init() < 0)
		return SIO_ECRYPTO;
	if (!socket_path)
		socket_path = getenv("SSH_AUTH_SOCK");
	if (!socket_path || !*socket_path ||
	    strlen(socket_path) >= sizeof(((struct agent_ctx *)0)->path))
		return SIO_EAGENT;
	uint8_t req[5] = {0, 0, 0, 1, SIO_AGENTC_REQUEST_IDENTITIES};
	uint8_t *rep = NULL, found[32];
	size_t rlen = 0;
	int rc = agent_call(socket_path, req, sizeof req, 10000, &rep, &rlen);
	if (rc)
		return rc;
	rc = sio_agent_parse_identities(rep, rlen, pk, found);
	free(rep);
	if (rc)
		return rc;
	struct agent_ctx *a = calloc(1, sizeof *a);
	if (!a)
		return SIO_ENOMEM;
	memcpy(a->path, socket_path, strlen(socket_path));
	sio_pubkey_blob(found, a->blob);
	a->timeout_ms = AGENT_TIMEOUT_MS;
	rc = sio_identity_from_signer(out, found, agent_sign, a, free);
	if (rc)
		free(a);
	return rc;
}
