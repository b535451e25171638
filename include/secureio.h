/*
 * secureio: encrypted, mutually authenticated, multiplexed message sessions
 * over any byte transport (UDP, TCP, UNIX sockets, pipes, custom callbacks).
 *
 * Conventions used throughout this header:
 *  - Functions returning int or ssize_t return 0 (or a non-negative count
 *    or flag) on success and a negative SIO_E... code on failure;
 *    sio_strerror() names the code. The exceptions say so in their comment:
 *    the void ones cannot fail (the *_free and *_close calls, getters that
 *    fill a struct: sio_identity_public_key, sio_session_stats,
 *    sio_messenger_counts, sio_listener_stats_get, sio_transport_fd,
 *    sio_options_default, sio_send_info_release, sio_messenger_pause and
 *    _resume); sio_remote_count returns a size_t; sio_session_state returns
 *    a state; sio_write_message_async returns a completion object, or NULL
 *    with the code in *ERR; sio_strerror, sio_state_name and sio_version
 *    return static strings.
 *  - All types are opaque except plain option/statistics structs.
 *  - "Thread:" in each comment says which threads may call the function.
 *    "any" means any thread, concurrently with other calls on the same object.
 *  - Call sio_init() once before anything else (it initialises libsodium).
 */
#ifndef SECUREIO_H
#define SECUREIO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define SIO_API __attribute__((visibility("default")))
#else
#define SIO_API
#endif

#define SIO_VERSION_MAJOR 0
#define SIO_VERSION_MINOR 1
#define SIO_VERSION_PATCH 0
#define SIO_VERSION_STRING "0.1.0"

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

enum sio_error {
	SIO_OK = 0,
	SIO_EINVAL = -1,      /* invalid argument */
	SIO_ENOMEM = -2,      /* out of memory */
	SIO_EIO = -3,         /* I/O error on a file or transport (see errno) */
	SIO_ENOENT = -4,      /* file not found */
	SIO_EFORMAT = -5,     /* malformed or truncated key file */
	SIO_EKEYTYPE = -6,    /* key is not Ed25519 */
	SIO_EENCRYPTED = -7,  /* private key is passphrase-protected */
	SIO_EPERM = -8,       /* private key or PSK file accessible by group or others */
	SIO_EMISMATCH = -9,   /* public key does not match the private key */
	SIO_EEXIST = -10,     /* file exists, will not overwrite */
	SIO_ETIMEDOUT = -11,  /* operation timed out */
	SIO_ECLOSED = -12,    /* session is closing or closed */
	SIO_EAGAIN = -13,     /* would block: queue full, try again */
	SIO_ETOOBIG = -14,    /* message larger than allowed */
	SIO_EAUTH = -15,      /* remote identity not authorised */
	SIO_EREFUSED = -16,   /* remote identity refused by the program */
	SIO_EANSWERS = -17,   /* peers use incompatible answers modes */
	SIO_EDECRYPT = -18,   /* too many consecutive undecryptable packets */
	SIO_ELIMIT = -19,     /* packet-number hard limit reached */
	SIO_ETRUNCATED = -20, /* transport ended without a graceful close */
	SIO_ESTATE = -21,     /* operation not valid in the current state */
	SIO_ECRYPTO = -22,    /* cryptographic library failure */
	SIO_EPROTO = -23,     /* protocol violation by the peer */
	SIO_ECLOCK = -24,     /* remote clock/time sanity check failed */
	SIO_EPEERDEAD = -25,  /* no packet from the peer within the dead-peer timeout */
	SIO_ECANCELED = -26,  /* operation cancelled (session freed/closed) */
	SIO_ENOKEYX = -27,    /* key exchange timed out without any valid message */
	SIO_ELOST = -28,      /* data lost in transit (ordered stream over datagrams) */
	SIO_EDETACHED = -29,  /* session detached itself after detach_on_messages messages */
	SIO_ENOTFILE = -30,   /* key file is a directory, FIFO or device, not a regular file */
	SIO_EDIRPERM = -31,   /* identity directory writable by group/others or owned by another user */
	SIO_EPASSPHRASE = -32, /* wrong passphrase for an encrypted private key */
	SIO_ESIGN = -33,      /* the identity's external signer failed or refused */
	SIO_EAGENT = -34,     /* ssh-agent unreachable, or it does not hold the key */
	SIO_EUNREACH = -35,   /* the peer's port or socket is gone (connected datagram socket) */
};

/* Returns a static, human-readable description of an SIO_E... code.
 * Thread: any. */
SIO_API const char *sio_strerror(int err);

/* Returns the version of the library actually linked, as a static string
 * "MAJOR.MINOR.PATCH" (the project version in CMakeLists.txt); compare it
 * with SIO_VERSION_STRING, the version of the header the program was built
 * against. Thread: any (no sio_init() needed). */
SIO_API const char *sio_version(void);

/* Initialises the library (libsodium). Idempotent. Returns 0 or SIO_ECRYPTO.
 * Thread: any. */
SIO_API int sio_init(void);

/* ------------------------------------------------------------------------ */
/* Identities (Ed25519 keys in OpenSSH / Go-secureio PEM files)             */
/* ------------------------------------------------------------------------ */

#define SIO_PUBLIC_KEY_BYTES 32
#define SIO_SECRET_KEY_BYTES 64 /* libsodium layout: seed(32) || public(32) */
#define SIO_SEED_BYTES 32
#define SIO_FINGERPRINT_MAX 64  /* "SHA256:" + 43 base64 chars + NUL fits */
#define SIO_PUBKEY_LINE_MAX 256

typedef struct sio_identity sio_identity; /* local key pair; secret wiped on free */
typedef struct sio_remote sio_remote;     /* one or more authorised public keys */

/* Loads DIR/id_ed25519 (and checks DIR/id_ed25519.pub if present), or
 * generates both when the private key is missing (DIR created 0700, key 0600,
 * written atomically; an existing file is never overwritten). DIR (followed
 * if a symbolic link) must belong to the effective user or to root and must
 * not be writable by group or others, else SIO_EDIRPERM (like OpenSSH's
 * rule for ~/.ssh: whoever can write there can swap the key).
 * Thread: any. */
/* Checks DIR as sio_identity_from_dir() does before it reads or creates a
 * key there: 0, SIO_EDIRPERM (writable by group or others, or owned by
 * neither the effective user nor root), SIO_ENOENT (missing or not a
 * directory). Thread: any. */
SIO_API int sio_identity_check_dir(const char *dir);

SIO_API int sio_identity_from_dir(sio_identity **out, const char *dir);

/* Loads a private key file: OpenSSH "openssh-key-v1" (Ed25519) or a PEM
 * block "ED25519 PRIVATE KEY" (64 bytes). Refuses files readable by
 * group/others (SIO_EPERM) and passphrase-protected keys (SIO_EENCRYPTED:
 * use sio_identity_load_passphrase or sio_identity_load_ask).
 * Thread: any. */
SIO_API int sio_identity_load(sio_identity **out, const char *path);

/* Loads a private key file that may be passphrase-protected as ssh-keygen
 * does it (bcrypt KDF, any round count up to 65536; aes128/192/256-ctr,
 * aes128/192/256-cbc, aes128/256-gcm@openssh.com,
 * chacha20-poly1305@openssh.com) with the passphrase PASS (LEN bytes; not
 * NUL-terminated, not kept: the library's copies are wiped). An unencrypted
 * key loads whatever PASS is. A wrong passphrase is SIO_EPASSPHRASE (found
 * through the check integers or the AEAD tag); a library built without
 * OpenSSL's libcrypto answers SIO_EENCRYPTED for every encrypted key.
 * Thread: any. */
SIO_API int sio_identity_load_passphrase(sio_identity **out, const char *path, const void *pass,
                                         size_t len);

/* Asked for the passphrase of the encrypted private key file PATH: write
 * up to CAP (1024) bytes into BUF, set *LEN, and return 0, or return a
 * negative code (e.g. SIO_ECANCELED) to give up; that code is returned by
 * the load. BUF belongs to the library, which wipes it afterwards. */
typedef int (*sio_passphrase_fn)(void *ctx, const char *path, char *buf, size_t cap,
                                 size_t *len);

/* sio_identity_load, calling ASK (once, on the calling thread) only when
 * the key is encrypted. Thread: any. */
SIO_API int sio_identity_load_ask(sio_identity **out, const char *path, sio_passphrase_fn ask,
                                  void *ctx);

/* The public key of a private key file without its passphrase (the
 * openssh-key-v1 format stores it in clear): PK, *ENCRYPTED (may be NULL)
 * set to 1 if the key is passphrase-protected, and COMMENT (CCAP bytes, may
 * be NULL) the comment of an unencrypted key ("" for an encrypted one: it
 * is inside the encrypted part). Same errors as sio_identity_load but never
 * SIO_EENCRYPTED for an OpenSSH key. Thread: any. */
SIO_API int sio_private_key_info(const char *path, uint8_t pk[SIO_PUBLIC_KEY_BYTES],
                                 int *encrypted, char *comment, size_t ccap);

/* Creates an identity from a 32-byte seed (deterministic). Thread: any. */
SIO_API int sio_identity_from_seed(sio_identity **out, const uint8_t seed[SIO_SEED_BYTES]);

/* Creates a fresh random identity (not written anywhere). Thread: any. */
SIO_API int sio_identity_generate(sio_identity **out);

/* Writes the identity to PATH (OpenSSH format, 0600) and PATH.pub.
 * Fails with SIO_EEXIST if PATH exists. Thread: any. */
SIO_API int sio_identity_save(const sio_identity *id, const char *path, const char *comment);

/* sio_identity_save, with the private key encrypted under the passphrase
 * PASS (LEN bytes) as ssh-keygen does by default: aes256-ctr, bcrypt KDF
 * with ROUNDS rounds (0: 16, ssh-keygen's default; at most 65536) and a
 * random 16-byte salt. LEN 0 writes an unencrypted key, as ssh-keygen does
 * for an empty passphrase. SIO_ECRYPTO in a build without OpenSSL.
 * Thread: any. */
SIO_API int sio_identity_save_passphrase(const sio_identity *id, const char *path,
                                         const char *comment, const void *pass, size_t len,
                                         unsigned rounds);

/* An external signer: writes the 64-byte Ed25519 signature of MSG (LEN
 * bytes) by the identity's key into SIG and returns 0, or returns a
 * negative code (SIO_ESIGN, SIO_EAGENT, ...) when it cannot. Called by the
 * thread running a session's key exchange (each session's I/O thread, or
 * the program's loop thread in event-loop mode), possibly from several
 * sessions at once, and may block: only the calling session waits. */
typedef int (*sio_sign_fn)(void *ctx, uint8_t sig[64], const uint8_t *msg, size_t len);

/* Creates an identity whose private key stays elsewhere (HSM, PKCS#11
 * token, TPM, remote signer): PK is its public key, SIGN makes its
 * signatures. Every signature is checked against PK before use; a failed
 * or wrong one ends the key exchange of that session with SIO_ESIGN (or
 * SIGN's own code) and the session closes; other sessions are unaffected.
 * FREE_CTX (may be NULL) is called with CTX when the last reference goes.
 * sio_identity_save() refuses such an identity (SIO_EINVAL). Thread: any. */
SIO_API int sio_identity_from_signer(sio_identity **out, const uint8_t pk[SIO_PUBLIC_KEY_BYTES],
                                     sio_sign_fn sign, void *ctx, void (*free_ctx)(void *ctx));

/* Creates an identity signing through an ssh-agent: the agent on SOCKET
 * (a UNIX socket path; NULL: $SSH_AUTH_SOCK) must hold the Ed25519 key PK
 * (NULL: the first Ed25519 key it lists). Asks the agent once for its keys
 * (SSH_AGENTC_REQUEST_IDENTITIES), then for each key exchange opens a new
 * connection and sends SSH_AGENTC_SIGN_REQUEST, so a restarted agent at the
 * same path is picked up. Returns 0, SIO_EAGENT (no socket, unreachable,
 * key not held; PK NULL: no Ed25519 key), SIO_EPROTO (a malformed agent
 * reply), SIO_ENOMEM. Each signature waits at most 60 s (an agent asking a
 * person to confirm, ssh-add -c); a refusal, a dead agent or a removed key
 * make that key exchange fail with SIO_ESIGN. The private key never
 * enters the process. Thread: any. */
SIO_API int sio_identity_from_agent(sio_identity **out, const char *socket,
                                    const uint8_t pk[SIO_PUBLIC_KEY_BYTES]);

/* Copies the 32-byte public key. Thread: any. */
SIO_API void sio_identity_public_key(const sio_identity *id, uint8_t pk[SIO_PUBLIC_KEY_BYTES]);

/* Releases the program's handle. The key is wiped and freed at once unless
 * a session or listener still uses it, then when the last of them is freed.
 * NULL is allowed. Thread: any. */
SIO_API void sio_identity_free(sio_identity *id);

/* Loads one or several public keys from a file: "ssh-ed25519 BASE64 [comment]"
 * lines (authorized_keys style: several lines, comments, blank lines, options
 * prefix: from="..." is enforced, options that could not be enforced refuse
 * the file, see sio_remote_load_err), or a PEM block "ED25519 PUBLIC KEY".
 * Non-Ed25519 lines in an authorized_keys file are skipped; a file with no
 * Ed25519 key fails. Thread: any. */
SIO_API int sio_remote_load(sio_remote **out, const char *path);

/* Reads a pre-shared key file (its bytes are the key, as sio_options.psk
 * takes it) into PSK, which has room for CAP bytes; *LEN gets the length.
 * Refuses, like a private key, a file accessible by group or others
 * (SIO_EPERM: chmod 600 it) and anything but a regular file (SIO_ENOTFILE);
 * a file longer than CAP gives SIO_ETOOBIG with *LEN set to its size (at
 * least CAP + 1) and PSK wiped. The length limits of sio_options.psk_len
 * (16..1024) are the caller's to check. Thread: any. */
SIO_API int sio_psk_load(const char *path, uint8_t *psk, size_t cap, size_t *len);
/* sio_remote_load, and when the file is refused (SIO_EFORMAT) a one-line
 * reason in MSG (MSGLEN bytes; may be NULL): "line N: option 'X': why".
 * authorized_keys options: from="pattern-list" (sshd's address patterns:
 * '*' '?' wildcards, CIDR blocks, '!' negation; matched against the peer's
 * IP address, never DNS names) is enforced by sessions with a pinned set
 * and by listeners: the key is accepted only from a matching address (a
 * key on several lines: any of them). restrict, no-pty, no-port-forwarding,
 * no-agent-forwarding, no-x11-forwarding and no-user-rc restrict SSH
 * features secureio does not have and are accepted; any other option
 * (command=, environment=, permitopen=, expiry-time=, cert-authority, ...)
 * refuses the whole file, since it would not be enforced. Thread: any. */
SIO_API int sio_remote_load_err(sio_remote **out, const char *path, char *msg, size_t msglen);

/* Creates a remote set holding one public key. Thread: any. */
SIO_API int sio_remote_from_public_key(sio_remote **out, const uint8_t pk[SIO_PUBLIC_KEY_BYTES]);

/* Adds a key to the set. Thread: any (not concurrently with use). */
SIO_API int sio_remote_add(sio_remote *r, const uint8_t pk[SIO_PUBLIC_KEY_BYTES]);

/* Returns 1 if PK is in the set, else 0: one keyed hash (a random SipHash
 * key per set, so nobody can choose keys that collide) and a few
 * constant-time compares, whatever the size of the set. Thread: any. */
SIO_API int sio_remote_contains(const sio_remote *r, const uint8_t pk[SIO_PUBLIC_KEY_BYTES]);

/* Number of keys in the set; sio_remote_key() copies key I. Thread: any. */
SIO_API size_t sio_remote_count(const sio_remote *r);
SIO_API int sio_remote_key(const sio_remote *r, size_t i, uint8_t pk[SIO_PUBLIC_KEY_BYTES]);

/* Releases the program's handle; the set is freed now or, if a session
 * still uses it, when the last such session is freed. NULL is allowed.
 * Thread: any. */
SIO_API void sio_remote_free(sio_remote *r);

/* Writes "SHA256:<unpadded base64>" like `ssh-keygen -l`. Thread: any. */
SIO_API int sio_fingerprint(const uint8_t pk[SIO_PUBLIC_KEY_BYTES], char *out, size_t outlen);

/* Writes "ssh-ed25519 BASE64[ comment]" (no newline). Thread: any. */
SIO_API int sio_public_key_line(const uint8_t pk[SIO_PUBLIC_KEY_BYTES], const char *comment,
			char *out, size_t outlen);

/* Parses one public key from memory in any format sio_remote_load() reads
 * (first Ed25519 key found). Thread: any. */
SIO_API int sio_public_key_parse(const char *text, size_t len, uint8_t pk[SIO_PUBLIC_KEY_BYTES]);

/* ------------------------------------------------------------------------ */
/* Message types                                                            */
/* ------------------------------------------------------------------------ */

/* User channels are 0 .. SIO_CHANNEL_MAX. SIO_TYPE_READWRITE is the type used
 * by sio_read()/sio_write(). Values above it are reserved for the protocol. */
#define SIO_CHANNEL_MAX 0x7fffffffu
#define SIO_TYPE_READWRITE 0x80000000u

/* ------------------------------------------------------------------------ */
/* Sessions                                                                 */
/* ------------------------------------------------------------------------ */

typedef enum sio_state {
	SIO_STATE_NEW = 0,            /* created, not started */
	SIO_STATE_INITIALIZATION = 1, /* options parsed, resources being set up */
	SIO_STATE_KEY_EXCHANGING = 2,
	SIO_STATE_NEGOTIATION = 3, /* probing the usable packet size */
	SIO_STATE_ESTABLISHED = 4,
	SIO_STATE_CLOSING = 5,
	SIO_STATE_CLOSED = 6,
} sio_state;

/* Name of a state ("established", ...). Thread: any. */
SIO_API const char *sio_state_name(sio_state st);

typedef enum sio_answers_mode {
	SIO_ANSWERS_DEFAULT = 0,         /* = SIO_ANSWERS_ANSWER_AND_WAIT */
	SIO_ANSWERS_ANSWER_AND_WAIT = 1, /* acknowledge, and wait for acknowledgements */
	SIO_ANSWERS_ANSWER = 2,          /* acknowledge, do not wait */
	SIO_ANSWERS_DISABLE = 3,         /* neither */
} sio_answers_mode;

typedef enum sio_transport_kind {
	SIO_TRANSPORT_AUTO = 0,     /* detect from SO_TYPE (non-sockets: stream) */
	SIO_TRANSPORT_DATAGRAM = 1, /* message boundaries kept, may lose/reorder */
	SIO_TRANSPORT_STREAM = 2,   /* byte stream: records are framed */
} sio_transport_kind;

/* A transport the caller opened. Either descriptors or callbacks.
 * Descriptors are switched to O_NONBLOCK while the session uses them; unless
 * close_fds is set they stay open and get their old flags back when the
 * session is freed. Stream transports carry each packet as a record with a
 * 4-byte length prefix (docs/TRANSPORT.md). UDP sockets get "don't
 * fragment". End of file and errors become an error event and the CLOSED
 * state, never a crash or a SIGPIPE. */
typedef struct sio_transport {
	sio_transport_kind kind;
	int read_fd;  /* socket or pipe read end; -1 for callback transports */
	int write_fd; /* = read_fd for sockets */
	/* Datagram sockets only. peer_len > 0: an unconnected socket sending to
	 * this fixed address. peer_len 0: a connected socket, or, if the socket
	 * is not connected, the peer address is learned from the first packet
	 * that proves authentic, and moves to a new source address only after
	 * an authentic packet from it (until then our packets are dropped). */
	struct sockaddr_storage peer;
	socklen_t peer_len;
	int close_fds; /* nonzero: the session closes the descriptors when freed */
	/* Custom transport (read_fd = write_fd = -1): send one packet (or, with
	 * kind SIO_TRANSPORT_STREAM, some bytes of the record stream) and return
	 * the count taken or -errno (-EAGAIN when full: retried every few ms);
	 * recv reads into buf and returns the count, 0 on end, -errno on error
	 * (-EAGAIN when nothing is available). kind SIO_TRANSPORT_AUTO means
	 * datagram (one packet per call). poll_fd (or -1) becomes readable when
	 * recv has data; with -1, recv is tried every few milliseconds. The
	 * callbacks are never called concurrently with each other (they run
	 * under the session's lock, on the I/O thread or a writing thread). */
	ssize_t (*send)(void *ctx, const void *buf, size_t len);
	ssize_t (*recv)(void *ctx, void *buf, size_t len);
	int poll_fd;
	void *ctx;
} sio_transport;

/* Initialises T for a descriptor pair (sockets: rfd == wfd): kind AUTO (from
 * SO_TYPE: SOCK_DGRAM and SOCK_SEQPACKET are datagram, anything else a
 * stream), no fixed peer, close_fds 0, no callbacks. Thread: any. */
SIO_API void sio_transport_fd(sio_transport *t, int rfd, int wfd);

/* Session options. A zero-initialised struct means all defaults. Durations
 * are nanoseconds; a negative duration means "disabled/none" where noted. */
typedef struct sio_options {
	/* Merge messages written within this delay into one packet.
	 * 0 = default (50 us); negative = send at once. */
	int64_t send_delay_ns;
	/* Largest packet handed to the transport, headers included. 0 = default
	 * (datagram: 1452, fits 1500-byte IPv6+UDP; stream/seqpacket: 65535). */
	uint32_t max_packet_size;
	/* Replay window in packets. 0 = default (4096); 1 = strictly increasing
	 * packet numbers only; negative = no replay protection. */
	int32_t replay_window;
	/* Fragmentation of messages larger than a packet: 0 = default (on), 1 on, -1 off. */
	int fragmentation;
	uint32_t max_message_size;     /* 0 = default (16 MiB) */
	uint32_t max_reassembly_bytes; /* per session; 0 = default (4 MiB) */
	uint32_t max_partial_messages; /* concurrent partial messages; 0 = default (64) */
	/* Go's MaxChainIDDiff: a partial message whose id falls this far behind
	 * the newest fragmented message id is abandoned (counted in
	 * drop_fragments), and its late fragments are dropped. 0 = default
	 * (1024); rounded up to a multiple of 64, at most 2^20. */
	uint32_t max_chain_id_diff;

	/* Key exchange */
	int64_t kx_interval_ns;  /* renewal period; 0 = default (60 s) */
	uint64_t kx_rekey_packets; /* renewal after this many packets per key; 0 = default (2^30) */
	int64_t kx_retry_ns;     /* 0 = default (1 s) */
	int64_t kx_timeout_ns;   /* 0 = default (60 s) */
	const uint8_t *psk;      /* optional pre-shared key (copied) */
	size_t psk_len;          /* 0 = none; else 16..1024 bytes */
	sio_answers_mode answers_mode;
	int64_t max_time_diff_ns; /* refuse remote timestamps further off; 0 = no check */

	/* Packet-size negotiation (datagram transports only) */
	int negotiation;           /* 0 = default (on for datagrams), 1 on, -1 off */
	int64_t negotiation_timeout_ns; /* 0 = default (500 ms) */

	/* Liveness */
	int64_t keepalive_ns; /* idle keepalive; 0 = default (10 s); negative = off */
	int64_t dead_peer_ns; /* 0 = default (3 * kx_interval, >= 30 s); negative = off */

	/* Decrypt failures in a row: error event after N (0 = default 16, <0 never),
	 * detach (close) after M (0/negative = never). */
	int32_t error_on_decrypt_fails;
	int32_t detach_on_decrypt_fails;
	/* Detach after N received messages (Go's DetachOnMessagesCount); 0 =
	 * never. Right after the Nth message is delivered the session stops
	 * using the transport: nothing after it is delivered (later messages
	 * of the same packet and packets read in the same batch are discarded
	 * uncounted), nothing more is sent (no CLOSE either), on_error reports
	 * SIO_EDETACHED, the state becomes SIO_STATE_CLOSED and later calls
	 * return SIO_EDETACHED. Descriptors given
	 * with close_fds = 0 stay open for the program, with their flags
	 * restored when the session is freed. Meant for a short secured
	 * exchange before the program uses the transport for something else;
	 * on a stream transport, bytes the session had already read past the
	 * Nth message's packet are not given back. */
	uint32_t detach_on_messages;

	/* Nonzero: the peer is a sio_listener (server mode). Datagram sockets
	 * only: every datagram sent starts with a 9-byte prefix naming this
	 * session (a random connection id), so the listener finds the session
	 * whatever our source address is (roaming). Ignored on streams. */
	int listener_peer;
} sio_options;

/* Fills O with all the documented defaults, resolved. Thread: any. */
SIO_API void sio_options_default(sio_options *o);

typedef struct sio_session sio_session;

/* Diagnostics levels (sio_callbacks.on_diag), most severe first. */
typedef enum sio_diag_level {
	SIO_DIAG_ERROR = 1, /* the session ends: the reason (as on_error says it) */
	SIO_DIAG_WARN = 2,  /* refused identities (once each), non-fatal error events */
	SIO_DIAG_INFO = 3,  /* established, key renewals, peer address changes,
	                     * packet size, drop summaries (rate-limited) */
	SIO_DIAG_DEBUG = 4, /* each key-exchange message sent and received */
} sio_diag_level;

/* Name of a level ("error", "warn", "info", "debug"; "?" otherwise).
 * Thread: any. */
SIO_API const char *sio_diag_level_name(int level);

/* Session-wide callbacks. All are called on the session's I/O thread (or,
 * in event-loop mode, inside sio_session_process()), one at a time, in the
 * order the events happened, never with a lock of ours held; they may call
 * any session function, including sio_close() and sio_session_free(), but
 * calls that would wait for the peer do not wait there (see each function).
 * Exception: on_remote_identity runs while the key exchange is suspended:
 * from it, sio_close() is deferred, and calls that need the protocol state
 * (writes, sio_session_remote_key, sio_session_stats) return SIO_ESTATE or
 * zeros. */
typedef struct sio_callbacks {
	void *ctx;
	/* first successful key exchange (once per session) */
	void (*on_connect)(sio_session *s, void *ctx);
	void (*on_state)(sio_session *s, sio_state old_state, sio_state new_state, void *ctx);
	void (*on_error)(sio_session *s, int err, const char *msg, void *ctx);
	/* No remote identity pinned: called with the learned key before it is
	 * trusted. Return 0 to accept, nonzero to refuse (the session then ends
	 * with SIO_EREFUSED). Not set: every valid identity is accepted. */
	int (*on_remote_identity)(sio_session *s, const uint8_t pk[SIO_PUBLIC_KEY_BYTES], void *ctx);
	/* Diagnostics (docs/API.md, "Diagnostics"): LEVEL (an SIO_DIAG_ value)
	 * and one line of text MSG (no newline, valid during the call only)
	 * saying what the session did or refused: key-exchange steps, keys
	 * renewed, the peer's address learned or moved, a refused identity
	 * ("refused SHA256:... (not pinned)", once per identity and session,
	 * only when that identity's signature holds), drops by reason (one line
	 * per reason and second at most, giving the count since the previous
	 * line; non-fatal error events at most one a second after a burst
	 * of 4). Never a key, a secret or message data. Delivered like the
	 * other callbacks: on the I/O thread (or inside sio_session_process()),
	 * never with a lock of ours held. NULL: nothing is formatted or
	 * counted for it (one branch per event). */
	void (*on_diag)(sio_session *s, int level, const char *msg, void *ctx);
	/* Most detailed level passed to on_diag; 0 = SIO_DIAG_INFO. Lines of a
	 * more detailed level are not even formatted. */
	int diag_level;
} sio_callbacks;

typedef struct sio_stats {
	uint64_t messages_sent, messages_received;
	uint64_t bytes_sent, bytes_received;     /* message payload bytes */
	uint64_t packets_sent, packets_received; /* transport packets/records */
	uint64_t wire_bytes_sent, wire_bytes_received;
	uint64_t drop_malformed;    /* too short, bad header, bad framing */
	uint64_t drop_decrypt;      /* authentication tag failure */
	uint64_t drop_replay;       /* duplicate packet number */
	uint64_t drop_too_old;      /* below the replay window */
	uint64_t drop_unknown_key;  /* key id not current/previous/next */
	uint64_t drop_kx;           /* invalid key-exchange messages (all kinds) */
	uint64_t drop_kx_limited;   /* of those: over the signature-check budget
	                             * (256 per second and session, bursts of 64) */
	uint64_t drop_unknown_type; /* messages of a type with no handler */
	uint64_t drop_fragments;    /* fragments dropped (timeout, bound, overlap) */
	uint64_t rekeys;            /* completed key renewals (not counting the first) */
	uint64_t decrypt_fail_runs; /* error events raised for decrypt-failure runs */
	uint32_t packet_size;       /* current (negotiated) max packet size */
	uint32_t reserved;
} sio_stats;

/* Creates a session over T between ID and REMOTE (NULL = learn the remote
 * identity from the first valid key exchange and report it through
 * on_remote_identity). OPTS and CBS may be NULL; T and OPTS are copied (the
 * PSK too). ID and REMOTE are not copied but referenced (counted): the
 * program may free its handles at any time after this call, the session
 * keeps them alive until it is freed; REMOTE must not be changed
 * (sio_remote_add) while a session uses it. Nothing is sent or read until
 * sio_session_start() or sio_session_start_loop(). Handlers and messengers
 * may be set up before. Thread: any. */
SIO_API int sio_session_new(sio_session **out, const sio_identity *id, const sio_remote *remote,
		    const sio_transport *t, const sio_options *opts, const sio_callbacks *cbs);

/* Starts the session's I/O thread and the key exchange. Returns 0, or
 * SIO_ESTATE if already started. Thread: any, once. */
SIO_API int sio_session_start(sio_session *s);

/* Event-loop mode: starts without a thread. The program polls
 * sio_session_fd() for readability and calls sio_session_process() when it is
 * readable or when sio_session_timeout_ms() has passed. In this mode nothing
 * blocks: sio_read/sio_read_timeout, sio_messenger_read,
 * sio_session_wait_state and sio_send_info_wait return SIO_EAGAIN where they
 * would have to wait for the peer, and sio_write/sio_write_message queue the
 * message and return (it leaves during a later sio_session_process()).
 * Handlers and events run inside sio_session_process(). Thread: any, once. */
SIO_API int sio_session_start_loop(sio_session *s);

/* Event-loop mode: descriptor to poll for POLLIN (an epoll descriptor that
 * combines the transport and the session's wake-ups; -1 if not in loop
 * mode, and for a listener's peer: sio_listener_fd() covers those). It can
 * be added to the program's own epoll/poll set. Thread: any. */
SIO_API int sio_session_fd(const sio_session *s);

/* Event-loop mode: reads what is available, runs timers, sends what is due,
 * and runs handlers and events. Returns 0, or once the session is CLOSED the
 * error that ended it (SIO_ECLOSED after a graceful close). If a handler
 * called sio_session_free() during this call, S is freed before it returns
 * (SIO_ECLOSED). A listener's peer in event-loop style is driven by
 * sio_listener_process(); this runs it now, which does no harm. Thread: the
 * program's loop (one thread at a time). */
SIO_API int sio_session_process(sio_session *s);

/* Event-loop mode: milliseconds until sio_session_process() must be called
 * again even without input (-1 = no timer; 0 = now; -1 for a listener's
 * peer: see sio_listener_timeout_ms()). Thread: any. */
SIO_API int sio_session_timeout_ms(const sio_session *s);

/* Current state (lock-free read). Thread: any. */
SIO_API sio_state sio_session_state(const sio_session *s);

/* Waits until the session reached ST (states only move forward; reaching
 * ESTABLISHED also satisfies NEGOTIATION) or TIMEOUT_MS passes (-1 =
 * forever). Returns 0, SIO_ETIMEDOUT, or, when the session closed without
 * reaching ST, the error that closed it (e.g. SIO_EAUTH, SIO_ENOKEYX, or
 * SIO_ECLOSED after a graceful close). On the I/O thread and in event-loop
 * mode it does not wait: SIO_EAGAIN. Thread: any. */
SIO_API int sio_session_wait_state(sio_session *s, sio_state st, int timeout_ms);

/* The remote's public key once known (proven by a key exchange): 0, or
 * SIO_ESTATE before. Thread: any. */
SIO_API int sio_session_remote_key(const sio_session *s, uint8_t pk[SIO_PUBLIC_KEY_BYTES]);

/* Copies counters (drop_malformed includes transport framing drops,
 * drop_unknown_type messages no handler took). Thread: any. */
SIO_API void sio_session_stats(const sio_session *s, sio_stats *st);

/* Reads from the default SIO_TYPE_READWRITE flow with stream semantics: a
 * short read leaves the rest of the message for the next read (bytes of
 * several messages may be returned together). Blocks until at least one byte
 * is available. Returns the byte count, 0 at a graceful end of session, or a
 * negative code: the error that ended the session (SIO_ETRUNCATED,
 * SIO_EPEERDEAD, SIO_EAUTH, ...). Unread data is bounded (4 MiB): beyond it
 * the session stops reading the transport until the program reads. On the
 * I/O thread and in event-loop mode it never blocks (SIO_EAGAIN).
 * Thread: any; one reader at a time makes sense. */
SIO_API ssize_t sio_read(sio_session *s, void *buf, size_t len);

/* Like sio_read with a timeout in ms (-1 forever, 0 poll). Nothing within
 * the timeout: SIO_ETIMEDOUT (SIO_EAGAIN for 0). Thread: as sio_read. */
SIO_API ssize_t sio_read_timeout(sio_session *s, void *buf, size_t len, int timeout_ms);

/* Writes one message of the default type; returns LEN or a negative code.
 * Synchronous like sio_write_message(). Thread: as sio_write_message. */
SIO_API ssize_t sio_write(sio_session *s, const void *buf, size_t len);

/* Sends one message of TYPE (a user channel or SIO_TYPE_READWRITE) and
 * returns once the packet holding it went to the transport, or an error
 * (SIO_ETOOBIG, SIO_ECLOSED or the error that ended the session, ...).
 * The calling thread moves it (and what other writers queued before it)
 * into a packet, seals and sends it itself (no merge delay, no hand-off to
 * the I/O thread) unless the transport is full. Messages written before "established" are queued and
 * this call waits for them to leave. Thread: any (from a handler or in
 * event-loop mode: queues and returns 0 without waiting). */
SIO_API int sio_write_message(sio_session *s, uint32_t type, const void *data, size_t len);

typedef struct sio_send_info sio_send_info;
typedef void (*sio_send_done_fn)(sio_send_info *si, int err, void *ctx);

/* Queues one message of TYPE and returns a completion object, or NULL with
 * *ERR set (ERR may be NULL). Messages written within the send delay are
 * merged into one packet. Every message goes through the session's write
 * queue (docs/ARCHITECTURE.md, "Write path"), in order with every other
 * write. A message of up to 8 KiB (and a quarter of a packet) is copied
 * into the queue without taking the session lock, in any state before
 * closing (written before the session started, it leaves once it is
 * established); without DONE its object completes when the packet holding
 * it leaves (all the messages of a packet complete together). A larger
 * message is moved into the core by the calling thread under the session
 * lock before the call returns (no copy into the queue). A session that
 * ends before the message left fails it with the error that ended the
 * session (or SIO_ECANCELED, or SIO_ECLOSED if closed before it started).
 * Sizes the session can never send (SIO_ETOOBIG) and a closed session
 * (SIO_ECLOSED) are reported at once. Blocks only while the queue or the
 * core is full (not on the I/O thread or in event-loop mode, nor on a
 * session not started yet: NULL with SIO_EAGAIN). DONE, if not NULL, is
 * called once on the I/O thread when the message went out (err 0) or failed
 * (e.g. SIO_ECANCELED when the session is freed; then it runs on the
 * freeing thread). Completion objects come from a per-session pool (no
 * allocation in steady state). The object belongs to the caller until
 * sio_send_info_release(), even after sio_session_free(). Thread: any. */
SIO_API sio_send_info *sio_write_message_async(sio_session *s, uint32_t type, const void *data, size_t len,
				       sio_send_done_fn done, void *ctx, int *err);

/* Waits for completion (timeout ms, -1 forever). Returns the send error (0 on
 * success) or SIO_ETIMEDOUT. On the I/O thread and in event-loop mode it
 * does not wait (SIO_EAGAIN if not done). Thread: any. */
SIO_API int sio_send_info_wait(sio_send_info *si, int timeout_ms);

/* Asks the session to send now without waiting for the send delay, then
 * waits like sio_send_info_wait(). Thread: as sio_send_info_wait. */
SIO_API int sio_send_info_send_now_and_wait(sio_send_info *si, int timeout_ms);

/* 1 once completed, else 0. Thread: any. */
SIO_API int sio_send_info_done(const sio_send_info *si);

/* The send error (0 = sent; only meaningful once done). Thread: any. */
SIO_API int sio_send_info_err(const sio_send_info *si);

/* Releases the object (it returns to the pool once the session is done with
 * it too; a pending message is still sent). Valid before or after
 * completion, and after sio_session_free(). Thread: any, once: releasing
 * an object twice is undefined (it may already be another write's). */
SIO_API void sio_send_info_release(sio_send_info *si);

typedef void (*sio_message_fn)(sio_session *s, uint32_t type, const uint8_t *data, size_t len,
			       void *ctx);
typedef void (*sio_handler_error_fn)(sio_session *s, uint32_t type, int err, void *ctx);

/* Sets the handler for messages of TYPE (a user channel or
 * SIO_TYPE_READWRITE, which then no longer reaches sio_read). ON_MESSAGE NULL
 * removes it. Data is valid during the call only (it points into the receive
 * buffer: no copy). Handlers run on the I/O thread, one at a time, in
 * arrival order. ON_ERROR (may be NULL) is called once when the session
 * closes, with the error that ended it (SIO_ECLOSED if graceful).
 * SIO_ESTATE if a messenger owns TYPE. Thread: any. */
SIO_API int sio_set_handler(sio_session *s, uint32_t type, sio_message_fn on_message,
		    sio_handler_error_fn on_error, void *ctx);

/* Catch-all handler for user channels that have none (default: counted in
 * drop_unknown_type). SIO_TYPE_READWRITE without a handler goes to sio_read
 * instead. ON_MESSAGE NULL removes it. Thread: any. */
SIO_API int sio_set_default_handler(sio_session *s, sio_message_fn on_message, void *ctx);

/* Starts a graceful close: queued messages are sent, the peer is told, and
 * the state goes CLOSING then CLOSED once the peer acknowledged. Returns at
 * once (0 also if already closing/closed). A session never started goes
 * straight to CLOSED. Thread: any, including a handler. */
SIO_API int sio_close(sio_session *s);

/* sio_close() then waits for CLOSED (timeout ms, -1 forever): 0 or
 * SIO_ETIMEDOUT. On the I/O thread (a handler) and in event-loop mode it
 * does not wait and returns 0. Thread: any. */
SIO_API int sio_close_and_wait(sio_session *s, int timeout_ms);

/* Closes abruptly if needed (no close message: once the transport ends the
 * peer sees a truncation), joins the I/O thread, wipes keys and frees; the
 * transport is closed only if close_fds was set. Pending completions fail with
 * SIO_ECANCELED; messengers still open become inert (close them later).
 * From a handler: once the handler returns nothing more is read, sent or
 * delivered for S (only completion callbacks still run, failing with
 * SIO_ECANCELED), and the I/O thread (or sio_session_process) frees the
 * session on its way out. Linger: a session (threaded, over a datagram
 * socket) that acknowledged the peer's CLOSE keeps answering the peer's
 * repeated CLOSEs, since its acknowledgement may have been lost: free then
 * first waits until the peer stopped repeating for 2.5 close intervals
 * (kx_retry_ns / 8 each: about 0.3 s by default, at most 20 intervals).
 * Thread: any; no other call on S may run concurrently or follow. NULL is
 * allowed. */
SIO_API void sio_session_free(sio_session *s);

/* ------------------------------------------------------------------------ */
/* Per-type messenger: read/write one message type like a small socket      */
/* ------------------------------------------------------------------------ */

typedef struct sio_messenger sio_messenger;

/* Opens the messenger for TYPE (one per type: SIO_ESTATE if TYPE already
 * has one; it replaces any handler of TYPE with an internal queue, bounded
 * like sio_read's). Thread: any. */
SIO_API int sio_messenger_open(sio_session *s, uint32_t type, sio_messenger **out);

/* Reads one whole message: returns the bytes copied (the message truncated
 * to LEN, the rest dropped; *FULL, if FULL != NULL, gets its full size).
 * Waits (timeout ms, -1 forever; also while paused) for a message: then
 * SIO_ETIMEDOUT, or SIO_EAGAIN for timeout 0, on the I/O thread and in
 * event-loop mode. 0 (with *FULL 0) is also an empty
 * message; after the session ended: 0 if graceful (*FULL untouched), else
 * the error. Thread: any. */
SIO_API ssize_t sio_messenger_read(sio_messenger *m, void *buf, size_t len, size_t *full, int timeout_ms);

/* Writes one message of the messenger's type, like sio_write_message().
 * Thread: any. */
SIO_API int sio_messenger_write(sio_messenger *m, const void *data, size_t len);

/* Paused messengers keep incoming messages queued (bounded) but do not
 * deliver them. Thread: any. */
SIO_API void sio_messenger_pause(sio_messenger *m);
SIO_API void sio_messenger_resume(sio_messenger *m);

/* Messages and bytes each way for this type (received = arrived in the
 * queue; sent = written successfully). Any pointer may be NULL.
 * Thread: any. */
SIO_API void sio_messenger_counts(const sio_messenger *m, uint64_t *msgs_in, uint64_t *bytes_in,
			  uint64_t *msgs_out, uint64_t *bytes_out);

/* Closes and frees the messenger; later messages of its type are dropped
 * (counted) unless a handler is set. Valid after sio_session_free().
 * Thread: any, once. */
SIO_API void sio_messenger_close(sio_messenger *m);

/* ------------------------------------------------------------------------ */
/* Listener: server mode, many peers on one datagram socket                 */
/* ------------------------------------------------------------------------ */

/* A listener serves many peers through one UDP (or unixgram) socket with one
 * local identity. Clients are ordinary sessions created with the option
 * listener_peer set: their datagrams carry a connection id, by which the
 * listener finds the session (not by source address). A peer's address moves
 * only when an authenticated data packet arrives from the new address.
 * Each authenticated peer becomes a normal sio_session (read/write,
 * handlers, messengers, close...) handed to the program once established;
 * the program owns it then and frees it with sio_session_free(). */
typedef struct sio_listener sio_listener;

typedef struct sio_listener_options {
	/* live sessions; 0 = default (65536). Checked when a key exchange is
	 * admitted: those in progress may still complete beyond it. */
	uint32_t max_sessions;
	uint32_t max_half_open;       /* key exchanges in progress; 0 = default (1024) */
	int64_t half_open_timeout_ns; /* a key exchange not done by then is dropped; 0 = 10 s */
	/* Half-open count from which new peers must first echo a stateless
	 * cookie (docs/PROTOCOL.md, "Listener"); 0 = default (max_half_open / 2),
	 * 1 = always, negative = never. */
	int32_t cookie_threshold;
	/* Options of every peer session (copied). Left at 0, max_message_size
	 * defaults to 256 KiB and max_reassembly_bytes to 512 KiB for a
	 * listener's peers (16 MiB and 4 MiB for a lone session). */
	const sio_options *session_opts;
	const sio_callbacks *session_cbs; /* callbacks of every peer session (copied) */
	/* A new peer proved its identity PK (and is in the allowed set, if one is
	 * set). Return 0 to accept, nonzero to refuse (counted in drop_refused;
	 * the peer gets nothing). Runs on the peer's worker. */
	int (*on_peer)(sio_listener *l, const uint8_t pk[SIO_PUBLIC_KEY_BYTES], void *ctx);
	void *ctx;
	int close_fd; /* nonzero: sio_listener_free() closes the socket */
	/* Called for each new peer session before it starts (its identity is
	 * not known yet): the place to set handlers and messengers, so that no
	 * early message reaches sio_read instead. The session may still fail
	 * the key exchange and be freed by the listener without being
	 * accepted. Thread: the peer's worker (or sio_listener_process). */
	void (*on_session)(sio_listener *l, sio_session *s, void *ctx);
	/* Memory budget of the whole listener, in bytes; 0 = default (a quarter
	 * of the machine's physical memory, at least 64 MiB). Every peer
	 * reserves its worst case out of it: 640 KiB + 64 KiB while its key
	 * exchange is in progress (its state and the most its on-demand
	 * buffers reach at the default packet size, input queue), then, once
	 * its identity is proven, 1152 KiB + max_reassembly_bytes (at least
	 * max_message_size) + max_message_size + peer_unread_bytes (see
	 * docs/API.md, "Listener memory"). A key exchange the budget cannot
	 * cover is dropped and counted in drop_memory; peers already in keep
	 * their reservation. */
	uint64_t max_memory;
	/* Unread data a peer session holds per stream (the default read stream
	 * and each messenger) before it stops reading its input; 0 = default
	 * (256 KiB; a lone session: 4 MiB). */
	uint32_t peer_unread_bytes;
	/* Diagnostics of the listener itself (its peer sessions report through
	 * session_cbs->on_diag): a key exchange from an identity outside the
	 * allowed set, "refused SHA256:... (not allowed)" at SIO_DIAG_WARN,
	 * once per identity (the last 16 remembered) and only when its
	 * signature holds; and, at SIO_DIAG_INFO, summaries of the drops
	 * counted in sio_listener_stats, one line per reason and second at
	 * most ("dropped N datagrams (REASON)"). DIAG_LEVEL: most detailed
	 * level delivered, 0 = SIO_DIAG_INFO. Thread: one of the listener's
	 * workers, one call at a time (or the one calling
	 * sio_listener_process()), never with a lock of ours held. NULL: nothing is formatted or counted for it. */
	void (*on_diag)(sio_listener *l, int level, const char *msg, void *ctx);
	int diag_level;
	/* Worker threads driving every peer session (blocking style; the
	 * event-loop style has one, run by sio_listener_process()); 0 = one per
	 * online core. A UDP socket with SO_REUSEPORT set before its bind gets
	 * a sibling socket per worker, bound to the same address; otherwise
	 * the workers share FD. See docs/SERVER.md. */
	int workers;
} sio_listener_options;

typedef struct sio_listener_stats {
	uint64_t sessions;          /* live established peer sessions */
	uint64_t half_open;         /* key exchanges in progress */
	uint64_t accepted;          /* peers established since creation */
	uint64_t roams;             /* peer address changes (authenticated) */
	uint64_t cookies_sent;      /* cookie replies sent under load */
	uint64_t drop_malformed;    /* not a listener datagram, bad layout, PSK wrapping not opening */
	uint64_t drop_unknown;      /* unknown connection id and not a key exchange we accept,
	                               or for a peer whose session is ending */
	uint64_t drop_unauthorized; /* identity not in the allowed set */
	uint64_t drop_refused;      /* refused by on_peer */
	uint64_t drop_half_open;    /* half-open table full */
	uint64_t drop_sessions;     /* session table full */
	uint64_t drop_cookie;       /* wrong or stale cookie echoed: answered with a
	                               fresh cookie under load, else ignored (the
	                               exchange is admitted as if it had none) */
	uint64_t drop_queue;        /* peer's input queue full (64 packets or 512 KiB;
	                               64 KiB during its key exchange), or a
	                               worker's inbox of handed-over datagrams
	                               full (4096) */
	uint64_t expired;           /* half-open exchanges that timed out or failed */
	uint64_t drop_replay;       /* a first key-exchange message already admitted
	                               under another connection id (a replay) */
	uint64_t amp_limited;       /* datagrams not sent to a peer address not yet
	                               validated: 3 times what came from it, spent */
	uint64_t memory;            /* bytes of max_memory reserved by live peers */
	uint64_t drop_memory;       /* key exchanges dropped: max_memory reached */
	uint64_t workers;           /* worker threads (1 in event-loop style) */
	uint64_t handoffs;          /* datagrams read by a worker that does not own
	                               the peer, handed to the one that does */
} sio_listener_stats;

/* Creates a listener on the bound datagram socket FD, answering as ID
 * (referenced as sio_session_new() does). ALLOWED (NULL = any identity,
 * subject to on_peer) is copied. With session_opts->psk, only key exchanges
 * wrapped with that PSK are admitted (checked before any state exists). LO may be NULL. Nothing is read before a start call. Returns 0,
 * SIO_EINVAL (FD not a datagram socket, bad option), SIO_ENOMEM, SIO_EIO.
 * Thread: any. */
SIO_API int sio_listener_new(sio_listener **out, const sio_identity *id, int fd, const sio_remote *allowed,
		     const sio_listener_options *lo);

/* Blocking style: starts the listener's worker threads (lo.workers; one per
 * online core by default), which read the socket(s) and drive every peer
 * session: a peer session owns no thread and no descriptor, and its
 * callbacks (on_session, on_peer, the session callbacks and handlers) run
 * on its worker, so they must not block (docs/SERVER.md). The program's
 * own threads use accepted sessions as any blocking-style session.
 * Returns 0, SIO_ESTATE (already started), SIO_ENOMEM or SIO_EIO. Thread:
 * any, once. */
SIO_API int sio_listener_start(sio_listener *l);

/* Waits (timeout ms, -1 forever, 0 poll) for the next established peer and
 * returns its session in *OUT (now the program's). Returns 0, SIO_ETIMEDOUT
 * (SIO_EAGAIN for 0 and in event-loop mode), SIO_ECLOSED once the listener
 * is being freed. Thread: any in blocking style; in event-loop style the
 * thread that calls sio_listener_process(). */
SIO_API int sio_listener_accept(sio_listener *l, sio_session **out, int timeout_ms);

/* Event-loop style: starts without threads. Poll sio_listener_fd() for
 * POLLIN and call sio_listener_process() when readable or when
 * sio_listener_timeout_ms() passed; it reads the socket, routes packets and
 * drives every peer, before and after sio_listener_accept(l, &s, 0) hands
 * it over: an accepted session needs no descriptor or call of its own (its
 * calls never block, as in event-loop mode). Returns 0, SIO_ESTATE,
 * SIO_ENOMEM or SIO_EIO. Thread: any, once. */
SIO_API int sio_listener_start_loop(sio_listener *l);
/* Event-loop style: the one descriptor to poll for POLLIN (an epoll
 * descriptor combining the socket and the wake-ups other threads cause,
 * e.g. by writing to a peer); -1 otherwise. Thread: any. */
SIO_API int sio_listener_fd(const sio_listener *l);
/* One turn: reads what the socket holds (a bounded amount), runs the peers
 * that have work, their due timers, and expires stale key exchanges.
 * Callbacks run inside it. Returns 0 or SIO_ESTATE (not in event-loop
 * style). Thread: the program's loop. */
SIO_API int sio_listener_process(sio_listener *l);
/* Milliseconds until sio_listener_process() is due (-1 none). Thread: the
 * program's loop (it looks at sessions sio_listener_process() may free). */
SIO_API int sio_listener_timeout_ms(const sio_listener *l);

/* Replaces the allowed set (copied; NULL = any identity). Applies to new
 * peers; established ones are not closed. Returns 0 or SIO_ENOMEM.
 * Thread: any. */
SIO_API int sio_listener_set_allowed(sio_listener *l, const sio_remote *allowed);

/* Reloads the allowed set from an authorized_keys-style file (see
 * sio_remote_load); on error the old set stays. Thread: any. */
SIO_API int sio_listener_reload_allowed(sio_listener *l, const char *path);

/* Copies the counters. Thread: any. */
SIO_API void sio_listener_stats_get(const sio_listener *l, sio_listener_stats *st);

/* Stops the listener (its workers are joined), frees sessions not yet
 * accepted; accepted sessions stay valid but can no longer send or
 * receive: they end at once (SIO_ETRUNCATED; their state callbacks run on
 * the calling thread) and the program frees them. Thread: any but a
 * worker (not from a callback), once; not concurrently with other calls
 * on the listener. */
SIO_API void sio_listener_free(sio_listener *l);

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

/* Mutual confirmation of identity (the Go helper): both peers call it over
 * the same transport. It runs a temporary session over T that proves both
 * identities (REMOTE is required), exchanges 32 random bytes each inside it,
 * derives a fresh 32-byte shared key into KEY (BLAKE2b over both public keys
 * and both contributions; a new key every run), closes the session
 * gracefully and leaves T to the caller: descriptors open with their flags
 * restored, and on streams no byte beyond the session's own records read.
 * TIMEOUT_MS bounds each step (-1 = none). Returns 0, or the session's error
 * (e.g. SIO_EAUTH for a wrong identity; KEY is then zeroed). Blocks.
 * Thread: any but a session's I/O thread. */
SIO_API int sio_confirm_identity(const sio_identity *id, const sio_remote *remote, const sio_transport *t,
			 const sio_options *opts, uint8_t key[32], int timeout_ms);

#ifdef __cplusplus
}
#endif
#endif /* SECUREIO_H */
