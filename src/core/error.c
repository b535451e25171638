/* Error strings, state names, the version and library initialisation. */
#include <sodium.h>

#include "secureio.h"

const char *sio_strerror(int err)
{
	switch (err) {
	case SIO_OK: return "success";
	case SIO_EINVAL: return "invalid argument";
	case SIO_ENOMEM: return "out of memory";
	case SIO_EIO: return "I/O error";
	case SIO_ENOENT: return "file not found";
	case SIO_EFORMAT: return "malformed or truncated key file";
	case SIO_EKEYTYPE: return "key is not an Ed25519 key";
	case SIO_EENCRYPTED:
		return "private key is passphrase-protected and no passphrase was given";
	case SIO_EPERM: return "private key or PSK file is accessible by group or others (chmod 600 it)";
	case SIO_EMISMATCH: return "public key does not match the private key";
	case SIO_EEXIST: return "file exists; refusing to overwrite";
	case SIO_ETIMEDOUT: return "timed out";
	case SIO_ECLOSED: return "session is closed";
	case SIO_EAGAIN: return "operation would block; try again";
	case SIO_ETOOBIG: return "message too large";
	case SIO_EAUTH: return "remote identity is not authorised";
	case SIO_EREFUSED: return "remote identity refused by the program";
	case SIO_EANSWERS: return "peers use incompatible key-exchange answers modes";
	case SIO_EDECRYPT: return "too many consecutive packets failed to decrypt";
	case SIO_ELIMIT: return "packet-number limit reached for this key";
	case SIO_ETRUNCATED: return "transport ended without a graceful close (session truncated)";
	case SIO_ESTATE: return "operation not valid in the current session state";
	case SIO_ECRYPTO: return "cryptographic library failure";
	case SIO_EPROTO: return "protocol violation by the peer";
	case SIO_ECLOCK: return "remote timestamp failed the sanity check";
	case SIO_EPEERDEAD: return "peer is not responding (dead-peer timeout)";
	case SIO_ECANCELED: return "operation cancelled";
	case SIO_ENOKEYX:
		return "key exchange timed out without a valid message from the peer (wrong PSK, wrong identity, or no peer)";
	case SIO_ELOST: return "data lost in transit";
	case SIO_EDETACHED: return "session detached after the configured number of messages";
	case SIO_ENOTFILE: return "not a regular file (a directory, FIFO or device)";
	case SIO_EDIRPERM:
		return "identity directory is writable by group or others, or belongs to another user (chmod go-w it; it must be yours or root's)";
	case SIO_EPASSPHRASE: return "wrong passphrase for the private key";
	case SIO_ESIGN:
		return "the identity's signer (ssh-agent or callback) failed or refused to sign";
	case SIO_EAGENT: return "ssh-agent unreachable, or it does not hold the key";
	case SIO_EUNREACH:
		return "the peer is unreachable: nothing listens at its address any more (port unreachable)";
	}
	return "unknown error";
}

const char *sio_version(void)
{
	return SIO_LIB_VERSION;
}

const char *sio_state_name(sio_state st)
{
	switch (st) {
	case SIO_STATE_NEW: return "new";
	case SIO_STATE_INITIALIZATION: return "initialization";
	case SIO_STATE_KEY_EXCHANGING: return "key exchanging";
	case SIO_STATE_NEGOTIATION: return "negotiation";
	case SIO_STATE_ESTABLISHED: return "established";
	case SIO_STATE_CLOSING: return "closing";
	case SIO_STATE_CLOSED: return "closed";
	}
	return "unknown";
}

const char *sio_diag_level_name(int level)
{
	switch (level) {
	case SIO_DIAG_ERROR: return "error";
	case SIO_DIAG_WARN: return "warn";
	case SIO_DIAG_INFO: return "info";
	case SIO_DIAG_DEBUG: return "debug";
	}
	return "?";
}

int sio_init(void)
{
	return sodium_init() < 0 ? SIO_ECRYPTO : 0;
}
