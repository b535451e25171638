/* authorized_keys options: from="pattern-list" parsing and matching
 * (sshd's patterns: wildcards, CIDR, negation; IPv4, IPv6, IPv4-mapped),
 * options we cannot enforce refused with the line and option named, and a
 * library session over UDP refusing a pinned key from the wrong address. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "identity.h"
#include "sess_pair.h"

static socklen_t addr(const char *text, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof *ss);
	struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, text, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		return sizeof *a4;
	}
	if (inet_pton(AF_INET6, text, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		return sizeof *a6;
	}
	return 0;
}

static int m(const char *list, const char *a)
{
	struct sockaddr_storage ss;
	socklen_t l = addr(a, &ss);
	return sio_from_list_match(list, (struct sockaddr *)&ss, l);
}

static void patterns(void)
{
	CHECK_EQ(m("127.0.0.1", "127.0.0.1"), 1);
	CHECK_EQ(m("10.9.9.9", "127.0.0.1"), 0);
	CHECK_EQ(m("10.9.9.9,127.0.0.1", "127.0.0.1"), 1);
	CHECK_EQ(m("127.0.0.*", "127.0.0.42"), 1);
	CHECK_EQ(m("127.0.0.?", "127.0.0.42"), 0);
	CHECK_EQ(m("127.0.0.?", "127.0.0.4"), 1);
	CHECK_EQ(m("*", "192.0.2.1"), 1);
	CHECK_EQ(m("*,!192.0.2.1", "192.0.2.1"), 0);   /* negation wins */
	CHECK_EQ(m("!192.0.2.1,*", "192.0.2.1"), 0);   /* in any order */
	CHECK_EQ(m("!192.0.2.1", "192.0.2.2"), 0);     /* no positive match */
	CHECK_EQ(m("10.0.0.0/8", "10.200.3.4"), 1);
	CHECK_EQ(m("10.0.0.0/8", "11.0.0.1"), 0);
	CHECK_EQ(m("127.0.0.0/31", "127.0.0.1"), 1);
	CHECK_EQ(m("127.0.0.0/32", "127.0.0.1"), 0);
	CHECK_EQ(m("0.0.0.0/0", "203.0.113.9"), 1);
	CHECK_EQ(m("*,!10.0.0.0/8", "10.1.1.1"), 0);
	CHECK_EQ(m("::1", "::1"), 1);
	CHECK_EQ(m("::1", "127.0.0.1"), 0);
	CHECK_EQ(m("2001:db8::/32", "2001:db8:1::5"), 1);
	CHECK_EQ(m("2001:db8::/32", "2001:db9::5"), 0);
	CHECK_EQ(m("2001:DB8::*", "2001:db8::5"), 1); /* hex case */
	CHECK_EQ(m("127.0.0.1", "::ffff:127.0.0.1"), 1); /* dual-stack socket */
	CHECK_EQ(m("10.0.0.0/8", "::ffff:10.1.2.3"), 1);
	CHECK_EQ(m("host.example.com", "127.0.0.1"), 0); /* no DNS */
	struct sockaddr un = {.sa_family = AF_UNIX};
	CHECK_EQ(sio_from_list_match("*", &un, sizeof un), 0); /* not IP */
	CHECK_EQ(sio_from_list_valid("10.0.0.1/8"), 0);  /* host bits set */
	CHECK_EQ(sio_from_list_valid("10.0.0.0/33"), 0);
	CHECK_EQ(sio_from_list_valid("::/129"), 0);
	CHECK_EQ(sio_from_list_valid("a,,b"), 0);
	CHECK_EQ(sio_from_list_valid("!"), 0);
	CHECK_EQ(sio_from_list_valid(""), 0);
	CHECK_EQ(sio_from_list_valid("10.0.0.0/8,!10.1.0.0/16,*.example.com"), 1);
}

static const char *K1 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEWcGqP2b1D4qRnA3fSAuPX6xhJP7eEyzq9yXG/wLlaH";

static int count_add(void *ctx, const uint8_t pk[32], const char *from)
{
	char *got = ctx;
	if (from)
		snprintf(got, 256, "%s", from);
	return 0;
}

static int parse(const char *opts, char *from, struct sio_pk_err *e)
{
	char text[512];
	snprintf(text, sizeof text, "# header\n%s%s%s c\n", opts, *opts ? " " : "", K1);
	from[0] = 0;
	return sio_pubkey_parse_all_ex(text, strlen(text), count_add, from, e);
}

static void options(void)
{
	char from[256];
	struct sio_pk_err e;
	CHECK_EQ(parse("", from, &e), 1);
	CHECK_EQ(parse("from=\"10.0.0.0/8,!10.1.0.0/16\"", from, &e), 1);
	CHECK(strcmp(from, "10.0.0.0/8,!10.1.0.0/16") == 0);
	CHECK_EQ(parse("no-pty,restrict,NO-X11-FORWARDING,from=\"::1\",no-user-rc", from, &e), 1);
	CHECK(strcmp(from, "::1") == 0);
	CHECK_EQ(parse("command=\"/bin/true\"", from, &e), SIO_EFORMAT);
	CHECK_EQ(e.line, 2);
	CHECK(strcmp(e.option, "command") == 0);
	CHECK_EQ(parse("from=\"1.2.3.4\",environment=\"A=b\"", from, &e), SIO_EFORMAT);
	CHECK(strcmp(e.option, "environment") == 0);
	CHECK_EQ(parse("permitopen=\"h:1\"", from, &e), SIO_EFORMAT);
	CHECK_EQ(parse("cert-authority", from, &e), SIO_EFORMAT);
	CHECK(strcmp(e.option, "cert-authority") == 0);
	CHECK_EQ(parse("expiry-time=\"20300101\"", from, &e), SIO_EFORMAT);
	CHECK_EQ(parse("from=10.0.0.1", from, &e), SIO_EFORMAT); /* unquoted */
	CHECK_EQ(parse("from=\"10.0.0.1/8\"", from, &e), SIO_EFORMAT);
	CHECK(strcmp(e.option, "from") == 0);
	CHECK_EQ(parse("from=\"a\",from=\"b\"", from, &e), SIO_EFORMAT);
	CHECK_EQ(parse("from=\"10.0.0.1", from, &e), SIO_EFORMAT); /* unterminated */
	CHECK_EQ(parse("no-pty=\"x\"", from, &e), SIO_EFORMAT);
}

static void remote_rules(void)
{
	const char *text = "from=\"10.9.9.9\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEWcGqP2b1D4qRnA3fSAuPX6xhJP7eEyzq9yXG/wLlaH a\n"
	                   "from=\"127.0.0.1\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEWcGqP2b1D4qRnA3fSAuPX6xhJP7eEyzq9yXG/wLlaH a\n";
	char path[] = "/tmp/sio-authkeys-XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	CHECK_EQ(write(fd, text, strlen(text)), (long long)strlen(text));
	close(fd);
	sio_remote *r = NULL, *c = NULL;
	CHECK_OK(sio_remote_load(&r, path));
	uint8_t pk[32];
	CHECK_OK(sio_remote_key(r, 0, pk));
	CHECK_EQ(sio_remote_count(r), 1);
	CHECK_EQ(sio_remote_has_rules(r), 1);
	struct sockaddr_storage ss;
	socklen_t l = addr("127.0.0.1", &ss);
	CHECK_EQ(sio_remote_allows(r, pk, (struct sockaddr *)&ss, l), 1); /* second line */
	l = addr("10.9.9.9", &ss);
	CHECK_EQ(sio_remote_allows(r, pk, (struct sockaddr *)&ss, l), 1);
	l = addr("10.9.9.8", &ss);
	CHECK_EQ(sio_remote_allows(r, pk, (struct sockaddr *)&ss, l), 0);
	CHECK_EQ(sio_remote_allows(r, pk, NULL, 0), 0);
	CHECK_OK(sio_remote_copy(&c, r));
	CHECK_EQ(sio_remote_allows(c, pk, (struct sockaddr *)&ss, l), 0);
	sio_remote_free(c);
	sio_remote_free(r);
	/* the file and line of a refused option */
	const char *bad = "# ok\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEWcGqP2b1D4qRnA3fSAuPX6xhJP7eEyzq9yXG/wLlaH\n"
	                  "command=\"ls\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEWcGqP2b1D4qRnA3fSAuPX6xhJP7eEyzq9yXG/wLlaH\n";
	fd = open(path, O_WRONLY | O_TRUNC);
	CHECK_EQ(write(fd, bad, strlen(bad)), (long long)strlen(bad));
	close(fd);
	char msg[200];
	CHECK_EQ(sio_remote_load_err(&r, path, msg, sizeof msg), SIO_EFORMAT);
	CHECK(strncmp(msg, "line 3: option 'command'", 24) == 0);
	unlink(path);
}

/* A session pinned to a key allowed only from 10.9.9.9 refuses it from
 * 127.0.0.1 (and takes it with from="127.0.0.1"), over UDP and TCP. */
static void sessions(void)
{
	for (int ok = 0; ok < 2; ok++)
		for (int kind = 0; kind < 2; kind++) {
			struct pair p;
			memset(&p, 0, sizeof p);
			CHECK_OK(pair_identities(&p, 1, 2));
			uint8_t pka[32];
			sio_identity_public_key(p.ida, pka);
			sio_remote_free(p.rb);
			CHECK_OK(sio_remote_new(&p.rb));
			CHECK_OK(sio_remote_add_rule(p.rb, pka, ok ? "127.0.0.1" : "10.9.9.9"));
			sio_transport ta, tb;
			CHECK_OK(pair_transports(&p, kind ? PK_TCP : PK_UDP_CONNECTED, &ta, &tb));
			sio_options o;
			memset(&o, 0, sizeof o);
			o.kx_timeout_ns = 2000000000LL;
			CHECK_OK(sio_session_new(&p.a, p.ida, p.ra, &ta, &o, NULL));
			CHECK_OK(sio_session_new(&p.b, p.idb, p.rb, &tb, &o, NULL));
			CHECK_OK(sio_session_start(p.a));
			CHECK_OK(sio_session_start(p.b));
			int r = sio_session_wait_state(p.b, SIO_STATE_ESTABLISHED, 20000);
			if (ok)
				CHECK_OK(r);
			else
				CHECK(r == SIO_EAUTH || r == SIO_ENOKEYX);
			pair_free(&p);
		}
}

int main(void)
{
	CHECK_OK(sio_init());
	patterns();
	options();
	remote_rules();
	sessions();
	return check_done("test_authkeys");
}
