/* The ADDRESS parser of the `sio` command (tools/addrparse.c): every form of
 * the interface, and the malformed ones refused with a reason. */
#include <string.h>

#include "check.h"
#include "../tools/addrparse.c"

static void ok(const char *text, int listening, enum cli_addr_kind kind, const char *host,
               const char *port, const char *path)
{
	struct cli_addr a;
	char err[256] = "";
	int rc = cli_addr_parse(text, listening, &a, err, sizeof err);
	if (rc != 0)
		check_fail(__FILE__, __LINE__, "'%s' refused: %s", text, err);
	CHECK_EQ(rc, 0);
	CHECK_EQ(a.kind, kind);
	CHECK(strcmp(a.host, host) == 0);
	CHECK(strcmp(a.port, port) == 0);
	CHECK(strcmp(a.path, path) == 0);
	char again[512];
	struct cli_addr b;
	CHECK(cli_addr_format(&a, again, sizeof again) > 0);
	CHECK_EQ(cli_addr_parse(again, listening, &b, err, sizeof err), 0);
	CHECK(memcmp(&a, &b, sizeof a) == 0);
}

static void refused(const char *text, int listening, const char *why)
{
	struct cli_addr a;
	char err[256] = "";
	CHECK_EQ(cli_addr_parse(text, listening, &a, err, sizeof err), -1);
	if (!strstr(err, why))
		check_fail(__FILE__, __LINE__, "'%s': reason '%s' lacks '%s'", text, err, why);
}

int main(void)
{
	ok("udp:127.0.0.1:5000", 0, CLI_UDP, "127.0.0.1", "5000", "");
	ok("tcp:localhost:1", 0, CLI_TCP, "localhost", "1", "");
	/* service names, as getaddrinfo resolves them */
	ok("tcp:host.example:ssh", 0, CLI_TCP, "host.example", "ssh", "");
	ok("udp:[::1]:domain", 0, CLI_UDP, "::1", "domain", "");
	ok("tcp::x-my_svc.2", 1, CLI_TCP, "", "x-my_svc.2", "");
	ok("tcp:my-host.example.org:65535", 0, CLI_TCP, "my-host.example.org", "65535", "");
	ok("udp:[::1]:5000", 0, CLI_UDP, "::1", "5000", "");
	ok("tcp:[fe80::1%eth0]:22", 0, CLI_TCP, "fe80::1%eth0", "22", "");
	ok("udp:[::ffff:127.0.0.1]:9", 0, CLI_UDP, "::ffff:127.0.0.1", "9", "");
	ok("udp::5000", 1, CLI_UDP, "", "5000", "");
	ok("udp:0.0.0.0:05000", 1, CLI_UDP, "0.0.0.0", "5000", "");
	ok("unix:/tmp/sio.sock", 0, CLI_UNIX, "", "", "/tmp/sio.sock");
	ok("unix:relative path", 0, CLI_UNIX, "", "", "relative path");
	ok("unixgram:@abstract", 1, CLI_UNIXGRAM, "", "", "@abstract");

	refused("udp::5000", 0, "missing HOST");
	refused("udp:127.0.0.1", 0, "HOST:PORT");
	refused("udp:127.0.0.1:", 0, "missing PORT");
	refused("udp:127.0.0.1:0", 0, "PORT");
	refused("udp:127.0.0.1:65536", 0, "PORT");
	refused("udp:127.0.0.1:123456", 0, "PORT");
	refused("udp:127.0.0.1:+80", 0, "PORT");
	refused("udp:127.0.0.1:1http", 0, "PORT");
	refused("udp:127.0.0.1:-http", 0, "PORT");
	refused("tcp:127.0.0.1:ht/tp", 0, "service name");
	refused("tcp:127.0.0.1:abcdefghijklmnopqrstuvwxyz0123456", 0, "service name");
	refused("udp:::1:5000", 0, "brackets");
	refused("udp:[::1]5000", 0, "':PORT'");
	refused("udp:[::1:5000", 0, "']'");
	refused("udp:[]:5000", 0, "empty");
	refused("udp:[1.2.3.4]:5000", 0, "IPv6");
	refused("udp:[::1%]:5000", 0, "bad IPv6");
	refused("udp:[::g]:5000", 0, "bad character");
	refused("udp:a b:5000", 0, "bad character");
	refused("udp:a]:5000", 0, "']'");
	refused("tcp:", 0, "HOST:PORT");
	refused("unix:", 0, "missing PATH");
	refused("unixgram:@", 0, "missing PATH");
	char longpath[200];
	memset(longpath, 'x', sizeof longpath);
	memcpy(longpath, "unix:", 5);
	longpath[sizeof longpath - 1] = '\0';
	refused(longpath, 0, "longer");
	refused("sctp:1.2.3.4:5", 0, "must start with");
	refused("127.0.0.1:5000", 0, "must start with");
	refused("UDP:127.0.0.1:5000", 0, "must start with");
	refused("", 1, "must start with");
	return check_done("test_sio_addr");
}
