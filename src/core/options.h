/* Option defaults shared by the core and the session layer. */
#ifndef SIO_OPTIONS_H
#define SIO_OPTIONS_H

#include "secureio.h"

#define SIO_DEFAULT_SEND_DELAY_NS 50000LL
#define SIO_DEFAULT_MAX_PACKET_DGRAM 1452u
#define SIO_DEFAULT_MAX_PACKET_STREAM 65535u
#define SIO_MIN_PACKET 256u
#define SIO_MAX_PACKET (1u << 20) /* absolute cap on a packet or record */
#define SIO_DEFAULT_REPLAY_WINDOW 4096
#define SIO_MAX_REPLAY_WINDOW (1 << 20)
#define SIO_DEFAULT_MAX_MESSAGE (16u << 20)
#define SIO_DEFAULT_REASSEMBLY (4u << 20)
#define SIO_DEFAULT_PARTIALS 64u
#define SIO_DEFAULT_KX_INTERVAL_NS 60000000000LL
#define SIO_DEFAULT_REKEY_PACKETS (1ull << 30)
#define SIO_MAX_REKEY_PACKETS (1ull << 31)
#define SIO_DEFAULT_KX_RETRY_NS 1000000000LL
#define SIO_DEFAULT_KX_TIMEOUT_NS 60000000000LL
#define SIO_DEFAULT_NEGOTIATION_TIMEOUT_NS 500000000LL
#define SIO_DEFAULT_KEEPALIVE_NS 10000000000LL
#define SIO_MIN_DEAD_PEER_NS 30000000000LL
#define SIO_DEFAULT_ERROR_ON_DECRYPT_FAILS 16
#define SIO_PSK_MIN 16u
#define SIO_PSK_MAX 1024u

/* Resolves every zero ("default") field of IN for a datagram (DATAGRAM != 0)
 * or stream transport into OUT. Out-of-range values are clamped. The PSK
 * pointer is copied as is. IN may equal OUT. Returns 0 or SIO_EINVAL (bad
 * PSK length or answers mode). Thread: any. */
int sio_options_resolve(const sio_options *in, int datagram, sio_options *out);

#endif
