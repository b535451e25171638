/* Private interface of src/identity/keyfile_crypt.c: the pieces OpenSSH uses to
 * protect a private key file with a passphrase (bcrypt_pbkdf and the
 * ciphers ssh-keygen -Z offers). Used by keyfile.c, the tests and fuzzers. */
#ifndef SIO_KEYFILE_CRYPT_H
#define SIO_KEYFILE_CRYPT_H

#include <stddef.h>
#include <stdint.h>

/* Highest bcrypt round count we accept when reading: a file naming 2^32-1
 * rounds would otherwise keep the reader busy for years. ssh-keygen's
 * default is 16; 65536 takes about an hour on a 2020s core. */
#define SIO_KDF_MAX_ROUNDS 65536u
#define SIO_KDF_DEFAULT_ROUNDS 16u
#define SIO_KDF_SALT_BYTES 16u

/* One cipher of the openssh-key-v1 format. */
struct sio_kf_cipher {
	const char *name;    /* "aes256-ctr", ... */
	unsigned keylen;     /* bytes of key */
	unsigned ivlen;      /* bytes of IV (bcrypt_pbkdf yields keylen + ivlen) */
	unsigned blocksize;  /* the private section is padded to a multiple of it */
	unsigned authlen;    /* tag bytes that follow the encrypted section (AEAD) */
};

/* The cipher named NAME (LEN bytes, not NUL-terminated), or NULL. */
const struct sio_kf_cipher *sio_kf_cipher_find(const uint8_t *name, size_t len);

/* 1 if this build can use ciphers and the bcrypt KDF (they need OpenSSL's
 * libcrypto: AES and the Blowfish block function), else 0. */
int sio_kf_crypt_available(void);

/* OpenBSD's bcrypt_pbkdf: KEYLEN bytes (1..1024) from PASS and SALT (both
 * non-empty) with ROUNDS (>= 1) rounds. 0, SIO_EINVAL, SIO_ENOMEM or
 * SIO_ECRYPTO (built without OpenSSL). Thread: any. */
int sio_bcrypt_pbkdf(const uint8_t *pass, size_t passlen, const uint8_t *salt, size_t saltlen,
                     uint8_t *key, size_t keylen, unsigned rounds);

/* Encrypts (ENC=1) or decrypts (ENC=0) LEN bytes (a multiple of the block
 * size) from IN to OUT with C, KEYIV = key || IV as bcrypt_pbkdf made them.
 * For an AEAD cipher TAG holds authlen bytes: written when encrypting,
 * checked when decrypting (SIO_EPASSPHRASE when it does not match; OUT is
 * then wiped). Returns 0, SIO_EPASSPHRASE, SIO_ECRYPTO. Thread: any. */
int sio_kf_crypt(const struct sio_kf_cipher *c, int enc, const uint8_t *keyiv, const uint8_t *in,
                 uint8_t *out, size_t len, uint8_t *tag);

#endif
