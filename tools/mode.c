/* The mode announcement of `sio` (docs/SIO.md, "Mode announcement"): at the
 * start of a session each side says, on the control channel, how it will use
 * the session, so that two sides that cannot understand each other (stream
 * against --lines, other channels, --multi against a plain peer, both
 * --send-only) stop at once instead of mixing framing into the output. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

void cli_mode_of(const struct cli_opts *o, int hub, struct cli_mode *m)
{
	memset(m, 0, sizeof *m);
	m->version = CLI_HELLO_VERSION;
	m->mode = o->lines || hub ? CLI_MODE_LINES : CLI_MODE_STREAM;
	m->flags = (uint8_t)((o->multi ? CLI_HF_MULTI : 0) | (hub ? CLI_HF_HUB : 0) |
	                     (o->send_only ? CLI_HF_NO_RECV : 0) |
	                     (o->recv_only ? CLI_HF_NO_SEND : 0));
	m->type = o->have_channel ? o->channel : SIO_TYPE_READWRITE;
}

void cli_hello_encode(const struct cli_mode *m, uint8_t f[CLI_HELLO_LEN])
{
	f[0] = CLI_HELLO;
	f[1] = m->version;
	f[2] = m->mode;
	f[3] = m->flags;
	f[4] = (uint8_t)(m->type >> 24);
	f[5] = (uint8_t)(m->type >> 16);
	f[6] = (uint8_t)(m->type >> 8);
	f[7] = (uint8_t)m->type;
}

int cli_hello_decode(const uint8_t *f, size_t len, struct cli_mode *m)
{
	/* later versions may append fields: read the first eight bytes */
	if (len < CLI_HELLO_LEN || f[0] != CLI_HELLO || f[1] < 1)
		return -1;
	m->version = f[1];
	m->mode = f[2];
	m->flags = f[3];
	m->type = (uint32_t)f[4] << 24 | (uint32_t)f[5] << 16 | (uint32_t)f[6] << 8 | f[7];
	return 0;
}

void cli_mode_text(const struct cli_mode *m, char *out, size_t outlen)
{
	char ch[48];
	if (m->type == SIO_TYPE_READWRITE)
		snprintf(ch, sizeof ch, "the default channel");
	else if (m->type <= SIO_CHANNEL_MAX)
		snprintf(ch, sizeof ch, "channel %u", m->type);
	else
		snprintf(ch, sizeof ch, "type 0x%08x", m->type);
	const char *mode = m->mode == CLI_MODE_STREAM  ? "stream mode"
	                   : m->mode == CLI_MODE_LINES ? "--lines mode"
	                                               : "an unknown mode";
	snprintf(out, outlen, "%s on %s%s%s%s", mode, ch,
	         m->flags & CLI_HF_HUB ? ", listen --multi"
	         : m->flags & CLI_HF_MULTI ? ", --multi"
	                                   : "",
	         m->flags & CLI_HF_NO_RECV ? ", --send-only" : "",
	         m->flags & CLI_HF_NO_SEND ? ", --recv-only" : "");
}

int cli_mode_check(const struct cli_mode *ours, const struct cli_mode *theirs)
{
	if (ours->mode != theirs->mode || ours->type != theirs->type)
		return -1;
	if (theirs->mode != CLI_MODE_STREAM && theirs->mode != CLI_MODE_LINES)
		return -1;
	/* a hub talks to --multi clients only, and a --multi client to a hub */
	int our_hub = !!(ours->flags & CLI_HF_HUB), their_hub = !!(theirs->flags & CLI_HF_HUB);
	int our_multi = !!(ours->flags & CLI_HF_MULTI), their_multi = !!(theirs->flags & CLI_HF_MULTI);
	if (our_hub ? !their_multi || their_hub : their_hub ? !our_multi : our_multi || their_multi)
		return -1;
	/* someone must receive what is sent: both --send-only or both
	 * --recv-only leave nothing to do */
	uint8_t dir = CLI_HF_NO_RECV | CLI_HF_NO_SEND;
	if ((ours->flags & dir) && (ours->flags & dir) == (theirs->flags & dir))
		return -1;
	return 0;
}
