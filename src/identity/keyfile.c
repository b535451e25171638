/* Key file formats, in memory: OpenSSH "openssh-key-v1" private keys
 * (PROTOCOL.key), Go secureio PEM blocks, and OpenSSH public key lines /
 * authorized_keys files. No file system access here (see keyfile_io.c), so
 * the fuzzers can drive these parsers directly. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "identity.h"
#include "sshwire.h"
#include "keyfile_crypt.h"

#define OSSH_MAGIC  "openssh-key-v1" /* followed by a NUL byte */
#define OSSH_BEGIN  "-----BEGIN OPENSSH PRIVATE KEY-----"
#define OSSH_END    "-----END OPENSSH PRIVATE KEY-----"
#define KEYTYPE     "ssh-ed25519"
#define MAX_DECODED (64 * 1024)

/* ---- PEM armour -------------------------------------------------------- */

/* libsodium's sodium_base642bin() (1.0.18) maps some bytes >= 0x80 to
 * base64 digits instead of rejecting them (found by fuzz_pubkey), so the
 * alphabet is checked here first. WS allows the PEM line breaks. */
static int b64_clean(const char *s, size_t n, int ws)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    c == '+' || c == '/' || c == '=')
			continue;
		if (ws && (c == ' ' || c == '\t' || c == '\r' || c == '\n'))
			continue;
		return 0;
	}
	return 1;
}

static const char *memfind(const char *h, size_t hlen, const char *n)
{
	size_t nlen = strlen(n);
	if (nlen > hlen)
		return NULL;
	for (size_t i = 0; i + nlen <= hlen; i++)
		if (memcmp(h + i, n, nlen) == 0)
			return h + i;
	return NULL;
}

/* Finds "-----BEGIN LABEL-----" ... "-----END LABEL-----" in TEXT and
 * decodes the base64 body (RFC 7468 headers "Key: value" are skipped) into
 * a sodium_malloc'ed buffer. Returns 0, 1 if the block is absent, or a
 * negative code. */
static int pem_decode(const char *text, size_t len, const char *label, uint8_t **out,
                      size_t *outlen)
{
	char begin[80], end[80];
	snprintf(begin, sizeof begin, "-----BEGIN %s-----", label);
	snprintf(end, sizeof end, "-----END %s-----", label);
	const char *b = memfind(text, len, begin);
	if (!b)
		return 1;
	b += strlen(begin);
	const char *e = memfind(b, len - (size_t)(b - text), end);
	if (!e)
		return SIO_EFORMAT;
	size_t blen = (size_t)(e - b);
	if (blen > MAX_DECODED * 2)
		return SIO_EFORMAT;
	/* copy the body without header lines */
	char *body = sodium_malloc(blen + 1);
	if (!body)
		return SIO_ENOMEM;
	size_t n = 0;
	const char *p = b;
	while (p < e) {
		const char *nl = memchr(p, '\n', (size_t)(e - p));
		const char *le = nl ? nl : e;
		if (!memchr(p, ':', (size_t)(le - p))) {
			memcpy(body + n, p, (size_t)(le - p));
			n += (size_t)(le - p);
		}
		p = nl ? nl + 1 : e;
	}
	body[n] = 0;
	size_t cap = n / 4 * 3 + 3, dlen = 0;
	uint8_t *bin = sodium_malloc(cap ? cap : 1);
	if (!bin) {
		sodium_free(body);
		return SIO_ENOMEM;
	}
	const char *endp = NULL;
	int rc = !b64_clean(body, n, 1) ? -1
	                                : sodium_base642bin(bin, cap, body, n, " \t\r\n", &dlen,
	                                                    &endp, sodium_base64_VARIANT_ORIGINAL);
	if (rc != 0 || endp != body + n) {
		sodium_free(body);
		sodium_free(bin);
		return SIO_EFORMAT;
	}
	sodium_free(body);
	*out = bin;
	*outlen = dlen;
	return 0;
}

/* ---- SSH wire fields (the reader is sshwire.h) ------------------------- */

static int str_is(const uint8_t *s, size_t len, const char *want)
{
	return s && len == strlen(want) && memcmp(s, want, len) == 0;
}

/* Checks an SSH public key blob; 0 and PK, SIO_EKEYTYPE or SIO_EFORMAT. */
static int parse_pubkey_blob(const uint8_t *blob, size_t len, uint8_t pk[32])
{
	struct rd r = {blob, len, 0};
	size_t tl, kl;
	const uint8_t *t = rd_str(&r, &tl);
	if (r.bad)
		return SIO_EFORMAT;
	if (!str_is(t, tl, KEYTYPE))
		return SIO_EKEYTYPE;
	const uint8_t *k = rd_str(&r, &kl);
	if (r.bad || kl != 32 || r.left != 0)
		return SIO_EFORMAT;
	memcpy(pk, k, 32);
	return 0;
}

/* ---- private keys ------------------------------------------------------ */

/* The private section (decrypted if it was encrypted): check integers, one
 * Ed25519 key, its comment, padding 1, 2, 3, ... shorter than a block. A
 * check-integer mismatch in an encrypted section is what a wrong
 * passphrase produces (ssh reports it the same way). */
static int parse_private_section(const uint8_t *p, size_t sl, size_t blocksize, int encrypted,
                                 const uint8_t pk_outer[32], uint8_t sk[64], char *comment,
                                 size_t ccap)
{
	struct rd s = {p, sl, 0};
	uint32_t c1 = rd_u32(&s), c2 = rd_u32(&s);
	if (s.bad)
		return SIO_EFORMAT;
	if (c1 != c2)
		return encrypted ? SIO_EPASSPHRASE : SIO_EFORMAT;
	size_t tl, pkl, skl, coml;
	const uint8_t *type = rd_str(&s, &tl);
	if (s.bad)
		return SIO_EFORMAT;
	if (!str_is(type, tl, KEYTYPE))
		return SIO_EKEYTYPE;
	const uint8_t *pk = rd_str(&s, &pkl);
	const uint8_t *key = rd_str(&s, &skl);
	const uint8_t *com = rd_str(&s, &coml);
	if (s.bad || pkl != 32 || skl != 64 || s.left >= blocksize)
		return SIO_EFORMAT;
	for (size_t i = 0; i < s.left; i++)
		if (s.p[i] != (uint8_t)(i + 1))
			return SIO_EFORMAT;
	if (memcmp(pk, pk_outer, 32) != 0 || memcmp(key + 32, pk, 32) != 0)
		return SIO_EMISMATCH;
	memcpy(sk, key, 64);
	if (comment && ccap) {
		size_t n = coml < ccap - 1 ? coml : ccap - 1;
		if (n)
			memcpy(comment, com, n);
		comment[n] = 0;
	}
	return 0;
}

/* openssh-key-v1 (PROTOCOL.key): cipher, KDF and its options, one public
 * key, the private section (encrypted unless the cipher is "none"), and for
 * an AEAD cipher the tag after it. Every outer field is checked before any
 * passphrase is used, so a truncated file is SIO_EFORMAT, not a "wrong
 * passphrase". PK_OUT (if not NULL) receives the outer public key and
 * *ENCRYPTED whether the section is encrypted, as soon as they are known. */
static int parse_openssh(const uint8_t *bin, size_t len, const struct sio_kf_pass *pw,
                         uint8_t sk[64], uint8_t *pk_out, int *encrypted, char *comment,
                         size_t ccap)
{
	size_t ml = sizeof OSSH_MAGIC; /* includes the NUL */
	if (len < ml || memcmp(bin, OSSH_MAGIC, ml) != 0)
		return SIO_EFORMAT;
	struct rd r = {bin + ml, len - ml, 0};
	size_t cl, kl, ol, pl, sl;
	const uint8_t *cipher = rd_str(&r, &cl);
	const uint8_t *kdf = rd_str(&r, &kl);
	const uint8_t *opts = rd_str(&r, &ol);
	if (r.bad)
		return SIO_EFORMAT;
	const struct sio_kf_cipher *c = NULL;
	const uint8_t *salt = NULL;
	size_t saltlen = 0;
	uint32_t rounds = 0;
	if (str_is(cipher, cl, "none")) {
		if (!str_is(kdf, kl, "none") || ol != 0)
			return SIO_EFORMAT;
	} else {
		c = sio_kf_cipher_find(cipher, cl);
		if (!c || !str_is(kdf, kl, "bcrypt"))
			return SIO_EFORMAT; /* a cipher or KDF ssh-keygen does not write */
		struct rd o = {opts, ol, 0};
		salt = rd_str(&o, &saltlen);
		rounds = rd_u32(&o);
		if (o.bad || o.left != 0 || saltlen == 0 || saltlen > 1024 || rounds == 0)
			return SIO_EFORMAT;
	}
	uint32_t nkeys = rd_u32(&r);
	if (r.bad || nkeys != 1)
		return SIO_EFORMAT;
	const uint8_t *pub = rd_str(&r, &pl);
	const uint8_t *priv = rd_str(&r, &sl);
	size_t blocksize = c ? c->blocksize : 8, authlen = c ? c->authlen : 0;
	if (r.bad || r.left != authlen)
		return SIO_EFORMAT;
	uint8_t pk_outer[32];
	int rc = parse_pubkey_blob(pub, pl, pk_outer);
	if (rc)
		return rc;
	if (sl == 0 || sl % blocksize != 0)
		return SIO_EFORMAT;
	if (pk_out)
		memcpy(pk_out, pk_outer, 32);
	if (encrypted)
		*encrypted = c != NULL;
	if (!c)
		return parse_private_section(priv, sl, 8, 0, pk_outer, sk, comment, ccap);

	if (!pw || !sio_kf_crypt_available())
		return SIO_EENCRYPTED;
	if (rounds > pw->max_rounds)
		return SIO_EFORMAT;
	if (pw->len == 0)
		return SIO_EPASSPHRASE; /* ssh-keygen never encrypts with an empty one */
	size_t kivlen = c->keylen + c->ivlen;
	uint8_t *keyiv = sodium_malloc(kivlen);
	uint8_t *plain = sodium_malloc(sl);
	uint8_t tag[16];
	if (!keyiv || !plain) {
		rc = SIO_ENOMEM;
		goto out;
	}
	memcpy(tag, r.p, authlen);
	rc = sio_bcrypt_pbkdf(pw->p, pw->len, salt, saltlen, keyiv, kivlen, rounds);
	if (rc == 0)
		rc = sio_kf_crypt(c, 0, keyiv, priv, plain, sl, tag);
	if (rc == 0)
		rc = parse_private_section(plain, sl, blocksize, 1, pk_outer, sk, comment, ccap);
out:
	if (keyiv) {
		sodium_memzero(keyiv, kivlen);
		sodium_free(keyiv);
	}
	if (plain) {
		sodium_memzero(plain, sl);
		sodium_free(plain);
	}
	return rc;
}

int sio_keyfile_parse_private_ex(const uint8_t *buf, size_t len, const struct sio_kf_pass *pw,
                                 uint8_t sk[SIO_SECRET_KEY_BYTES], uint8_t *pk, int *encrypted,
                                 char *comment, size_t ccap)
{
	uint8_t *bin = NULL;
	size_t blen = 0;
	if (!buf || !sk)
		return SIO_EINVAL;
	if (encrypted)
		*encrypted = 0;
	if (comment && ccap)
		comment[0] = 0;
	const char *text = (const char *)buf;
	int rc = pem_decode(text, len, "OPENSSH PRIVATE KEY", &bin, &blen);
	if (rc == 0) {
		rc = parse_openssh(bin, blen, pw, sk, pk, encrypted, comment, ccap);
	} else if (rc == 1) {
		rc = pem_decode(text, len, "ED25519 PRIVATE KEY", &bin, &blen);
		if (rc == 0) {
			if (blen == 64) {
				memcpy(sk, bin, 64);
				if (pk)
					memcpy(pk, bin + 32, 32);
			} else {
				rc = SIO_EFORMAT;
			}
		} else if (rc == 1) {
			/* Other PEM private keys: RSA/EC/DSA or PKCS#8 */
			if (memfind(text, len, "-----BEGIN RSA PRIVATE KEY-----") ||
			    memfind(text, len, "-----BEGIN EC PRIVATE KEY-----") ||
			    memfind(text, len, "-----BEGIN DSA PRIVATE KEY-----"))
				rc = memfind(text, len, "Proc-Type: 4,ENCRYPTED") ? SIO_EENCRYPTED
				                                                  : SIO_EKEYTYPE;
			else if (memfind(text, len, "-----BEGIN ENCRYPTED PRIVATE KEY-----"))
				rc = SIO_EENCRYPTED;
			else if (memfind(text, len, "-----BEGIN PRIVATE KEY-----"))
				rc = SIO_EKEYTYPE;
			else
				rc = SIO_EFORMAT;
		}
	}
	if (bin) {
		sodium_memzero(bin, blen);
		sodium_free(bin);
	}
	if (rc)
		sodium_memzero(sk, 64);
	return rc;
}

int sio_keyfile_parse_private(const uint8_t *buf, size_t len, uint8_t sk[SIO_SECRET_KEY_BYTES])
{
	return sio_keyfile_parse_private_ex(buf, len, NULL, sk, NULL, NULL, NULL, 0);
}

/* ---- writing ----------------------------------------------------------- */

static size_t put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
	return 4;
}

static size_t put_str(uint8_t *p, const void *s, size_t n)
{
	put_u32(p, (uint32_t)n);
	memcpy(p + 4, s, n);
	return 4 + n;
}

void sio_keyfile_free_text(char *text, size_t len)
{
	if (!text)
		return;
	sodium_memzero(text, len);
	sodium_free(text);
}

int sio_keyfile_format_private_ex(const uint8_t sk[SIO_SECRET_KEY_BYTES], const char *comment,
                                  uint32_t checkint, const char *cipher_name,
                                  const uint8_t *pass, size_t passlen, unsigned rounds,
                                  char **out, size_t *outlen)
{
	if (!sk || !out || !outlen)
		return SIO_EINVAL;
	if (!comment)
		comment = "";
	size_t cl = strlen(comment);
	if (cl > 1024 || strpbrk(comment, "\r\n"))
		return SIO_EINVAL;
	const struct sio_kf_cipher *c = NULL;
	if (pass && passlen) {
		if (!cipher_name)
			cipher_name = "aes256-ctr"; /* what ssh-keygen writes */
		c = sio_kf_cipher_find((const uint8_t *)cipher_name, strlen(cipher_name));
		if (!c || rounds == 0 || rounds > SIO_KDF_MAX_ROUNDS)
			return SIO_EINVAL;
		if (!sio_kf_crypt_available())
			return SIO_ECRYPTO;
	}
	const char *cname = c ? c->name : "none", *kdfname = c ? "bcrypt" : "none";
	size_t bs = c ? c->blocksize : 8, authlen = c ? c->authlen : 0;
	size_t optlen = c ? 4 + SIO_KDF_SALT_BYTES + 4 : 0;
	uint8_t blob[SIO_PUBKEY_BLOB_BYTES];
	sio_pubkey_blob(sk + 32, blob);
	size_t privlen = 8 + (4 + 11) + (4 + 32) + (4 + 64) + (4 + cl);
	size_t pad = (bs - privlen % bs) % bs;
	privlen += pad;
	size_t binlen = sizeof OSSH_MAGIC + (4 + strlen(cname)) + (4 + strlen(kdfname)) +
	                (4 + optlen) + 4 + (4 + sizeof blob) + (4 + privlen) + authlen;
	uint8_t *bin = sodium_malloc(binlen);
	if (!bin)
		return SIO_ENOMEM;
	size_t n = 0;
	memcpy(bin, OSSH_MAGIC, sizeof OSSH_MAGIC);
	n += sizeof OSSH_MAGIC;
	n += put_str(bin + n, cname, strlen(cname));
	n += put_str(bin + n, kdfname, strlen(kdfname));
	n += put_u32(bin + n, (uint32_t)optlen);
	uint8_t *salt = bin + n + 4;
	if (c) {
		n += put_u32(bin + n, SIO_KDF_SALT_BYTES);
		randombytes_buf(bin + n, SIO_KDF_SALT_BYTES);
		n += SIO_KDF_SALT_BYTES;
		n += put_u32(bin + n, rounds);
	}
	n += put_u32(bin + n, 1);
	n += put_str(bin + n, blob, sizeof blob);
	n += put_u32(bin + n, (uint32_t)privlen);
	uint8_t *priv = bin + n;
	n += put_u32(bin + n, checkint);
	n += put_u32(bin + n, checkint);
	n += put_str(bin + n, KEYTYPE, 11);
	n += put_str(bin + n, sk + 32, 32);
	n += put_str(bin + n, sk, 64);
	n += put_str(bin + n, comment, cl);
	for (size_t i = 0; i < pad; i++)
		bin[n++] = (uint8_t)(i + 1);
	if (c) {
		size_t kivlen = c->keylen + c->ivlen;
		uint8_t *keyiv = sodium_malloc(kivlen);
		int rc = keyiv ? sio_bcrypt_pbkdf(pass, passlen, salt, SIO_KDF_SALT_BYTES, keyiv,
		                                  kivlen, rounds)
		               : SIO_ENOMEM;
		if (rc == 0) /* in place: CTR, CBC, GCM and ChaCha20 allow it */
			rc = sio_kf_crypt(c, 1, keyiv, priv, priv, privlen, bin + n);
		if (keyiv) {
			sodium_memzero(keyiv, kivlen);
			sodium_free(keyiv);
		}
		if (rc) {
			sodium_memzero(bin, binlen);
			sodium_free(bin);
			return rc;
		}
		n += authlen;
	}

	size_t b64len = sodium_base64_ENCODED_LEN(binlen, sodium_base64_VARIANT_ORIGINAL);
	char *b64 = sodium_malloc(b64len);
	size_t cap = sizeof OSSH_BEGIN + sizeof OSSH_END + b64len + b64len / 70 + 4;
	char *txt = sodium_malloc(cap);
	if (!b64 || !txt) {
		sodium_memzero(bin, binlen);
		sodium_free(bin);
		if (b64)
			sodium_free(b64);
		if (txt)
			sodium_free(txt);
		return SIO_ENOMEM;
	}
	sodium_bin2base64(b64, b64len, bin, binlen, sodium_base64_VARIANT_ORIGINAL);
	sodium_memzero(bin, binlen);
	sodium_free(bin);
	size_t blen = strlen(b64), t = 0;
	memcpy(txt, OSSH_BEGIN "\n", sizeof OSSH_BEGIN);
	t += sizeof OSSH_BEGIN;
	for (size_t i = 0; i < blen; i += 70) {
		size_t l = blen - i < 70 ? blen - i : 70;
		memcpy(txt + t, b64 + i, l);
		t += l;
		txt[t++] = '\n';
	}
	memcpy(txt + t, OSSH_END "\n", sizeof OSSH_END + 1);
	t += sizeof OSSH_END;
	sodium_memzero(b64, b64len);
	sodium_free(b64);
	*out = txt;
	*outlen = t;
	return 0;
}

int sio_keyfile_format_private(const uint8_t sk[SIO_SECRET_KEY_BYTES], const char *comment,
                               uint32_t checkint, char **out, size_t *outlen)
{
	return sio_keyfile_format_private_ex(sk, comment, checkint, NULL, NULL, 0, 0, out, outlen);
}

/* ---- public keys ------------------------------------------------------- */

static int is_known_other_type(const char *tok, size_t n)
{
	static const char *const types[] = {"ssh-rsa",   "ssh-dss",        "ecdsa-sha2-",
	                                    "sk-ecdsa-", "sk-ssh-ed25519", "ssh-ed448",
	                                    "rsa-sha2-"};
	for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
		size_t l = strlen(types[i]);
		if (n >= l && memcmp(tok, types[i], l) == 0)
			return 1;
	}
	return 0;
}

/* Options that restrict only what SSH offers and secureio does not have
 * (terminals, forwarding, rc files): enforced by their absence. */
static const char *const vacuous_opts[] = {"restrict",   "no-agent-forwarding", "no-port-forwarding",
                                           "no-pty",     "no-user-rc",          "no-x11-forwarding"};

/* Parses the options field O (N bytes) of an authorized_keys line:
 * from="pattern-list" is kept in FROM (NUL-terminated, unquoted), the
 * options in vacuous_opts are accepted, anything else is refused with its
 * name in ERR. Returns 0 or SIO_EFORMAT. */
static int parse_options(const char *o, size_t n, char *from, size_t fromcap,
                         struct sio_pk_err *err)
{
	size_t i = 0;
	while (i < n) {
		size_t s = i;
		while (i < n && o[i] != '=' && o[i] != ',')
			i++;
		size_t nl = i - s;
		const char *val = NULL;
		size_t vl = 0;
		char vbuf[1024];
		if (i < n && o[i] == '=') {
			i++;
			if (i >= n || o[i] != '"')
				goto bad_value;
			i++;
			while (i < n && o[i] != '"') {
				if (o[i] == '\\' && i + 1 < n && o[i + 1] == '"')
					i++;
				if (vl + 1 >= sizeof vbuf)
					goto bad_value;
				vbuf[vl++] = o[i++];
			}
			if (i >= n)
				goto bad_value;
			i++; /* closing quote */
			vbuf[vl] = 0;
			val = vbuf;
		}
		if (i < n && o[i] != ',')
			goto bad_value;
		if (i < n)
			i++;
		if (err) {
			size_t c = nl < sizeof err->option - 1 ? nl : sizeof err->option - 1;
			memcpy(err->option, o + s, c);
			err->option[c] = 0;
		}
		if (nl == 4 && strncasecmp(o + s, "from", 4) == 0) {
			if (!val || from[0] || vl + 1 > fromcap || !sio_from_list_valid(val)) {
				if (err)
					err->why = from[0] ? "given twice" : "not a valid address pattern list";
				return SIO_EFORMAT;
			}
			memcpy(from, val, vl + 1);
			continue;
		}
		int known = 0;
		for (size_t k = 0; k < sizeof vacuous_opts / sizeof *vacuous_opts; k++)
			if (!val && strlen(vacuous_opts[k]) == nl &&
			    strncasecmp(o + s, vacuous_opts[k], nl) == 0)
				known = 1;
		if (!known) {
			if (err)
				err->why = "not enforced by secureio (only from=\"...\" and SSH-only "
				           "restrictions such as no-pty are)";
			return SIO_EFORMAT;
		}
	}
	return 0;
bad_value:
	if (err) {
		snprintf(err->option, sizeof err->option, "%.*s", (int)(n < 40 ? n : 40), o);
		err->why = "malformed options (a value must be in double quotes)";
	}
	return SIO_EFORMAT;
}

/* One authorized_keys line (no newline). Returns 1 if an Ed25519 key was
 * stored in PK (and its from= list, or "", in FROM), 0 if the line is
 * blank/comment, 2 if it holds another key type, or a negative code. */
static int parse_line(const char *l, size_t n, uint8_t pk[32], char *from, size_t fromcap,
                      struct sio_pk_err *err)
{
	size_t i = 0;
	from[0] = 0;
	while (i < n && (l[i] == ' ' || l[i] == '\t' || l[i] == '\r'))
		i++;
	if (i == n || l[i] == '#')
		return 0;
	/* Tokens separated by blanks; double quotes (options) may hold blanks.
	 * The first token may be the options, then comes the key type. */
	for (int tok = 0; i < n; tok++) {
		size_t s = i;
		int q = 0;
		while (i < n && (q || (l[i] != ' ' && l[i] != '\t'))) {
			if (l[i] == '"' && (i == s || l[i - 1] != '\\'))
				q = !q;
			i++;
		}
		size_t tl = i - s;
		while (i < n && (l[i] == ' ' || l[i] == '\t'))
			i++;
		if (tl == 11 && memcmp(l + s, KEYTYPE, 11) == 0) {
			size_t b = i;
			while (i < n && l[i] != ' ' && l[i] != '\t' && l[i] != '\r')
				i++;
			uint8_t blob[128];
			size_t blen = 0;
			const char *endp = NULL;
			if (i == b || i - b > 160 || !b64_clean(l + b, i - b, 0) ||
			    sodium_base642bin(blob, sizeof blob, l + b, i - b, NULL, &blen, &endp,
			                      sodium_base64_VARIANT_ORIGINAL) != 0 ||
			    endp != l + i)
				return SIO_EFORMAT;
			int rc = parse_pubkey_blob(blob, blen, pk);
			return rc == 0 ? 1 : rc;
		}
		if (is_known_other_type(l + s, tl))
			return 2;
		if (tok > 0)
			break; /* a second token that is no key type: not a key line */
		/* options only in front of a key type; otherwise the line is
		 * no key line at all (reported as such, not as a bad option) */
		size_t k = i;
		while (k < n && l[k] != ' ' && l[k] != '\t')
			k++;
		if (!(k - i == 11 && memcmp(l + i, KEYTYPE, 11) == 0) && !is_known_other_type(l + i, k - i))
			break;
		int rc = parse_options(l + s, tl, from, fromcap, err);
		if (rc)
			return rc;
	}
	return SIO_EFORMAT;
}

struct old_add {
	int (*add)(void *ctx, const uint8_t pk[SIO_PUBLIC_KEY_BYTES]);
	void *ctx;
};

static int old_adder(void *ctx, const uint8_t pk[SIO_PUBLIC_KEY_BYTES], const char *from)
{
	struct old_add *o = ctx;
	(void)from;
	return o->add(o->ctx, pk);
}

int sio_pubkey_parse_all(const char *text, size_t len,
                         int (*add)(void *ctx, const uint8_t pk[SIO_PUBLIC_KEY_BYTES]), void *ctx)
{
	if (!add)
		return SIO_EINVAL;
	struct old_add o = {add, ctx};
	return sio_pubkey_parse_all_ex(text, len, old_adder, &o, NULL);
}

int sio_pubkey_parse_all_ex(const char *text, size_t len,
                            int (*add)(void *ctx, const uint8_t pk[SIO_PUBLIC_KEY_BYTES],
                                       const char *from),
                            void *ctx, struct sio_pk_err *err)
{
	if (!text || !add)
		return SIO_EINVAL;
	if (err)
		memset(err, 0, sizeof *err);
	uint8_t *bin = NULL;
	size_t blen = 0;
	int rc = pem_decode(text, len, "ED25519 PUBLIC KEY", &bin, &blen);
	if (rc == 0) {
		rc = blen == 32 ? add(ctx, bin, NULL) : SIO_EFORMAT;
		sodium_free(bin);
		return rc ? rc : 1;
	}
	if (rc < 0)
		return rc;
	if (memfind(text, len, "PRIVATE KEY-----"))
		return SIO_EFORMAT; /* a private key file given where a public key belongs */
	int found = 0, other = 0, bad = 0;
	size_t p = 0, lineno = 0;
	char from[1024];
	while (p < len) {
		const char *nl = memchr(text + p, '\n', len - p);
		size_t e = nl ? (size_t)(nl - text) : len;
		uint8_t pk[32];
		struct sio_pk_err le;
		memset(&le, 0, sizeof le);
		lineno++;
		rc = parse_line(text + p, e - p, pk, from, sizeof from, &le);
		if (rc == 1) {
			int a = add(ctx, pk, from[0] ? from : NULL);
			if (a)
				return a;
			found++;
		} else if (rc == 2 || rc == SIO_EKEYTYPE) {
			other++;
		} else if (rc < 0) {
			if (!bad && err) {
				*err = le;
				err->line = lineno;
				if (!err->why)
					err->why = "not a valid ssh-ed25519 key line";
			}
			if (!bad)
				bad = rc;
		}
		p = e + 1;
	}
	if (bad)
		return bad; /* a malformed line is an error, not silently skipped */
	if (found)
		return found;
	return other ? SIO_EKEYTYPE : SIO_EFORMAT;
}
