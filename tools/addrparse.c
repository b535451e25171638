/* ADDRESS parsing for the `sio` command: pure string handling, no system
 * calls, so that fuzz/fuzz_addr.c can call it directly.
 *
 *   udp:HOST:PORT  tcp:HOST:PORT  unix:PATH  unixgram:PATH
 *
 * HOST is a name, an IPv4 address, or an IPv6 address in brackets
 * ([::1], [fe80::1%eth0]); it may be empty when listening (all addresses).
 * PORT is decimal 1..65535. PATH is a file name, or @NAME for Linux's
 * abstract socket namespace. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -1;
}

static int is_name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '.' || c == '_';
}

static int is_v6_char(char c)
{
	return (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || (c >= '0' && c <= '9') ||
	       c == ':' || c == '.';
}

/* Zone ids (after '%') are interface names. */
static int is_zone_char(char c)
{
	return is_name_char(c);
}

static int parse_port(const char *p, size_t n, struct cli_addr *a, char *err, size_t errlen)
{
	static const char bad[] =
	    "PORT must be a number from 1 to 65535 or a service name (letters, digits, '-', '_', "
	    "'.'; at most 31)";
	if (n == 0)
		return fail(err, errlen, "missing PORT");
	if ((p[0] >= 'a' && p[0] <= 'z') || (p[0] >= 'A' && p[0] <= 'Z')) {
		/* a service name ("ssh"): getaddrinfo looks it up */
		if (n >= sizeof a->port)
			return fail(err, errlen, bad);
		for (size_t i = 0; i < n; i++) {
			char c = p[i];
			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			      c == '-' || c == '_' || c == '.'))
				return fail(err, errlen, bad);
		}
		memcpy(a->port, p, n);
		a->port[n] = '\0';
		return 0;
	}
	if (n > 5)
		return fail(err, errlen, bad);
	unsigned v = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return fail(err, errlen, bad);
		v = v * 10 + (unsigned)(p[i] - '0');
	}
	if (v < 1 || v > 65535)
		return fail(err, errlen, bad);
	snprintf(a->port, sizeof a->port, "%u", v);
	return 0;
}

static int parse_inet(const char *s, int listening, struct cli_addr *a, char *err, size_t errlen)
{
	const char *host, *colon;
	size_t hlen;
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close)
			return fail(err, errlen, "missing ']' after the IPv6 address");
		host = s + 1;
		hlen = (size_t)(close - host);
		if (hlen == 0)
			return fail(err, errlen, "empty IPv6 address in []");
		const char *pct = memchr(host, '%', hlen);
		size_t alen = pct ? (size_t)(pct - host) : hlen;
		if (alen == 0 || (pct && pct + 1 == close))
			return fail(err, errlen, "bad IPv6 address in []");
		for (size_t i = 0; i < alen; i++)
			if (!is_v6_char(host[i]))
				return fail(err, errlen, "bad character in the IPv6 address");
		if (!memchr(host, ':', alen))
			return fail(err, errlen, "brackets are for IPv6 addresses only");
		for (const char *z = pct ? pct + 1 : close; z < close; z++)
			if (!is_zone_char(*z))
				return fail(err, errlen, "bad IPv6 zone id");
		if (close[1] != ':')
			return fail(err, errlen, "expected ':PORT' after ']'");
		colon = close + 1;
		a->ipv6_literal = 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return fail(err, errlen, "expected HOST:PORT");
		host = s;
		hlen = (size_t)(colon - s);
		if (memchr(host, ':', hlen))
			return fail(err, errlen,
			            "an IPv6 HOST must be in brackets, e.g. [::1]:PORT");
		if (memchr(host, ']', hlen))
			return fail(err, errlen, "unbalanced ']'");
		for (size_t i = 0; i < hlen; i++)
			if (!is_name_char(host[i]))
				return fail(err, errlen, "bad character in HOST");
		if (hlen == 0 && !listening)
			return fail(err, errlen, "missing HOST");
	}
	if (hlen >= sizeof a->host)
		return fail(err, errlen, "HOST too long");
	memcpy(a->host, host, hlen);
	a->host[hlen] = '\0';
	return parse_port(colon + 1, strlen(colon + 1), a, err, errlen);
}

int cli_addr_parse(const char *text, int listening, struct cli_addr *a, char *err, size_t errlen)
{
	static const struct {
		const char *prefix;
		enum cli_addr_kind kind;
	} kinds[] = {
	    {"udp:", CLI_UDP},
	    {"tcp:", CLI_TCP},
	    {"unix:", CLI_UNIX},
	    {"unixgram:", CLI_UNIXGRAM},
	};
	memset(a, 0, sizeof *a);
	if (!text)
		return fail(err, errlen, "missing ADDRESS");
	for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
		size_t n = strlen(kinds[k].prefix);
		if (strncmp(text, kinds[k].prefix, n) != 0)
			continue;
		const char *rest = text + n;
		a->kind = kinds[k].kind;
		if (a->kind == CLI_UDP || a->kind == CLI_TCP)
			return parse_inet(rest, listening, a, err, errlen);
		size_t plen = strlen(rest);
		if (plen == 0 || (rest[0] == '@' && plen == 1))
			return fail(err, errlen, "missing PATH");
		if (plen >= sizeof a->path)
			return fail(err, errlen, "PATH longer than %zu bytes", sizeof a->path - 1);
		memcpy(a->path, rest, plen + 1);
		return 0;
	}
	return fail(
	    err, errlen,
	    "ADDRESS must start with udp:, tcp:, unix: or unixgram: (e.g. udp:127.0.0.1:5000)");
}

int cli_addr_format(const struct cli_addr *a, char *out, size_t outlen)
{
	int n;
	switch (a->kind) {
	case CLI_UDP:
	case CLI_TCP:
		n = snprintf(out, outlen, a->ipv6_literal ? "%s:[%s]:%s" : "%s:%s:%s",
		             a->kind == CLI_UDP ? "udp" : "tcp", a->host, a->port);
		break;
	case CLI_UNIX:
	case CLI_UNIXGRAM:
		n = snprintf(out, outlen, "%s:%s", a->kind == CLI_UNIX ? "unix" : "unixgram",
		             a->path);
		break;
	default:
		return -1;
	}
	return (n < 0 || (size_t)n >= outlen) ? -1 : n;
}
