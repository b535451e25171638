/* Byte-order helpers and varints for the wire format (docs/PROTOCOL.md, notation).
 * All multi-byte integers on the wire are little-endian. Varints are
 * LEB128: 7 bits per byte, least significant group first, high bit = more,
 * shortest encoding only. */
#ifndef SIO_WIRE_H
#define SIO_WIRE_H

#include <stddef.h>
#include <stdint.h>

static inline void sio_put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t sio_get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void sio_put_le64(uint8_t *p, uint64_t v)
{
	sio_put_le32(p, (uint32_t)v);
	sio_put_le32(p + 4, (uint32_t)(v >> 32));
}

static inline uint64_t sio_get_le64(const uint8_t *p)
{
	return (uint64_t)sio_get_le32(p) | (uint64_t)sio_get_le32(p + 4) << 32;
}

/* Number of bytes the varint encoding of V takes (1..5 for 32-bit values). */
static inline size_t sio_varint_len(uint64_t v)
{
	size_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

/* Writes V at P (minimal encoding) and returns the byte count. */
static inline size_t sio_varint_put(uint8_t *p, uint64_t v)
{
	size_t n = 0;
	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

/* Reads a varint of at most 32 bits from [P, END). Returns the byte count,
 * or 0 when truncated, longer than 5 bytes, above UINT32_MAX or not minimal
 * (a last byte of zero after a first one: 82 00 for 2, 80 80 00 for 0).
 * Only the shortest encoding of a value is accepted, so every value has
 * exactly one encoding on the wire (docs/PROTOCOL.md, notation). */
static inline size_t sio_varint_get32(const uint8_t *p, const uint8_t *end, uint32_t *out)
{
	uint64_t v = 0;
	size_t n = 0;
	for (;;) {
		if (p + n >= end || n >= 5)
			return 0;
		uint8_t b = p[n];
		v |= (uint64_t)(b & 0x7f) << (7 * n);
		n++;
		if (!(b & 0x80)) {
			if (b == 0 && n > 1)
				return 0; /* a longer encoding than needed */
			break;
		}
	}
	if (v > UINT32_MAX)
		return 0;
	*out = (uint32_t)v;
	return n;
}

#endif /* SIO_WIRE_H */
