/* Test helper: loopback UDP sockets, and client sessions of a listener
 * (sio_listener) over them. Shared by the listener tests and the listener
 * benches (bench/listener), which link sio_testlib for it. */
#ifndef SIO_TEST_LCLIENT_H
#define SIO_TEST_LCLIENT_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

#include "secureio.h"

/* How udp_loopback() prepares its socket before the bind. */
enum {
	UDP_REUSEPORT = 1,    /* SO_REUSEPORT: worker sockets may share the port */
	UDP_RCVBUF_FORCE = 2, /* RCVBUF through SO_RCVBUFFORCE where allowed
			       * (past net.core.rmem_max), else SO_RCVBUF */
	UDP_SNDBUF = 4,       /* SO_SNDBUF of the same size as RCVBUF too */
};

/* A close-on-exec UDP socket bound to 127.0.0.1, on a port the kernel
 * picks. FLAGS: UDP_* above. RCVBUF > 0: its receive buffer size
 * (SO_RCVBUF), 0 leaves the system's. Its address goes to *ADDR unless ADDR
 * is NULL. Returns the descriptor, or -1 (nothing left open). */
int udp_loopback(struct sockaddr_in *addr, int flags, int rcvbuf);

/* The same, bound to the IPv4 address IP (host byte order: any of
 * 127.0.0.0/8 on loopback). */
int udp_loopback_on(struct sockaddr_in *addr, uint32_t ip, int flags, int rcvbuf);

/* The options of a usual listener client: zero but listener_peer, and the
 * key exchange resent every 200 ms (a first message lost on a busy
 * loopback is sent again soon, not after the default delay). */
void lclient_options(sio_options *o);

/* *C: a client session of identity ID, pinning the listener's key SRV, over
 * the UDP socket FD sending to the listener at SA (SALEN bytes, IPv4 or
 * IPv6). The session closes FD when freed; if it cannot be made, FD is
 * closed here. O: its options (NULL: lclient_options()). Not started, so
 * handlers can be set first. Returns 0 or a negative SIO_E code. */
int lclient_new(sio_session **c, const sio_identity *id, const sio_remote *srv, int fd, const void *sa,
		size_t salen, const sio_options *o);

#endif
