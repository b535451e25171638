/* Private declarations of the `sio` command (the files of tools/). The command is built
 * on the public API (include/secureio.h) only; nothing here is installed. */
#ifndef SIO_CLI_H
#define SIO_CLI_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "secureio.h"

/* Exit codes, fixed by the interface (see sio --help). */
enum {
	CLI_OK = 0,
	CLI_ERR = 1,       /* any other error: address in use, bad key file, transport, truncated */
	CLI_USAGE = 2,     /* usage error */
	CLI_NOSESSION = 3, /* peer not authenticated / no session established */
};

/* ---- addresses (addrparse.c: pure, no system calls, fuzzed) ---- */
enum cli_addr_kind { CLI_UDP, CLI_TCP, CLI_UNIX, CLI_UNIXGRAM };

#define CLI_HOST_MAX 256
#define CLI_PATH_MAX 108 /* sizeof(sun_path) */

struct cli_addr {
	enum cli_addr_kind kind;
	char host[CLI_HOST_MAX]; /* inet: without brackets; "" = any address (listen only) */
	char port[32];           /* inet: decimal 1..65535, or a service name (/etc/services) */
	char path[CLI_PATH_MAX]; /* unix: path, or "@name" for the abstract namespace */
	int ipv6_literal;        /* host was written in [brackets] */
};

/* Parses ADDRESS (udp:HOST:PORT, tcp:HOST:PORT, unix:PATH, unixgram:PATH, HOST
 * may be [IPv6], PORT a number or a service name that getaddrinfo resolves). LISTENING allows an empty HOST (all addresses). Returns 0,
 * or -1 with a one-line reason in ERR. */
int cli_addr_parse(const char *text, int listening, struct cli_addr *a, char *err, size_t errlen);

/* Writes the canonical text of A (what cli_addr_parse reads back). Returns
 * the length, or -1 if it does not fit. */
int cli_addr_format(const struct cli_addr *a, char *out, size_t outlen);

/* ---- terminal safety (escape.c: pure, no system calls) ---- */
/* Writes the LEN bytes of IN to OUT as text safe for a terminal: C0
 * controls but TAB, DEL, C1 controls (raw 0x80-0x9f bytes and U+0080-U+009F),
 * U+2028/U+2029, bidirectional controls and bytes that are not well-formed
 * UTF-8 become \xNN per byte, a backslash becomes \\. With UTF8 zero (the
 * terminal is not UTF-8) every byte >= 0x80 is escaped. OUT needs room for
 * 4 * LEN + 1 bytes; it is NUL-terminated. Returns the length written. */
size_t cli_escape(const uint8_t *in, size_t len, int utf8, char *out);

/* ---- options (args.c) ---- */
struct cli_conn;

struct cli_opts {
	const char *cmd;      /* "listen" or "connect" */
	const char *id_dir;   /* -i: a directory holding id_ed25519, or a key file */
	const char *passphrase_file; /* --passphrase-file */
	int agent;                   /* --agent 1, --no-agent -1, else 0: when needed */
	int verbose;                 /* -v: 1, -vv: 2 (repeatable) */
	const char *remote;   /* -r */
	const char *psk_file; /* --psk-file */
	const char *address;
	int lines;        /* --lines */
	int have_channel; /* --channel given */
	uint32_t channel;
	double timeout_s; /* --timeout (0 = no limit; listen: 0 unless given) */
	double dead_s;    /* --dead: a silent peer is given up after this (0 = never) */
	double rekey_s;   /* --rekey */
	int stats;        /* --stats */
	int quiet;        /* -q */
	int multi;        /* --multi: listen serves many peers; connect talks to such a listener */
	int send_only;    /* --send-only: never read the peer's direction (stdout unused) */
	int recv_only;    /* --recv-only: never read stdin */
	int keep_open;    /* -k/--keep-open: listen serves the next peer after a session */
	struct cli_conn *kept; /* -k: a datagram socket kept open between sessions */
	int progress;     /* --progress: bytes, rate and elapsed time on stderr */
	int established;  /* out: cli_session established a session */
};

/* Prints "sio: MSG" and the usage line of CMD (NULL: all) to stderr; returns CLI_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Sets O's renewal interval to REKEY_S seconds and the retry of an
 * unanswered key exchange to a quarter of it, at most the library's 1 s:
 * with short intervals (tests, --rekey 1 on a lossy path) a renewal whose
 * message was lost is retried well before the next one is due. */
void cli_set_rekey(sio_options *o, double rekey_s);
/* Reads a pre-shared key file (a regular file of 16 to CAP - 1 bytes) into
 * BUF. Returns 0, or CLI_ERR after printing one line. */
int cli_read_psk(const char *path, uint8_t *buf, size_t cap, size_t *len);
/* Full help on stdout. */
void cli_help(void);
/* Parses listen/connect arguments (argv[0] is the subcommand). Returns 0 or CLI_USAGE. */
int cli_parse_session_args(int argc, char **argv, struct cli_opts *o);
/* Prints "sio: ..." on stderr (one line). */
void cli_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* 1 if the locale of the environment (LC_ALL, LC_CTYPE, LANG) uses UTF-8:
 * then cli_escape() lets well-formed printable UTF-8 through. Computed once;
 * the program's own locale stays "C". */
int cli_utf8_locale(void);
/* The library's diagnostics (sio_callbacks.on_diag) as O asks for them:
 * nothing with -q; without -v warnings only (a refused identity: once per
 * identity and process); -v adds info lines, -vv debug lines. Error lines
 * are left out: sio reports how a session ended itself. Each is one
 * escaped "sio: " line on stderr. */
void cli_diag(const struct cli_opts *o, int level, const char *msg);
/* The most detailed level cli_diag() prints for O (sio_callbacks.diag_level). */
int cli_diag_level(const struct cli_opts *o);
/* Default identity directory: $HOME/.ssh. */
const char *cli_default_id_dir(void);

/* ---- key commands (keys.c) ---- */
int cli_keygen(int argc, char **argv);
int cli_pubkey(int argc, char **argv);
int cli_fingerprint(int argc, char **argv);
/* Prints why sio_identity_from_dir(DIR) failed with ERR (for SIO_EDIRPERM:
 * the owner or the mode, and the fix; else KEYPATH or DIR and the error).
 * Returns CLI_ERR. */
int cli_identity_error(const char *dir, const char *keypath, int err);

/* ---- the local identity (ident.c) ---- */
/* Resolves -i ARG: a directory means ARG/id_ed25519, anything else the file
 * itself; a missing one is an error naming it and how to create it (only
 * `sio keygen` creates). PATH receives the key file. 0 or CLI_ERR. */
int cli_resolve_identity(const char *arg, char *path, size_t cap);
/* Loads the identity of O (-i, --passphrase-file), asking for the
 * passphrase of an encrypted key (three tries on a terminal). Prints one
 * line on failure. 0 or CLI_ERR. */
int cli_load_identity(const struct cli_opts *o, sio_identity **out);
/* Loads the -r file (keys, authorized_keys options) into *OUT; on failure
 * prints "FILE: line N: option 'X': why" (or the error) and returns CLI_ERR. */
int cli_load_remote(const char *path, sio_remote **out);
/* A passphrase: the first line of PASSFILE if given, else from the
 * SIO_ASKPASS program, else typed on /dev/tty without echo. Returns 0,
 * CLI_ERR (message printed), or -1 when there is no way to ask. *INTERACTIVE
 * (may be NULL) is set when a person typed it. */
int cli_get_passphrase(const char *passfile, const char *prompt, char *buf, size_t cap,
                       size_t *len, int *interactive);

/* ---- sockets (net.c) ---- */
struct cli_conn {
	int fd;
	int datagram;   /* 1: datagram socket */
	int learn_peer; /* unconnected listening datagram socket: peer learned by the library */
	char unlink_path[CLI_PATH_MAX]; /* socket file to remove at exit ("" = none) */
};

/* Opens the transport for ADDRESS: listen (waits for one peer on stream
 * sockets) or connect (retries while nobody listens, until the deadline).
 * LISTENING: 0 connect, 1 listen, CLI_LISTEN_SHARED listen on a UDP socket
 * whose reuseport group the library's listener workers join (--multi).
 * DEADLINE_MS is a monotonic time in ms (0 = none); the wait ends early when
 * *STOP becomes nonzero. Returns 0 or an exit code with a message in ERR. */
#define CLI_LISTEN_SHARED 2
int cli_open(const struct cli_addr *a, int listening, int64_t deadline_ms,
             volatile sig_atomic_t *stop, struct cli_conn *c, char *err, size_t errlen);
void cli_conn_close(struct cli_conn *c);
/* Writes all of BUF to FD (retrying EINTR and short writes): 0 or an errno. */
int cli_write_all(int fd, const void *buf, size_t len);
int64_t cli_now_ms(void);

/* ---- the mode announcement (mode.c; docs/SIO.md "Mode announcement") ----
 * Each side sends, on the control channel CLI_CTL_CHANNEL, a HELLO naming
 * its mode: [0x10][version 1][mode][flags][type u32 big-endian]. */
#define CLI_CTL_CHANNEL   SIO_CHANNEL_MAX /* reserved by sio: --channel stops below */
#define CLI_HELLO_LEN     8
#define CLI_HELLO         0x10
#define CLI_HELLO_VERSION 1
/* the other control messages (tools/relay.h) */
enum { C_DONE = 0x11, C_LEND = 0x12, C_LACK = 0x13 };
enum { CLI_MODE_STREAM = 1, CLI_MODE_LINES = 2 };
enum {
	CLI_HF_MULTI = 1,     /* --multi (a hub, or a client of one) */
	CLI_HF_NO_RECV = 2,   /* --send-only: this side receives nothing */
	CLI_HF_NO_SEND = 4,   /* --recv-only: this side sends nothing */
	CLI_HF_HUB = 8,       /* listen --multi (the hub itself) */
	CLI_HF_READY = 0x40,  /* this side also knows the peer has its HELLO */
	CLI_HF_SEEN = 0x80,   /* this side has the peer's HELLO */
};
struct cli_mode {
	uint8_t version, mode, flags;
	uint32_t type; /* a channel, or SIO_TYPE_READWRITE */
};
/* The HELLO of O (a session side, or HUB: listen --multi). */
void cli_mode_of(const struct cli_opts *o, int hub, struct cli_mode *m);
void cli_hello_encode(const struct cli_mode *m, uint8_t f[CLI_HELLO_LEN]);
/* 0, or -1 if F is not a HELLO of a version we read. */
int cli_hello_decode(const uint8_t *f, size_t len, struct cli_mode *m);
/* Words for M ("stream mode on the default channel, --send-only"). */
void cli_mode_text(const struct cli_mode *m, char *out, size_t outlen);
/* 0 if OURS and THEIRS can work together, else -1 (what differs is in the
 * texts of both modes). */
int cli_mode_check(const struct cli_mode *ours, const struct cli_mode *theirs);

/* ---- the relay (relay.c, stream.c) ---- */
int cli_session(struct cli_opts *o);
/* Did SIGINT/SIGTERM arrive during cli_session? */
int cli_interrupted(void);
/* sio listen --multi (multi.c) */
int cli_multi(struct cli_opts *o);

#endif
