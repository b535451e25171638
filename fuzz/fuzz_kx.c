/* libFuzzer target: key-exchange messages. First byte: bit 0 = PSK.
 * The rest is one candidate key-exchange message; it goes through the
 * message parser and signature check directly (plain form), through the
 * PSK unwrapping, and finally into a fresh core that is waiting for its
 * peer's key exchange (the full acceptance path). First byte bit 1 (with
 * PSK): the input is a plain message that the target wraps with the right
 * PSK key first, so mutations reach the parser behind the PSK layer. A message that parses
 * and verifies must carry the signer's key; nothing may crash or leak. */
#include "fuzz_pair.h"
#include "kx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t m[SIO_KX_MSG_LEN], in[4096];
	static sio_psk_keys pk;
	static int derived;
	fz_ctx r = {7, 0, 0};
	sio_kx_fields f;
	fz_init();
	if (!derived) {
		sio_psk_derive(&pk, fz_psk, sizeof fz_psk);
		derived = 1;
	}
	if (size < 1)
		return 0;
	int psk = data[0] & 1;
	data++;
	size--;
	if (size > sizeof in)
		size = sizeof in;

	/* Plain parser and verifier on exactly one message worth of bytes. */
	if (size >= SIO_KX_MSG_LEN) {
		memcpy(m, data, SIO_KX_MSG_LEN);
		if (sio_kx_parse(m, &f) == 0)
			(void)sio_kx_verify(m);
	}
	/* PSK unwrapping of any length. */
	if (sio_kx_unwrap(m, data, size, pk.kx_key) == 0 && sio_kx_parse(m, &f) == 0)
		(void)sio_kx_verify(m);

	/* Whole acceptance path: a core in key exchange receives the bytes. */
	sio_core *c = fz_core(1, &r, psk);
	size_t len = size;
	if (psk && (data[-1] & 2) && size >= SIO_KX_MSG_LEN) {
		uint8_t nonce[24] = {1};
		memcpy(m, data, SIO_KX_MSG_LEN);
		len = sio_kx_wrap(in, m, pk.kx_key, nonce);
	} else {
		memcpy(in, data, size);
	}
	sio_core_recv(c, 1000, in, len);
	sio_core_tick(c, 2000000000ull);
	struct iovec iov[8];
	sio_core_sent(c, sio_core_pending(c, 2000000000ull, iov, 8), 0);
	sio_core_free(c);
	return 0;
}
