/* Private interface of src/identity/agent.c, the ssh-agent client (the agent
 * protocol, draft-miller-ssh-agent): the reply parsers, pure so that
 * fuzz/fuzz_agent.c drives them directly. */
#ifndef SIO_AGENT_H
#define SIO_AGENT_H

#include <stddef.h>
#include <stdint.h>

#define SIO_AGENT_FAILURE 5
#define SIO_AGENTC_REQUEST_IDENTITIES 11
#define SIO_AGENT_IDENTITIES_ANSWER 12
#define SIO_AGENTC_SIGN_REQUEST 13
#define SIO_AGENT_SIGN_RESPONSE 14
#define SIO_AGENT_MAX_REPLY (256 * 1024)

/* An SSH_AGENT_IDENTITIES_ANSWER (MSG: type byte and contents, LEN bytes,
 * without the length prefix). With WANT set: 0 if that Ed25519 key is
 * listed; with WANT NULL: 0 and the first Ed25519 key in PK_OUT. Keys of
 * other types are skipped. SIO_EAGENT when absent (or the agent answered
 * SSH_AGENT_FAILURE), SIO_EPROTO when malformed. */
int sio_agent_parse_identities(const uint8_t *msg, size_t len, const uint8_t *want,
                               uint8_t pk_out[32]);

/* An SSH_AGENT_SIGN_RESPONSE holding an ssh-ed25519 signature: 0 and the
 * 64 bytes in SIG; SIO_ESIGN for SSH_AGENT_FAILURE (refused, key gone),
 * SIO_EPROTO when malformed. */
int sio_agent_parse_sign(const uint8_t *msg, size_t len, uint8_t sig[64]);

#endif
