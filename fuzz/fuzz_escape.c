/* libFuzzer target: the terminal escaping of `sio listen --multi`
 * (tools/escape.c). Properties checked on every input, in both modes (C
 * locale, UTF-8 locale):
 *  - no crash, no read or write out of bounds (ASan);
 *  - the output is at most 4 bytes per input byte and NUL-terminated;
 *  - it holds no C0 control but TAB, no DEL, and in the C mode no byte
 *    >= 0x80; in the UTF-8 mode no C1 control (0xc2 0x80-0x9f) and no
 *    byte outside a well-formed sequence;
 *  - undoing the escapes gives the input back. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../tools/escape.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 4096)
		return 0;
	char *out = malloc(4 * size + 1);
	uint8_t *back = malloc(size + 1);
	for (int utf8 = 0; utf8 <= 1; utf8++) {
		size_t n = cli_escape(data, size, utf8, out);
		if (n > 4 * size || out[n] != 0 || strlen(out) != n)
			abort();
		for (size_t i = 0; i < n;) {
			uint8_t b = (uint8_t)out[i];
			if ((b < 0x20 && b != '\t') || b == 0x7f || (!utf8 && b >= 0x80))
				abort();
			if (b >= 0x80) {
				uint32_t cp;
				size_t k = utf8_seq((const uint8_t *)out + i, n - i, &cp);
				if (!k || unsafe_cp(cp))
					abort();
				i += k;
			} else {
				i++;
			}
		}
		size_t m = 0;
		for (size_t i = 0; i < n;) {
			if (out[i] == '\\' && out[i + 1] == '\\') {
				back[m++] = '\\';
				i += 2;
			} else if (out[i] == '\\' && out[i + 1] == 'x') {
				char h[3] = {out[i + 2], out[i + 3], 0};
				back[m++] = (uint8_t)strtoul(h, NULL, 16);
				i += 4;
			} else if (out[i] == '\\') {
				abort(); /* a lone backslash: ambiguous */
			} else {
				back[m++] = (uint8_t)out[i++];
			}
		}
		if (m != size || (size && memcmp(back, data, size) != 0))
			abort();
	}
	free(out);
	free(back);
	return 0;
}
