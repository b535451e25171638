/* Command-line options and usage text of the `sio` command. */
#include <errno.h>
#include <langinfo.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static const char *const usage_lines[][2] = {
    {"keygen", "sio keygen [-i DIR | -f FILE] [--passphrase-file FILE] [-C COMMENT]"},
    {"pubkey", "sio pubkey [-i DIR | -f FILE]"},
    {"fingerprint", "sio fingerprint FILE"},
    {"listen", "sio listen  [OPTIONS] ADDRESS"},
    {"connect", "sio connect [OPTIONS] ADDRESS"},
};

/* clang-format off */
static const char help_text[] =
"sio: encrypted, mutually authenticated netcat and Ed25519 key tool (secureio " SIO_VERSION_STRING ")\n"
"\n"
"usage:\n"
"  sio keygen [-i DIR | -f FILE]    create DIR/id_ed25519{,.pub} (or FILE{,.pub}) if missing; print\n"
"                                   the public key line. Asks for a passphrase on a terminal (empty:\n"
"                                   none); --passphrase-file FILE or SIO_ASKPASS give it otherwise\n"
"  sio pubkey [-i DIR | -f FILE]    print the public key line of an identity or key file\n"
"  sio fingerprint FILE             print \"SHA256:...\" as ssh-keygen -l does\n"
"  sio listen  [OPTIONS] ADDRESS    wait for one peer, then relay stdin -> session -> stdout\n"
"  sio connect [OPTIONS] ADDRESS    connect to a listening peer, same relay\n"
"\n"
"ADDRESS:  udp:HOST:PORT | tcp:HOST:PORT | unix:PATH | unixgram:PATH   (HOST may be [IPv6];\n"
"          PORT a number or a service name such as ssh, from /etc/services)\n"
"          listen may leave HOST empty (udp::5000) for all addresses; unix:@NAME is abstract\n"
"OPTIONS:\n"
"  -i DIR|FILE      local identity: a directory holding id_ed25519 (default ~/.ssh) or a key\n"
"                   file, as ssh -i takes; never created here (sio keygen creates it)\n"
"  --passphrase-file FILE  passphrase of an encrypted identity (the file's first line);\n"
"                   without it: the SIO_ASKPASS program if set, else asked on the terminal\n"
"  --agent          sign with the ssh-agent on SSH_AUTH_SOCK (it must hold the identity's key);\n"
"                   by default the agent is used when the private key file is encrypted or\n"
"                   absent (only FILE.pub) and the agent holds the key\n"
"  --no-agent       never use the agent\n"
"  -v               verbose, repeatable: where the identity's signatures come from, the\n"
"                   handshake, key renewals, peer address changes, refused peers and drop\n"
"                   summaries (at most one line per reason and second); -vv adds each\n"
"                   key-exchange message. Without -v only warnings show: an unconnected\n"
"                   udp:/unixgram: listener names each refused identity once\n"
"  -r FILE          pin the remote public key (any format the library reads);\n"
"                   without it any identity is accepted and its public key line is printed to stderr\n"
"  --psk-file FILE  pre-shared key (the file's bytes, 16 to 1024 of them)\n"
"  --lines          message mode: each stdin line is one message (newline not included);\n"
"                   each received message is written as one line.\n"
"                   Over udp: and unixgram: the session is a datagram service: lines lost\n"
"                   on the network are lost (never altered or duplicated)\n"
"  --channel N      send and receive on user channel N (0..2147483646) instead of the\n"
"                   default read/write type (2147483647 is sio's control channel)\n"
"  --send-only      only send stdin; write nothing to stdout (the peer sends nothing)\n"
"  --recv-only      only write what the peer sends; stdin is not read\n"
"  --timeout SEC    give up if no session is established within SEC seconds (connect:\n"
"                   default 30; listen: default 0 = wait for a peer forever)\n"
"  --dead SEC       give a silent peer up after SEC seconds: \"the peer stopped answering\"\n"
"                   (default 10; keepalives flow while idle; 0 = never)\n"
"  --rekey SEC      key renewal interval (default 60, at least 0.1); an\n"
"                   unanswered renewal is retried every SEC/4, at most 1 s\n"
"  --stats          on exit print to stderr: bytes and messages each way, packets dropped by\n"
"                   reason, key renewals, negotiated packet size, elapsed time, throughput\n"
"  --progress       every second, bytes each way, rate and elapsed time on stderr (one\n"
"                   line rewritten in place on a terminal)\n"
"  --multi          listen: serve many peers on one udp:/unixgram: socket (server mode):\n"
"                   each message received is printed as \"FINGERPRINT MESSAGE\" (control\n"
"                   bytes escaped as \\xNN, a backslash as \\\\), each stdin\n"
"                   line goes to every peer; -r FILE lists the allowed keys (SIGHUP reloads).\n"
"                   connect: talk to such a listener (use with --lines)\n"
"  -k, --keep-open  listen: after a session ends, serve the next peer (one at a time)\n"
"                   until SIGINT/SIGTERM; stdin goes to the first peer, stdout collects all\n"
"  -q               print nothing but errors\n"
"\n"
"Stream mode (the default) carries stdin bytes in order and writes them to stdout unchanged;\n"
"over udp: and unixgram: reordered data is put back in order and lost data is sent again;\n"
"data that cannot get through ends the transfer with \"data lost in transit\" (what was\n"
"written before is an exact prefix). Both peers announce their mode (stream or --lines,\n"
"channel, --multi, --send-only/--recv-only) at the start: a mismatch ends both with exit 2.\n"
"Each direction ends on its own (half-close): when stdin ends, the end of our stream is\n"
"sent and we keep receiving until the peer's stream ends too; then the session closes\n"
"gracefully. Exit 0 means: all we sent was written out by the peer, and all it sent was\n"
"written to our stdout. SIGINT/SIGTERM cut the stream (both sides then exit 1).\n"
"\n"
"Exit codes: 0 success; 1 error (address in use, bad key file, transport failure, data lost,\n"
"session truncated); 2 usage error; 3 peer not authenticated or no session established\n"
"(wrong identity, wrong PSK, timeout).\n";
/* clang-format on */

void cli_help(void)
{
	fputs(help_text, stdout);
}

void cli_err(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	/* one line of text, whatever the message holds (file names from the
	 * command line, say): control bytes are escaped, not sent to a terminal */
	char out[4 * sizeof buf + 1];
	cli_escape((const uint8_t *)buf, strlen(buf), cli_utf8_locale(), out);
	fprintf(stderr, "sio: %s\n", out);
}

/* Fingerprints of the "refused" lines printed so far (any session of this
 * process: -k serves several), so that each identity is named once. */
#define REFUSED_MEMORY 64
static char refused_seen[REFUSED_MEMORY][SIO_FINGERPRINT_MAX];
static unsigned refused_n;
static pthread_mutex_t refused_mu = PTHREAD_MUTEX_INITIALIZER;

/* 1 the first time MSG ("refused SHA256:... (why)") is seen. */
static int refused_first(const char *msg)
{
	char fp[SIO_FINGERPRINT_MAX];
	size_t n = strcspn(msg + 8, " ");
	if (n >= sizeof fp)
		n = sizeof fp - 1;
	memcpy(fp, msg + 8, n);
	fp[n] = 0;
	int first = 1;
	pthread_mutex_lock(&refused_mu);
	unsigned have = refused_n < REFUSED_MEMORY ? refused_n : REFUSED_MEMORY;
	for (unsigned i = 0; i < have && first; i++)
		if (strcmp(refused_seen[i], fp) == 0)
			first = 0;
	if (first)
		memcpy(refused_seen[refused_n++ % REFUSED_MEMORY], fp, sizeof fp);
	pthread_mutex_unlock(&refused_mu);
	return first;
}

void cli_diag(const struct cli_opts *o, int level, const char *msg)
{
	/* errors: sio says itself how a session ended, in its own words */
	if (level <= SIO_DIAG_ERROR || o->quiet)
		return;
	if (level > cli_diag_level(o))
		return;
	if (strncmp(msg, "refused ", 8) == 0 && !refused_first(msg))
		return; /* once per identity; with -v the drop summaries count the rest */
	cli_err("%s", msg);
}

int cli_diag_level(const struct cli_opts *o)
{
	return o->verbose >= 2 ? SIO_DIAG_DEBUG : o->verbose ? SIO_DIAG_INFO : SIO_DIAG_WARN;
}

int cli_utf8_locale(void)
{
	static int known, utf8;
	if (!known) {
		/* the environment's character set, without keeping its locale
		 * (the program runs in "C": messages and number formats fixed) */
		if (setlocale(LC_CTYPE, "")) {
			const char *cs = nl_langinfo(CODESET);
			utf8 = cs && (strcmp(cs, "UTF-8") == 0 || strcmp(cs, "utf8") == 0);
			setlocale(LC_CTYPE, "C");
		}
		known = 1;
	}
	return utf8;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	fprintf(stderr, "sio: %s\n", buf);
	int shown = 0;
	for (size_t i = 0; i < sizeof usage_lines / sizeof usage_lines[0]; i++) {
		if (cmd && strcmp(cmd, usage_lines[i][0]) != 0)
			continue;
		fprintf(stderr, "%s %s\n", shown ? "      " : "usage:", usage_lines[i][1]);
		shown++;
	}
	if (!shown)
		for (size_t i = 0; i < sizeof usage_lines / sizeof usage_lines[0]; i++)
			fprintf(stderr, "%s %s\n", i ? "      " : "usage:", usage_lines[i][1]);
	fputs("(sio --help describes ADDRESS and OPTIONS)\n", stderr);
	return CLI_USAGE;
}

const char *cli_default_id_dir(void)
{
	static char buf[4096];
	const char *home = getenv("HOME");
	if (!home || !*home) {
		struct passwd *pw = getpwuid(getuid());
		home = pw ? pw->pw_dir : "/";
	}
	snprintf(buf, sizeof buf, "%s/.ssh", home);
	return buf;
}

/* A duration option: a decimal number of seconds in [MIN, 1e7] (MIN 0
 * allows 0 = "never"; MIN_EXCL: strictly above MIN). */
static int parse_seconds(const char *cmd, const char *opt, const char *v, double min,
                         int min_excl, double *out)
{
	char *end;
	errno = 0;
	double d = strtod(v, &end);
	if (errno || end == v || *end || !isfinite(d) || d < min || (min_excl && d == min) ||
	    d > 1e7)
		return cli_usage_error(cmd, "%s: '%s' is not a number of seconds from %g%s to 10000000",
		                       opt, v, min, min_excl ? " (excluded)" : "");
	*out = d;
	return 0;
}

void cli_set_rekey(sio_options *o, double rekey_s)
{
	o->kx_interval_ns = (int64_t)(rekey_s * 1e9);
	int64_t retry = o->kx_interval_ns / 4;
	o->kx_retry_ns = retry < 1000000000 ? retry : 1000000000;
}

int cli_parse_session_args(int argc, char **argv, struct cli_opts *o)
{
	const char *cmd = argv[0];
	memset(o, 0, sizeof *o);
	o->cmd = cmd;
	o->timeout_s = 30;
	o->rekey_s = 60;
	o->dead_s = 10;
	int only_args = 0, timeout_given = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *val = NULL;
		if (only_args || a[0] != '-' || a[1] == '\0') {
			if (o->address)
				return cli_usage_error(cmd, "unexpected argument '%s'", a);
			o->address = a;
			continue;
		}
		if (strcmp(a, "--") == 0) {
			only_args = 1;
			continue;
		}
		/* options taking a value: "-i DIR", "--opt VALUE", "--opt=VALUE" */
		static const char *const with_value[] = {"-i",        "-r",        "--psk-file",
		                                         "--channel", "--timeout", "--rekey",
		                                         "--passphrase-file", "--dead"};
		const char *name = a;
		char namebuf[32];
		const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
		if (eq) {
			size_t n = (size_t)(eq - a);
			if (n >= sizeof namebuf)
				return cli_usage_error(cmd, "unknown option '%s'", a);
			memcpy(namebuf, a, n);
			namebuf[n] = '\0';
			name = namebuf;
			val = eq + 1;
		}
		int takes = 0;
		for (size_t k = 0; k < sizeof with_value / sizeof with_value[0]; k++)
			if (strcmp(name, with_value[k]) == 0)
				takes = 1;
		if (takes && !val) {
			if (i + 1 >= argc)
				return cli_usage_error(cmd, "option %s needs a value", name);
			val = argv[++i];
		} else if (!takes && val) {
			return cli_usage_error(cmd, "option %s takes no value", name);
		}
		if (strcmp(name, "-i") == 0) {
			o->id_dir = val;
		} else if (strcmp(name, "-r") == 0) {
			o->remote = val;
		} else if (strcmp(name, "--psk-file") == 0) {
			o->psk_file = val;
		} else if (strcmp(name, "--passphrase-file") == 0) {
			o->passphrase_file = val;
		} else if (strcmp(name, "--channel") == 0) {
			char *end;
			errno = 0;
			unsigned long long c = strtoull(val, &end, 10);
			if (errno || end == val || *end || val[0] == '-' || val[0] == '+' ||
			    c >= CLI_CTL_CHANNEL)
				return cli_usage_error(
				    cmd, "--channel: '%s' is not a channel number (0..%u; %u is sio's control channel)",
				    val, CLI_CTL_CHANNEL - 1, CLI_CTL_CHANNEL);
			o->channel = (uint32_t)c;
			o->have_channel = 1;
		} else if (strcmp(name, "--timeout") == 0) {
				if (parse_seconds(cmd, name, val, 0, 0, &o->timeout_s))
				return CLI_USAGE;
			timeout_given = 1;
		} else if (strcmp(name, "--rekey") == 0) {
			if (parse_seconds(cmd, name, val, 0.1, 0, &o->rekey_s))
				return CLI_USAGE;
		} else if (strcmp(name, "--dead") == 0) {
			if (parse_seconds(cmd, name, val, 0, 0, &o->dead_s))
				return CLI_USAGE;
		} else if (strcmp(name, "--agent") == 0) {
			o->agent = 1;
		} else if (strcmp(name, "--no-agent") == 0) {
			o->agent = -1;
		} else if (name[0] == '-' && name[1] == 'v' && !name[strspn(name + 1, "v") + 1]) {
			o->verbose += (int)strlen(name) - 1; /* -v, -vv, -v -v */
		} else if (strcmp(name, "--lines") == 0) {
			o->lines = 1;
		} else if (strcmp(name, "--multi") == 0) {
			o->multi = 1;
		} else if (strcmp(name, "-k") == 0 || strcmp(name, "--keep-open") == 0) {
			o->keep_open = 1;
		} else if (strcmp(name, "--send-only") == 0) {
			o->send_only = 1;
		} else if (strcmp(name, "--recv-only") == 0) {
			o->recv_only = 1;
		} else if (strcmp(name, "--progress") == 0) {
			o->progress = 1;
		} else if (strcmp(name, "--stats") == 0) {
			o->stats = 1;
		} else if (strcmp(name, "-q") == 0) {
			o->quiet = 1;
		} else {
			return cli_usage_error(cmd, "unknown option '%s'", a);
		}
	}
	if (!o->address)
		return cli_usage_error(cmd, "missing ADDRESS");
	if (o->send_only && o->recv_only)
		return cli_usage_error(cmd, "--send-only and --recv-only exclude each other");
	if ((o->send_only || o->recv_only) && o->multi)
		return cli_usage_error(cmd, "--send-only and --recv-only do not apply to --multi");
	if (o->keep_open && (strcmp(cmd, "listen") != 0 || o->multi))
		return cli_usage_error(cmd, "-k/--keep-open is for listen without --multi");
	if (!timeout_given && strcmp(cmd, "listen") == 0)
		o->timeout_s = 0; /* listen waits for a peer forever unless told, like nc -l */
	if (!o->id_dir)
		o->id_dir = cli_default_id_dir();
	return 0;
}
