/* libFuzzer target: the ADDRESS parser of the `sio` command
 * (tools/addrparse.c). Properties checked on every input:
 *  - no crash, no read past the string (ASan);
 *  - on success the fields are well formed (port 1..65535 in decimal, or a
 *    service name: a letter, then letters, digits, '-', '_', '.'; host
 *    without brackets or spaces, a path that fits sun_path);
 *  - formatting the result and parsing it again gives the same address. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../tools/addrparse.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char text[1024];
	if (size == 0 || size >= sizeof text)
		return 0;
	int listening = data[0] & 1;
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';
	struct cli_addr a, b;
	char err[256];
	if (cli_addr_parse(text, listening, &a, err, sizeof err) != 0) {
		if (strlen(err) == 0 || strchr(err, '\n'))
			abort(); /* a failure always says why, in one line */
		return 0;
	}
	if (a.kind == CLI_UDP || a.kind == CLI_TCP) {
		long port = strtol(a.port, NULL, 10);
		int name = (a.port[0] >= 'a' && a.port[0] <= 'z') || (a.port[0] >= 'A' && a.port[0] <= 'Z');
		if (name && strspn(a.port, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
					   "0123456789-_.") != strlen(a.port))
			abort();
		if ((!name && (port < 1 || port > 65535)) || strchr(a.host, '[') || strchr(a.host, ']') ||
		    strchr(a.host, ' ') || (!listening && a.host[0] == '\0'))
			abort();
	} else if (a.path[0] == '\0' || strlen(a.path) >= sizeof a.path) {
		abort();
	}
	char again[CLI_HOST_MAX + CLI_PATH_MAX + 32];
	if (cli_addr_format(&a, again, sizeof again) < 0)
		abort();
	if (cli_addr_parse(again, listening, &b, err, sizeof err) != 0 ||
	    memcmp(&a, &b, sizeof a) != 0)
		abort();
	return 0;
}
