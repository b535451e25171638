/* Reading the SSH wire encoding (RFC 4251 §5: big-endian uint32, and
 * strings as a uint32 length then bytes), shared by the key-file parser
 * (keyfile.c) and the ssh-agent client (agent.c). A reader that ran past
 * its end is marked bad; every later read then fails too, so callers check
 * `bad` once at the end. */
#ifndef SIO_SSHWIRE_H
#define SIO_SSHWIRE_H

#include <stddef.h>
#include <stdint.h>

struct rd {
	const uint8_t *p;
	size_t left;
	int bad;
};

static inline uint32_t rd_u32(struct rd *r)
{
	if (r->bad || r->left < 4) {
		r->bad = 1;
		return 0;
	}
	uint32_t v =
	    (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 | (uint32_t)r->p[2] << 8 | r->p[3];
	r->p += 4;
	r->left -= 4;
	return v;
}

/* A string: its bytes (in the buffer) and *LEN, or NULL and 0 when bad. */
static inline const uint8_t *rd_str(struct rd *r, size_t *len)
{
	uint32_t n = rd_u32(r);
	if (r->bad || n > r->left) {
		r->bad = 1;
		*len = 0;
		return NULL;
	}
	const uint8_t *s = r->p;
	r->p += n;
	r->left -= n;
	*len = n;
	return s;
}

#endif
