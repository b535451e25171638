/* Writes the seed corpora of fuzz_packet, fuzz_kx, fuzz_framing, fuzz_core
 * and fuzz_listener into
 * DIR/<target>/ (usage: fuzz-gen-corpus DIR, normally fuzz/corpus). Built
 * with -DSIO_FUZZ=ON. The cores are the fuzzers' own deterministic pair
 * (fuzz_pair.h), so captured key-exchange messages are valid inputs for
 * fuzz_kx. fuzz_packet salts its keys per process (so it cannot forge),
 * so there a captured packet is a well-shaped but stale packet; its seeds
 * are mostly programs of operations on packets captured during the run. */
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>

#include "fuzz_pair.h"
#include "listener_int.h"
#include "wire.h"

static const char *root;

static void put(const char *target, const char *name, const uint8_t *d, size_t len)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s", root, target);
	if (mkdir(path, 0755) != 0 && errno != EEXIST) {
		perror(path);
		exit(1);
	}
	snprintf(path, sizeof path, "%s/%s/%s", root, target, name);
	FILE *f = fopen(path, "wb");
	if (!f || fwrite(d, 1, len, f) != len || fclose(f) != 0) {
		perror(path);
		exit(1);
	}
}

/* The first key-exchange packet of the fuzzers' core 0 (with or without
 * the PSK) into OUT (room for 4096 bytes); its length. With INNER, also the
 * plain message inside it (SIO_KX_MSG_LEN bytes). */
static size_t first_kx(int psk, uint8_t *out, uint8_t *inner)
{
	fz_ctx r = {1, 0, 0};
	sio_core *c = fz_core(0, &r, psk);
	struct iovec iov[4];
	size_t n = sio_core_pending(c, 0, iov, 4);
	if (n < 1 || iov[0].iov_len > 4096)
		abort();
	size_t len = iov[0].iov_len;
	memcpy(out, iov[0].iov_base, len);
	if (inner)
		memcpy(inner, c->local_msg, SIO_KX_MSG_LEN);
	sio_core_sent(c, n, 0);
	sio_core_free(c);
	return len;
}

static void kx_seeds(void)
{
	for (int psk = 0; psk < 2; psk++) {
		uint8_t seed[1 + 4096];
		seed[0] = (uint8_t)psk;
		size_t len = first_kx(psk, seed + 1, NULL);
		put("fuzz_kx", psk ? "kx_psk_wire" : "kx_plain", seed, 1 + len);
		if (psk) { /* the plain message, wrapped by the target */
			uint8_t wire[4096];
			seed[0] = 3;
			first_kx(psk, wire, seed + 1);
			put("fuzz_kx", "kx_psk_inner", seed, 1 + SIO_KX_MSG_LEN);
		}
	}
}

static void packet_seeds(void)
{
	for (int psk = 0; psk < 2; psk++) {
		fz_ctx r[2] = {{1, 0, 0}, {2, 0, 0}};
		fz_wire w;
		uint8_t m[64], seed[512];
		size_t n = 0;
		memset(&w, 0, sizeof w);
		sio_core *a = fz_core(0, &r[0], psk), *b = fz_core(1, &r[1], psk);
		uint64_t now = fz_handshake(a, b, 1000, NULL);
		/* The first genuine message fuzz_packet's op 0 (a = 2, b = 4)
		 * would write: seq 0, 16 bytes. Captured here as raw bytes. */
		uint32_t seq = 0, l = 16;
		memcpy(m, &seq, 4);
		memcpy(m + 4, &l, 4);
		for (size_t i = 8; i < l; i++)
			m[i] = (uint8_t)(seq * 31u + (uint32_t)i * 7u + 3u);
		sio_core_write(a, now, SIO_TYPE_READWRITE, m, l, 0);
		sio_core_flush(a, now);
		fz_pump(a, NULL, now, &w);
		if (!w.n || w.len[0] > 255)
			abort();
		seed[n++] = (uint8_t)psk;
		/* op 1 (genuine, lost) then op 5 raw = the captured packet */
		seed[n++] = 0x81; seed[n++] = 1; seed[n++] = 4;
		seed[n++] = 0x85; seed[n++] = (uint8_t)w.len[0]; seed[n++] = 0;
		memcpy(seed + n, w.pkt[0], w.len[0]);
		n += w.len[0];
		/* replay it, flip a byte of it, truncate it */
		seed[n++] = 0x82; seed[n++] = 0; seed[n++] = 0;
		seed[n++] = 0x83; seed[n++] = 0; seed[n++] = 0; seed[n++] = 20;
		seed[n++] = 0x84; seed[n++] = 0; seed[n++] = 30;
		put("fuzz_packet", psk ? "captured_psk" : "captured", seed, n);
		sio_core_free(a);
		sio_core_free(b);
	}
	/* A conversation: traffic both ways, time jumps (timers, renewal),
	 * replays of old packets, third-identity packets, duplicates. */
	static const uint8_t talk[] = {0x00, 0x00, 5, 40, 0x80, 3, 1, 0x06, 0x03, 0xe8,
				       0x80, 200, 2, 0x02, 1, 0, 0x82, 3, 0, 0x42, 0, 0,
				       0xc2, 0, 0, 0x06, 0x27, 0x10, 0x00, 7, 7, 0x87, 1, 0,
				       0x83, 1, 0, 9, 0x04, 0, 12, 0x05, 4, 0, 1, 2, 3, 4};
	put("fuzz_packet", "conversation", talk, sizeof talk);
	uint8_t talk_psk[sizeof talk];
	memcpy(talk_psk, talk, sizeof talk);
	talk_psk[0] = 1;
	put("fuzz_packet", "conversation_psk", talk_psk, sizeof talk_psk);
}

static void framing_seeds(void)
{
	uint8_t f[128];
	size_t n = 0;
	/* mode 0: a data frame with length, a typed data frame, keepalive,
	 * answer, an unknown extension frame, then a last data frame */
	f[n++] = 0;
	f[n++] = SIO_FR_DATA_RW; f[n++] = 3; f[n++] = 'a'; f[n++] = 'b'; f[n++] = 'c';
	f[n++] = SIO_FR_DATA; n += sio_varint_put(f + n, 7); f[n++] = 2; f[n++] = 'x'; f[n++] = 'y';
	f[n++] = SIO_FR_KEEPALIVE;
	f[n++] = SIO_FR_ANSWER;
	f[n++] = SIO_FR_EXT_MIN + 1; f[n++] = 2; f[n++] = 0; f[n++] = 0;
	f[n++] = SIO_FR_DATA_RW | SIO_FR_LAST; f[n++] = 'z'; f[n++] = 'z';
	put("fuzz_framing", "data", f, n);
	n = 0;
	f[n++] = 2; /* parsed twice: close, then data after the close */
	f[n++] = SIO_FR_CLOSE; f[n++] = SIO_FR_DATA_RW; f[n++] = 1; f[n++] = 'q';
	f[n++] = SIO_FR_CLOSE_ACK; f[n++] = SIO_FR_PAD; f[n++] = 0; f[n++] = 0;
	put("fuzz_framing", "close", f, n);
	n = 0;
	f[n++] = 1; /* closing core receives a close ack and a typed message */
	f[n++] = SIO_FR_CLOSE_ACK;
	f[n++] = SIO_FR_DATA | SIO_FR_LAST; n += sio_varint_put(f + n, SIO_TYPE_READWRITE);
	f[n++] = '!';
	put("fuzz_framing", "closing", f, n);
	n = 0;
	f[n++] = 0; /* overlong varints (82 00 = 2, 80 80 00 = 0): malformed */
	f[n++] = SIO_FR_DATA_RW; f[n++] = 1; f[n++] = 'g';
	f[n++] = SIO_FR_DATA_RW; f[n++] = 0x82; f[n++] = 0x00; f[n++] = 'a'; f[n++] = 'b';
	f[n++] = SIO_FR_DATA | SIO_FR_LAST; f[n++] = 0x80; f[n++] = 0x80; f[n++] = 0x00;
	f[n++] = 'c';
	put("fuzz_framing", "overlong", f, n);
}

/* fuzz_core: byte 0 = mode, byte 1 bit 0 = PSK. Mode 1 takes frame bytes
 * (sealed by the target), modes 0 and 2 take 2-byte LE length-prefixed
 * packets; a captured first key-exchange message is a valid packet for
 * mode 2 (the target's cores pin no identity, so any signer is learned). */
static void core_seeds(void)
{
	uint8_t f[64];
	size_t n = 0;
	f[n++] = 1; f[n++] = 0;
	f[n++] = SIO_FR_DATA_RW; f[n++] = 3; f[n++] = 'a'; f[n++] = 'b'; f[n++] = 'c';
	f[n++] = SIO_FR_DATA; n += sio_varint_put(f + n, 9); f[n++] = 1; f[n++] = 'x';
	f[n++] = SIO_FR_KEEPALIVE;
	f[n++] = SIO_FR_CLOSE;
	put("fuzz_core", "frames", f, n);
	f[1] = 1;
	put("fuzz_core", "frames_psk", f, n);
	n = 0; /* overlong and too large varints */
	f[n++] = 1; f[n++] = 0;
	f[n++] = SIO_FR_DATA_RW; f[n++] = 0x82; f[n++] = 0x00; f[n++] = 'a'; f[n++] = 'b';
	f[n++] = SIO_FR_EXT_MIN; f[n++] = 0x81; f[n++] = 0x00; f[n++] = 'e';
	f[n++] = SIO_FR_DATA_RW; f[n++] = 0xff; f[n++] = 0xff; f[n++] = 0xff; f[n++] = 0xff;
	f[n++] = 0x1f;
	put("fuzz_core", "frames_overlong", f, n);
	for (int psk = 0; psk < 2; psk++) {
		uint8_t seed[4 + 4096];
		size_t len = first_kx(psk, seed + 4, NULL);
		for (int mode = 0; mode <= 2; mode += 2) {
			seed[0] = (uint8_t)mode;
			seed[1] = (uint8_t)psk;
			seed[2] = (uint8_t)len;
			seed[3] = (uint8_t)(len >> 8);
			char name[32];
			snprintf(name, sizeof name, "mode%d_kx%s", mode, psk ? "_psk" : "");
			put("fuzz_core", name, seed, 4 + len);
		}
	}
}

/* fuzz_listener: byte 0 = flags (bit 0 under load, 1 session cap reached,
 * 2 allowed set, 3 correct cookie, bits 4-6 half-open count, 7 PSK), then
 * one datagram: mark, connection id, [cookie echo,] packet. */
static void listener_seeds(void)
{
	uint8_t d[2 + SIO_L_PREFIX + 1 + SIO_L_COOKIE_BYTES + 4096];
	static const uint8_t flags[] = {0x00, 0x01, 0x04, 0x09, 0x72, 0x80, 0x88};
	for (size_t i = 0; i < sizeof flags; i++) {
		uint8_t kx[4096];
		size_t len = first_kx(flags[i] >> 7, kx, NULL);
		size_t n = 0;
		d[n++] = flags[i];
		d[n++] = SIO_LISTENER_MARK;
		for (int j = 0; j < SIO_LISTENER_CID_BYTES; j++)
			d[n++] = (uint8_t)(0xa0 + j);
		if (flags[i] & 8) { /* a cookie echo (the target substitutes the right cookie) */
			d[n++] = 0x22;
			memset(d + n, 0x5c, SIO_L_COOKIE_BYTES);
			n += SIO_L_COOKIE_BYTES;
		}
		memcpy(d + n, kx, len);
		n += len;
		char name[32];
		snprintf(name, sizeof name, "kx_flags%02x", flags[i]);
		put("fuzz_listener", name, d, n);
	}
	/* the client side: a cookie reply (mark, id, cookie) */
	size_t n = 0;
	d[n++] = 0;
	d[n++] = SIO_L_COOKIE_MARK;
	for (int j = 0; j < SIO_LISTENER_CID_BYTES; j++)
		d[n++] = (uint8_t)(0xa0 + j);
	memset(d + n, 0x5c, SIO_L_COOKIE_BYTES);
	n += SIO_L_COOKIE_BYTES;
	put("fuzz_listener", "cookie_reply", d, n);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
		return 2;
	}
	root = argv[1];
	mkdir(root, 0755);
	fz_init();
	kx_seeds();
	packet_seeds();
	framing_seeds();
	core_seeds();
	listener_seeds();
	return 0;
}
