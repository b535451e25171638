/* Private interface of the identity module (src/identity/identity.c, src/identity/keyfile.c,
 * src/identity/keyfile_io.c) for the session layer, the tests and the fuzzers. */
#ifndef SIO_IDENTITY_H
#define SIO_IDENTITY_H

#include <stddef.h>
#include <stdint.h>

#include "secureio.h"

/* The 64-byte libsodium Ed25519 secret key (seed || public key) of ID, or
 * NULL for an identity whose key is held by an external signer. Signing
 * goes through sio_identity_sign. Valid until sio_identity_free(ID).
 * Thread: any. */
const uint8_t *sio_identity_secret_key(const sio_identity *id);

/* Signs MSG with ID's key: locally, or through its external signer, whose
 * signature is then verified against the public key (a signer answering
 * with another key's signature fails). Returns 0, the signer's negative code,
 * or SIO_ESIGN; SIG is zeroed on failure. May block as long as the signer
 * does. Thread: any (a signer callback may thus run on several threads at
 * once). */
int sio_identity_sign(const sio_identity *id, uint8_t sig[64], const uint8_t *msg, size_t len);

/* 1 if ID signs through an external signer (no secret key here). */
int sio_identity_is_external(const sio_identity *id);

/* Creates an identity from a 64-byte libsodium secret key; fails with
 * SIO_EMISMATCH if its public half is not the one derived from its seed. */
int sio_identity_from_secret(sio_identity **out, const uint8_t sk[SIO_SECRET_KEY_BYTES]);

/* Take one more reference (released by sio_identity_free/sio_remote_free,
 * which free on the last): sessions and listeners hold one while they use
 * the object. Return their argument (NULL stays NULL). Thread: any. */
sio_identity *sio_identity_ref(const sio_identity *id);
sio_remote *sio_remote_ref(const sio_remote *r);

/* Creates an empty remote key set. */
int sio_remote_new(sio_remote **out);

/* Parses a private key file held in memory (OpenSSH openssh-key-v1 or PEM
 * "ED25519 PRIVATE KEY") into SK (64 bytes, libsodium layout). Returns 0,
 * SIO_EFORMAT, SIO_EKEYTYPE, SIO_EENCRYPTED or SIO_EMISMATCH. On error SK is
 * wiped. Thread: any. */
int sio_keyfile_parse_private(const uint8_t *buf, size_t len, uint8_t sk[SIO_SECRET_KEY_BYTES]);

/* Formats SK as an OpenSSH openssh-key-v1 PEM text (NUL-terminated, ends
 * with a newline) into a sodium_malloc'ed buffer the caller frees with
 * sio_keyfile_free_text(). CHECKINT is the check integer to store. */
int sio_keyfile_format_private(const uint8_t sk[SIO_SECRET_KEY_BYTES], const char *comment,
                               uint32_t checkint, char **out, size_t *outlen);
void sio_keyfile_free_text(char *text, size_t len);

/* A passphrase for the parser: LEN bytes at P, and the highest bcrypt round
 * count to spend on it (SIO_KDF_MAX_ROUNDS; the fuzzers use less). */
struct sio_kf_pass {
	const uint8_t *p;
	size_t len;
	unsigned max_rounds;
};

/* sio_keyfile_parse_private with a passphrase (PW NULL: an encrypted key is
 * SIO_EENCRYPTED). PK (if not NULL) receives the public key, known without
 * the passphrase, even when SIO_EENCRYPTED or SIO_EPASSPHRASE is returned;
 * *ENCRYPTED (if not NULL) says whether the key is passphrase-protected;
 * COMMENT (CCAP bytes, if not NULL) the key's comment, NUL-terminated and
 * cut to fit. Returns 0, SIO_EFORMAT, SIO_EKEYTYPE, SIO_EENCRYPTED,
 * SIO_EPASSPHRASE, SIO_EMISMATCH, SIO_ENOMEM. Thread: any. */
int sio_keyfile_parse_private_ex(const uint8_t *buf, size_t len, const struct sio_kf_pass *pw,
                                 uint8_t sk[SIO_SECRET_KEY_BYTES], uint8_t *pk, int *encrypted,
                                 char *comment, size_t ccap);

/* sio_keyfile_format_private, encrypted with PASS (PASSLEN > 0) under
 * CIPHER_NAME (NULL: aes256-ctr) and a bcrypt KDF of ROUNDS rounds with a
 * fresh random salt; PASS NULL or empty writes an unencrypted key. */
int sio_keyfile_format_private_ex(const uint8_t sk[SIO_SECRET_KEY_BYTES], const char *comment,
                                  uint32_t checkint, const char *cipher_name,
                                  const uint8_t *pass, size_t passlen, unsigned rounds,
                                  char **out, size_t *outlen);

/* Parses public keys from memory: "ssh-ed25519 BASE64 [comment]" lines
 * (authorized_keys style) or a PEM "ED25519 PUBLIC KEY" block. Each key is
 * passed to ADD (stops on a nonzero return, which is returned). Returns the
 * number of Ed25519 keys found (>= 1), or SIO_EKEYTYPE when only keys of
 * other types were found, SIO_EFORMAT when none at all. Thread: any. */
int sio_pubkey_parse_all(const char *text, size_t len,
                         int (*add)(void *ctx, const uint8_t pk[SIO_PUBLIC_KEY_BYTES]), void *ctx);

/* Where a key list was refused: 1-based LINE, the OPTION named (or the
 * start of the options), and WHY (static text). */
struct sio_pk_err {
	size_t line;
	char option[64];
	const char *why;
};

/* sio_pubkey_parse_all, giving ADD each key's from="..." pattern list (NULL
 * when the line has none) and, on SIO_EFORMAT, where and why in ERR (may
 * be NULL). Options other than from= and the SSH-only restrictions
 * (restrict, no-pty, no-*-forwarding, no-user-rc) refuse the file. */
int sio_pubkey_parse_all_ex(const char *text, size_t len,
                            int (*add)(void *ctx, const uint8_t pk[SIO_PUBLIC_KEY_BYTES],
                                       const char *from),
                            void *ctx, struct sio_pk_err *err);

/* src/identity/addrmatch.c: sshd's from= pattern lists, matched against IP
 * addresses. _valid: 1 if LIST parses (non-empty patterns, valid CIDR
 * blocks). _match: 1 if the address SA is allowed by LIST (a positive
 * pattern matches and no negated one does); never for non-IP addresses. */
#include <sys/socket.h>
int sio_from_list_valid(const char *list);
int sio_from_list_match(const char *list, const struct sockaddr *sa, socklen_t salen);

/* Remote sets with from= restrictions (keys added by sio_remote_add have
 * none). sio_remote_add_rule adds PK with FROM (NULL: unrestricted).
 * sio_remote_allows: 1 if PK is in R and some line of it allows SA (a line
 * without from=, or whose list matches). sio_remote_has_rules: 1 if any
 * key is restricted. sio_remote_copy: a deep copy. */
int sio_remote_add_rule(sio_remote *r, const uint8_t pk[SIO_PUBLIC_KEY_BYTES], const char *from);
int sio_remote_allows(const sio_remote *r, const uint8_t pk[SIO_PUBLIC_KEY_BYTES],
                      const struct sockaddr *sa, socklen_t salen);
int sio_remote_has_rules(const sio_remote *r);
int sio_remote_copy(sio_remote **out, const sio_remote *in);

/* The SSH wire blob of an Ed25519 public key: string "ssh-ed25519", string pk. */
#define SIO_PUBKEY_BLOB_BYTES (4 + 11 + 4 + 32)
void sio_pubkey_blob(const uint8_t pk[SIO_PUBLIC_KEY_BYTES], uint8_t blob[SIO_PUBKEY_BLOB_BYTES]);

#endif
