/* Escaping of peer-controlled text before it reaches a terminal (the lines
 * `sio listen --multi` prints). Pure: no system calls, tested by
 * tests/test_sio_escape.c; the rule is in docs/SIO.md ("Terminal safety").
 *
 * A byte or character a terminal could act on is written as \xNN (two
 * lowercase hex digits per byte); a backslash is written as \\, so every
 * backslash in the output starts an escape and the original bytes can be
 * recovered. TAB and printable text pass unchanged. */
#include "cli.h"

static const char hexd[] = "0123456789abcdef";

static char *put_hex(char *o, uint8_t b)
{
	*o++ = '\\';
	*o++ = 'x';
	*o++ = hexd[b >> 4];
	*o++ = hexd[b & 15];
	return o;
}

/* Length of the well-formed UTF-8 sequence at P (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF) and its code point, or 0. */
static size_t utf8_seq(const uint8_t *p, size_t n, uint32_t *cp)
{
	uint8_t b = p[0];
	size_t len;
	uint32_t v, min;
	if (b >= 0xc2 && b <= 0xdf) {
		len = 2, v = b & 0x1f, min = 0x80;
	} else if (b >= 0xe0 && b <= 0xef) {
		len = 3, v = b & 0x0f, min = 0x800;
	} else if (b >= 0xf0 && b <= 0xf4) {
		len = 4, v = b & 0x07, min = 0x10000;
	} else {
		return 0; /* ASCII is handled by the caller; 0x80-0xc1, 0xf5-0xff never lead */
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		v = v << 6 | (p[i] & 0x3f);
	}
	if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
		return 0;
	*cp = v;
	return len;
}

/* Characters that act on a terminal or on how a line reads although they
 * are well-formed: C1 controls, the line and paragraph separators, and the
 * bidirectional embeddings, overrides and isolates (they reorder what
 * follows them on the line). */
static int unsafe_cp(uint32_t cp)
{
	return (cp >= 0x80 && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029 ||
	       (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

size_t cli_escape(const uint8_t *in, size_t len, int utf8, char *out)
{
	char *o = out;
	size_t i = 0;
	while (i < len) {
		uint8_t b = in[i];
		if (b == '\\') {
			*o++ = '\\';
			*o++ = '\\';
			i++;
		} else if (b == '\t' || (b >= 0x20 && b < 0x7f)) {
			*o++ = (char)b;
			i++;
		} else if (b < 0x80) {
			o = put_hex(o, b); /* C0 controls and DEL */
			i++;
		} else {
			uint32_t cp = 0;
			size_t k = utf8 ? utf8_seq(in + i, len - i, &cp) : 0;
			if (k && !unsafe_cp(cp)) {
				for (size_t j = 0; j < k; j++)
					*o++ = (char)in[i + j];
			} else {
				/* not UTF-8 here (or a raw 8-bit byte, C1 included),
				 * or an unsafe character: each byte of it escaped */
				if (!k)
					k = 1;
				for (size_t j = 0; j < k; j++)
					o = put_hex(o, in[i + j]);
			}
			i += k;
		}
	}
	*o = 0;
	return (size_t)(o - out);
}
