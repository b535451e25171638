/* The `sio` command: encrypted netcat and Ed25519 key tool (see sio --help).
 * Built on the public API of libsecureio only. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

/* A closed standard descriptor would be taken by the next socket or pipe
 * we open, and "stdin" would then read our own socket (or the wake pipe:
 * never at end) or "stdout" write into it. Each closed one gets /dev/null:
 * closed stdin is an empty input, closed stdout discards what arrives. */
static void guard_std_fds(void)
{
	for (int fd = 0; fd < 3; fd++) {
		if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
			continue;
		int n = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
		if (n >= 0 && n != fd) { /* lowest free number: FD itself */
			dup2(n, fd);
			close(n);
		}
	}
}

int main(int argc, char **argv)
{
	guard_std_fds();
	cli_utf8_locale(); /* once, before any thread prints */
	if (argc < 2)
		return cli_usage_error(NULL, "missing command");
	const char *cmd = argv[1];
	if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
		cli_help();
		return CLI_OK;
	}
	if (strcmp(cmd, "--version") == 0) {
		printf("sio (secureio) %s\n", sio_version());
		return CLI_OK;
	}
	for (int i = 2; i < argc; i++)
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
			cli_help();
			return CLI_OK;
		}
	if (strcmp(cmd, "listen") == 0 || strcmp(cmd, "connect") == 0) {
		struct cli_opts o;
		int rc = cli_parse_session_args(argc - 1, argv + 1, &o);
		if (!rc && o.multi && strcmp(cmd, "listen") == 0)
			return cli_multi(&o);
		if (rc || !o.keep_open)
			return rc ? rc : cli_session(&o);
		/* -k: one peer after the other, until a signal or a failure to
		 * listen at all (address in use, bad key file, ...) */
		struct cli_conn kept = {.fd = -1};
		o.kept = &kept;
		for (;;) {
			o.established = 0;
			rc = cli_session(&o);
			if (cli_interrupted()) {
				cli_conn_close(&kept);
				return o.established ? rc : CLI_OK; /* stopped while waiting */
			}
			if (!o.established && rc != CLI_NOSESSION) {
				cli_conn_close(&kept);
				return rc;
			}
		}
	}
	int rc = sio_init();
	if (rc < 0) {
		cli_err("cannot initialise the library: %s", sio_strerror(rc));
		return CLI_ERR;
	}
	if (strcmp(cmd, "keygen") == 0)
		return cli_keygen(argc - 1, argv + 1);
	if (strcmp(cmd, "pubkey") == 0)
		return cli_pubkey(argc - 1, argv + 1);
	if (strcmp(cmd, "fingerprint") == 0)
		return cli_fingerprint(argc - 1, argv + 1);
	return cli_usage_error(NULL, "unknown command '%s'", cmd);
}
