/* authorized_keys from="pattern-list": sshd's address patterns, matched
 * against the peer's IP address (no DNS: a host-name pattern never matches
 * an address, as with sshd's UseDNS no). A list is comma-separated; each
 * pattern may start with '!' (negation); a pattern is an address with the
 * wildcards '*' and '?', or an address/prefix-length CIDR block. The
 * address is allowed when some positive pattern matches and no negated
 * one does. Pure functions (fuzzed through fuzz_pubkey). */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "identity.h"

/* Wildcard match, case-insensitive (IPv6 hex digits). */
static int wild(const char *p, size_t pl, const char *s)
{
	size_t i = 0;
	while (i < pl) {
		if (p[i] == '*') {
			while (i < pl && p[i] == '*')
				i++;
			if (i == pl)
				return 1;
			for (; *s; s++)
				if (wild(p + i, pl - i, s))
					return 1;
			return 0;
		}
		if (!*s)
			return 0;
		if (p[i] != '?' && tolower((unsigned char)p[i]) != tolower((unsigned char)*s))
			return 0;
		i++;
		s++;
	}
	return *s == 0;
}

/* Parses "ADDR/BITS" (PL bytes) into FAMILY, NET (16 bytes) and BITS.
 * 0, or -1 if it is not a valid CIDR block (host bits set are refused, as
 * sshd refuses them). */
static int parse_cidr(const char *p, size_t pl, int *family, uint8_t net[16], unsigned *bits)
{
	char a[64];
	const char *slash = memchr(p, '/', pl);
	if (!slash || (size_t)(slash - p) >= sizeof a)
		return -1;
	size_t al = (size_t)(slash - p), bl = pl - al - 1;
	memcpy(a, p, al);
	a[al] = 0;
	if (bl == 0 || bl > 3)
		return -1;
	unsigned b = 0;
	for (size_t i = 0; i < bl; i++) {
		if (!isdigit((unsigned char)slash[1 + i]))
			return -1;
		b = b * 10 + (unsigned)(slash[1 + i] - '0');
	}
	memset(net, 0, 16);
	if (inet_pton(AF_INET, a, net) == 1) {
		*family = AF_INET;
		if (b > 32)
			return -1;
	} else if (inet_pton(AF_INET6, a, net) == 1) {
		*family = AF_INET6;
		if (b > 128)
			return -1;
	} else {
		return -1;
	}
	size_t len = *family == AF_INET ? 4 : 16;
	for (size_t i = 0; i < len; i++) {
		unsigned keep = b >= 8 * (i + 1) ? 8 : (b > 8 * i ? b - 8 * (unsigned)i : 0);
		uint8_t mask = (uint8_t)(keep ? 0xff << (8 - keep) : 0);
		if (net[i] & (uint8_t)~mask)
			return -1;
	}
	*bits = b;
	return 0;
}

static int in_cidr(int family, const uint8_t net[16], unsigned bits, int afamily,
                   const uint8_t *addr)
{
	if (family != afamily)
		return 0;
	for (unsigned i = 0; i < bits / 8; i++)
		if (addr[i] != net[i])
			return 0;
	if (bits % 8) {
		uint8_t mask = (uint8_t)(0xff << (8 - bits % 8));
		if ((addr[bits / 8] & mask) != net[bits / 8])
			return 0;
	}
	return 1;
}

int sio_from_list_valid(const char *list)
{
	if (!list || !*list)
		return 0;
	const char *p = list;
	for (;;) {
		const char *e = strchr(p, ',');
		size_t l = e ? (size_t)(e - p) : strlen(p);
		if (l && *p == '!')
			p++, l--;
		if (l == 0)
			return 0; /* an empty pattern */
		int fam;
		uint8_t net[16];
		unsigned bits;
		if (memchr(p, '/', l) && parse_cidr(p, l, &fam, net, &bits) != 0)
			return 0;
		if (!e)
			return 1;
		p = e + 1;
	}
}

int sio_from_list_match(const char *list, const struct sockaddr *sa, socklen_t salen)
{
	uint8_t a[16];
	int fam;
	char text[INET6_ADDRSTRLEN];
	if (!list || !sa)
		return 0;
	if (sa->sa_family == AF_INET && salen >= sizeof(struct sockaddr_in)) {
		fam = AF_INET;
		memcpy(a, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6 && salen >= sizeof(struct sockaddr_in6)) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) { /* a dual-stack socket */
			fam = AF_INET;
			memcpy(a, s6->sin6_addr.s6_addr + 12, 4);
		} else {
			fam = AF_INET6;
			memcpy(a, s6->sin6_addr.s6_addr, 16);
		}
	} else {
		return 0; /* not an IP transport: a from= key never matches */
	}
	if (!inet_ntop(fam, a, text, sizeof text))
		return 0;
	int positive = 0;
	const char *p = list;
	for (;;) {
		const char *e = strchr(p, ',');
		size_t l = e ? (size_t)(e - p) : strlen(p);
		int neg = l && *p == '!';
		const char *q = neg ? p + 1 : p;
		size_t ql = neg ? l - 1 : l;
		int m = 0, nfam;
		uint8_t net[16];
		unsigned bits;
		if (memchr(q, '/', ql))
			m = parse_cidr(q, ql, &nfam, net, &bits) == 0 && in_cidr(nfam, net, bits, fam, a);
		else
			m = ql > 0 && wild(q, ql, text);
		if (m && neg)
			return 0; /* a negated match denies, whatever else matches */
		if (m)
			positive = 1;
		if (!e)
			break;
		p = e + 1;
	}
	return positive;
}
