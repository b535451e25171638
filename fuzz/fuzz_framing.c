/* libFuzzer target: the inner message framing parser, fed directly with
 * decrypted-payload bytes (sio_core_rx_frames, core_rx.c) of a core that
 * completed a real handshake. First byte: 0 = established core, 1 = core
 * in CLOSING (after a local close), 2 = the same bytes are parsed twice
 * (close frames then meet a closed core). Checks that the delivered byte
 * count never exceeds the payload and that counters stay consistent. */
#include "fuzz_pair.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t buf[1 << 16];
	fz_ctx r[2] = {{1, 0, 0}, {2, 0, 0}};
	sio_stats st;
	fz_init();
	if (size < 1)
		return 0;
	int mode = data[0] % 3;
	data++;
	size--;
	if (size > sizeof buf)
		size = sizeof buf;
	sio_core *a = fz_core(0, &r[0], 0), *b = fz_core(1, &r[1], 0);
	uint64_t now = fz_handshake(a, b, 1000, NULL);
	if (mode == 1)
		sio_core_close(b, now);
	/* An exact-size heap-like copy so ASan sees reads past the end. */
	uint8_t *p = buf + sizeof buf - size;
	memcpy(p, data, size);
	sio_core_rx_frames(b, now, p, p + size);
	sio_core_stats(b, &st);
	if (st.bytes_received > size || st.messages_received > size)
		abort();
	if (mode == 2)
		sio_core_rx_frames(b, now + 1000, p, p + size);
	sio_core_tick(b, now + 5000000000ull);
	fz_pump(b, a, now + 5000000000ull, NULL);
	sio_core_free(a);
	sio_core_free(b);
	return 0;
}
