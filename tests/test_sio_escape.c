/* The terminal escaping of `sio listen --multi` (tools/escape.c): every
 * control a terminal acts on becomes \xNN, a backslash \\, TAB and
 * printable text (well-formed UTF-8 in a UTF-8 locale) pass; and the bytes
 * can always be recovered from the text. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "../tools/escape.c"

static void esc(const char *in, size_t len, int utf8, const char *want)
{
	char out[4 * 64 + 1];
	CHECK(len <= 64);
	size_t n = cli_escape((const uint8_t *)in, len, utf8, out);
	if (n != strlen(want) || strcmp(out, want) != 0)
		check_fail(__FILE__, __LINE__, "escape(utf8=%d) gave '%s', want '%s'", utf8, out, want);
}

#define ESC(lit, utf8, want) esc(lit, sizeof(lit) - 1, utf8, want)

/* Inverse of cli_escape, for the round trip. */
static size_t unescape(const char *s, uint8_t *out)
{
	size_t n = 0;
	while (*s) {
		if (s[0] == '\\' && s[1] == '\\') {
			out[n++] = '\\';
			s += 2;
		} else if (s[0] == '\\' && s[1] == 'x') {
			char h[3] = {s[2], s[3], 0};
			out[n++] = (uint8_t)strtoul(h, NULL, 16);
			s += 4;
		} else {
			out[n++] = (uint8_t)*s++;
		}
	}
	return n;
}

int main(void)
{
	for (int u = 0; u <= 1; u++) {
		ESC("hello, world", u, "hello, world");
		ESC("", u, "");
		ESC("a\tb", u, "a\tb"); /* TAB stays */
		/* C0 controls, DEL */
		ESC("\x1b[2Kfake", u, "\\x1b[2Kfake");
		ESC("x\ry\nz", u, "x\\x0dy\\x0az");
		ESC("ab\b\b", u, "ab\\x08\\x08");
		ESC("\v\f\x7f", u, "\\x0b\\x0c\\x7f");
		ESC("\x00\x01\x1f", u, "\\x00\\x01\\x1f");
		/* a backslash is doubled: "\x1b" typed by the peer stays text */
		ESC("\\x1b", u, "\\\\x1b");
		/* raw 8-bit C1 (CSI 0x9b), and any byte that is not UTF-8 */
		ESC("\x9b" "2J", u, "\\x9b2J");
		ESC("\x80\x9f\xff", u, "\\x80\\x9f\\xff");
		/* C1 controls encoded in UTF-8 (U+009B CSI, U+0085 NEL) */
		ESC("\xc2\x9b" "2J\xc2\x85", u, "\\xc2\\x9b2J\\xc2\\x85");
		/* line/paragraph separators and bidirectional overrides */
		ESC("\xe2\x80\xa8\xe2\x80\xae", u, "\\xe2\\x80\\xa8\\xe2\\x80\\xae");
		ESC("\xe2\x81\xa6", u, "\\xe2\\x81\\xa6");
	}
	/* printable UTF-8 passes in a UTF-8 locale, and only there */
	ESC("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91", 1, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\x91");
	ESC("caf\xc3\xa9", 0, "caf\\xc3\\xa9");
	ESC("\xc3\x9b", 1, "\xc3\x9b"); /* U+00DB: its second byte is 0x9b, but inside a character */
	/* malformed UTF-8: each byte escaped */
	ESC("\xc0\xaf", 1, "\\xc0\\xaf");             /* overlong '/' */
	ESC("\xe0\x80\xaf", 1, "\\xe0\\x80\\xaf");     /* overlong, 3 bytes */
	ESC("\xed\xa0\x80", 1, "\\xed\\xa0\\x80");     /* surrogate U+D800 */
	ESC("\xf4\x90\x80\x80", 1, "\\xf4\\x90\\x80\\x80"); /* above U+10FFFF */
	ESC("\xe2\x82", 1, "\\xe2\\x82");             /* cut short */
	ESC("\xe2\x82x", 1, "\\xe2\\x82x");
	ESC("\xc3\x1b", 1, "\\xc3\\x1b");

	/* every byte string comes back from its escaped form, and the
	 * escaped form holds no control byte and (in a C locale) no 8-bit byte */
	uint32_t x = 12345;
	for (int round = 0; round < 20000; round++) {
		uint8_t in[32], back[32];
		char out[4 * 32 + 1];
		size_t len = round % 32;
		for (size_t i = 0; i < len; i++) {
			x = x * 1103515245u + 12345u;
			in[i] = (uint8_t)(x >> 16);
		}
		int u = round & 1;
		size_t n = cli_escape(in, len, u, out);
		CHECK_EQ(strlen(out), n);
		CHECK(n <= 4 * len);
		for (size_t i = 0; i < n; i++) {
			uint8_t b = (uint8_t)out[i];
			CHECK((b >= 0x20 && b != 0x7f) || b == '\t');
			if (!u)
				CHECK(b < 0x80);
		}
		CHECK_EQ(unescape(out, back), len);
		CHECK(memcmp(in, back, len) == 0);
	}
	return check_done("test_sio_escape");
}
