/* Documented option defaults (include/secureio.h) and their resolution. */
#include <string.h>

#include "options.h"

static void fill_defaults(sio_options *o, int datagram)
{
	if (o->send_delay_ns == 0)
		o->send_delay_ns = SIO_DEFAULT_SEND_DELAY_NS;
	if (o->max_packet_size == 0 && datagram >= 0)
		o->max_packet_size =
			datagram ? SIO_DEFAULT_MAX_PACKET_DGRAM : SIO_DEFAULT_MAX_PACKET_STREAM;
	if (o->max_packet_size && o->max_packet_size < SIO_MIN_PACKET)
		o->max_packet_size = SIO_MIN_PACKET;
	if (o->max_packet_size > SIO_MAX_PACKET)
		o->max_packet_size = SIO_MAX_PACKET;
	if (o->replay_window == 0)
		o->replay_window = SIO_DEFAULT_REPLAY_WINDOW;
	if (o->replay_window > SIO_MAX_REPLAY_WINDOW)
		o->replay_window = SIO_MAX_REPLAY_WINDOW;
	if (o->fragmentation == 0)
		o->fragmentation = 1;
	if (o->max_message_size == 0)
		o->max_message_size = SIO_DEFAULT_MAX_MESSAGE;
	if (o->max_reassembly_bytes == 0)
		o->max_reassembly_bytes = SIO_DEFAULT_REASSEMBLY;
	if (o->max_partial_messages == 0)
		o->max_partial_messages = SIO_DEFAULT_PARTIALS;
	if (o->max_chain_id_diff == 0)
		o->max_chain_id_diff = 1024;
	o->max_chain_id_diff = (o->max_chain_id_diff + 63) & ~63u;
	if (o->max_chain_id_diff == 0 || o->max_chain_id_diff > (1u << 20))
		o->max_chain_id_diff = 1u << 20;
	if (o->kx_interval_ns <= 0)
		o->kx_interval_ns = SIO_DEFAULT_KX_INTERVAL_NS;
	if (o->kx_rekey_packets == 0)
		o->kx_rekey_packets = SIO_DEFAULT_REKEY_PACKETS;
	if (o->kx_rekey_packets > SIO_MAX_REKEY_PACKETS)
		o->kx_rekey_packets = SIO_MAX_REKEY_PACKETS;
	if (o->kx_retry_ns <= 0)
		o->kx_retry_ns = SIO_DEFAULT_KX_RETRY_NS;
	if (o->kx_timeout_ns <= 0)
		o->kx_timeout_ns = SIO_DEFAULT_KX_TIMEOUT_NS;
	if (o->answers_mode == SIO_ANSWERS_DEFAULT)
		o->answers_mode = SIO_ANSWERS_ANSWER_AND_WAIT;
	if (o->max_time_diff_ns < 0)
		o->max_time_diff_ns = 0;
	if (o->negotiation == 0 && datagram >= 0)
		o->negotiation = datagram ? 1 : -1;
	if (o->negotiation_timeout_ns <= 0)
		o->negotiation_timeout_ns = SIO_DEFAULT_NEGOTIATION_TIMEOUT_NS;
	if (o->keepalive_ns == 0)
		o->keepalive_ns = SIO_DEFAULT_KEEPALIVE_NS;
	if (o->dead_peer_ns == 0) {
		int64_t d = 3 * o->kx_interval_ns;
		o->dead_peer_ns = d < SIO_MIN_DEAD_PEER_NS ? SIO_MIN_DEAD_PEER_NS : d;
	}
	if (o->error_on_decrypt_fails == 0)
		o->error_on_decrypt_fails = SIO_DEFAULT_ERROR_ON_DECRYPT_FAILS;
	if (o->detach_on_decrypt_fails < 0)
		o->detach_on_decrypt_fails = 0;
}

void sio_options_default(sio_options *o)
{
	memset(o, 0, sizeof *o);
	/* max_packet_size and negotiation depend on the transport: left 0 (auto). */
	fill_defaults(o, -1);
}

int sio_options_resolve(const sio_options *in, int datagram, sio_options *out)
{
	sio_options o;
	if (in)
		o = *in;
	else
		memset(&o, 0, sizeof o);
	if (o.psk_len && (o.psk_len < SIO_PSK_MIN || o.psk_len > SIO_PSK_MAX || !o.psk))
		return SIO_EINVAL;
	if (o.answers_mode < SIO_ANSWERS_DEFAULT || o.answers_mode > SIO_ANSWERS_DISABLE)
		return SIO_EINVAL;
	fill_defaults(&o, datagram ? 1 : 0);
	*out = o;
	return 0;
}
