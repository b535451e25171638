/*
 * I/O layer (layer 2 of docs/ARCHITECTURE.md): moves whole packets over a
 * caller-opened transport, see docs/TRANSPORT.md.
 *
 *  - datagram sockets (UDP, UNIX dgram, UNIX seqpacket): one packet per
 *    datagram, batched with sendmmsg/recvmmsg;
 *  - stream descriptors (TCP, UNIX stream, pipes, ttys, ...): each packet is a
 *    record with a 4-byte big-endian length prefix, so split and joined
 *    writes work; writes are batched with writev/sendmsg;
 *  - custom callbacks (sio_transport.send/recv/poll_fd), datagram or stream.
 *
 * Descriptors are switched to O_NONBLOCK (their old flags are restored when
 * the transport is closed without closing them). Nothing here blocks. Not
 * thread-safe, with one exception: the sending side (sio_tp_send,
 * sio_tp_flush: fields w*, send_errno, drop_send) and the receiving side
 * (sio_tp_recv: r*, ended, saved_errno, drop_malformed) touch disjoint state,
 * so one thread may send while another receives on a connected descriptor
 * transport (not on unconnected datagram sockets, whose peer address the
 * receiving side may change, nor on callbacks). Nothing here allocates after
 * sio_tp_open(), except the buffers of custom callbacks: allocated when a
 * first packet needs them (a listener holds thousands of mostly idle
 * peers), returned by sio_tp_trim().
 */
#ifndef SIO_TRANSPORT_H
#define SIO_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "secureio.h"

/* Stream record framing: 4-byte big-endian length, then the packet. */
#define SIO_TP_FRAME_HDR 4
/* Receive limit for one record/datagram unless a larger one is asked for. */
#define SIO_TP_MIN_RECORD 65536u
/* Hard cap on the record size a session may configure. */
#define SIO_TP_MAX_RECORD (16u << 20)
/* Packets moved per batched system call. */
#define SIO_TP_BATCH 32

/* Transport ended cleanly (end of file / orderly shutdown). */
#define SIO_TP_EOF (-10000) /* distinct from every SIO_E code */

enum sio_tp_peer_mode {
	SIO_TP_PEER_CONNECTED = 0, /* connected socket, stream, pipe or callbacks */
	SIO_TP_PEER_FIXED = 1,     /* unconnected datagram socket, fixed peer address */
	SIO_TP_PEER_LEARN = 2,     /* unconnected datagram socket, peer learned */
};

typedef struct sio_tp {
	int rfd, wfd;
	int datagram;  /* 1: packets are datagrams; 0: framed records */
	int custom;    /* callbacks instead of descriptors */
	int rsock, wsock; /* descriptors are sockets (use send/recv with MSG_NOSIGNAL) */
	int family;    /* socket address family of the read socket, 0 if none */
	int seqpacket; /* SOCK_SEQPACKET: an empty packet means end of file */
	int gso;       /* UDP: try UDP_SEGMENT for runs of equal-sized datagrams */
	int peer_mode;
	int close_fds;
	int rflags, wflags; /* original O_ flags, restored on close */
	int exact;      /* stream: read exactly one record at a time (no read-ahead) */
	int ended;      /* EOF or error seen: no more reads */
	int saved_errno; /* errno of the last fatal receive error */
	int send_errno;  /* errno of the last fatal send error */

	struct sockaddr_storage peer; /* FIXED / LEARN: where packets go */
	socklen_t peer_len;           /* LEARN: 0 until learned */
	/* LEARN: the peer address is validated (an authenticated data packet
	 * came from it). Until then it is tentative, and what is sent to it
	 * is bounded by SIO_TP_AMPLIFICATION times what arrived from it. */
	int peer_valid;
	uint64_t unval_rx, unval_tx; /* bytes from / to the tentative address */
	uint64_t drop_unvalidated;   /* datagrams held back by that bound */

	/* custom transport */
	ssize_t (*cb_send)(void *ctx, const void *buf, size_t len);
	/* Optional (set by the library's own callback transports, a listener's
	 * peers): sends several datagrams at once; returns how many were taken
	 * (0: the socket is full) or a negative errno. */
	int (*cb_sendv)(void *ctx, const struct iovec *pkts, size_t n);
	ssize_t (*cb_recv)(void *ctx, void *buf, size_t len);
	int cb_poll_fd;
	void *cb_ctx;

	size_t max_record; /* largest record/datagram accepted or sent */

	/* datagram receive slots: one block of nslots * slot_size, or (custom
	 * callbacks) cslot[i], each allocated when a read first needs it and
	 * freed by sio_tp_trim() */
	uint8_t *slots;
	uint8_t **cslot;
	size_t slot_size;
	unsigned nslots;
	struct mmsghdr *rmsgs;
	struct iovec *riov;
	struct sockaddr_storage *raddr;

	/* stream receive buffer: [rpos, rlen) holds unparsed bytes */
	uint8_t *rbuf;
	size_t rcap, rpos, rlen;

	/* packets handed to the callback by the last sio_tp_recv(), which may
	 * have been opened (decrypted) in place: wiped by sio_tp_rx_release() */
	unsigned rdirty;                    /* datagrams: slots [0, rdirty) */
	uint32_t rdirty_len[SIO_TP_BATCH];  /* datagrams: bytes handed per slot */
	size_t rdirty_lo, rdirty_hi;        /* stream: [lo, hi) of rbuf */

	/* stream send: unwritten tail of a partially written record (copied) */
	uint8_t *wbuf;
	size_t wcap, wpos, wlen;
	int wblocked; /* last send hit EAGAIN: wait for POLLOUT on wfd */

	/* counters */
	uint64_t drop_malformed; /* truncated datagrams, empty packets */
	uint64_t drop_send;      /* datagrams the kernel refused (EMSGSIZE, ...) */
	/* connected UDP: ECONNREFUSED (an ICMP port unreachable) seen by the
	 * sending side and by the receiving side (each its own counter) */
	uint64_t refused_tx, refused_rx;

	/* datagram sockets: bytes put before every datagram sent (a
	 * sio_listener's connection id), 0 = none */
	uint8_t tx_prefix[32];
	size_t tx_prefix_len;
} sio_tp;

/* Listener datagram prefix (docs/PROTOCOL.md, "Listener"). */
#define SIO_LISTENER_MARK 0x20
#define SIO_LISTENER_CID_BYTES 8

/* Client of a listener: if BUF is a cookie reply, returns 1 (the packet is
 * consumed), else 0. The cookie goes into the prefix of what we send next
 * only if the reply names our connection id, came from the address we send
 * to (FROM, or NULL on a connected socket) and the session's key exchange
 * is not complete yet (KEYED 0); otherwise it is ignored.
 * (src/listener/listener_kx.c) */
int sio_tp_listener_cookie(sio_tp *tp, const uint8_t *buf, size_t len, const struct sockaddr *from,
			   socklen_t fromlen, int keyed);

/* One received packet. BUF may be modified in place and stays valid until the
 * next sio_tp_recv() or sio_tp_rx_release() call. FROM/FROMLEN is the source address for
 * unconnected datagram sockets (else NULL/0). */
typedef void (*sio_tp_packet_fn)(void *ctx, uint8_t *buf, size_t len, const struct sockaddr *from,
				 socklen_t fromlen);

/* Opens the I/O layer over T. MAX_RECORD is the largest packet the session
 * will send (records above max(MAX_RECORD, SIO_TP_MIN_RECORD) are refused on
 * receive). Returns 0, SIO_EINVAL, SIO_ENOMEM or SIO_EIO. */
int sio_tp_open(sio_tp *tp, const sio_transport *t, size_t max_record);

/* 1 if T carries datagrams, 0 if a stream, or SIO_EINVAL (nothing changed). */
int sio_tp_detect(const sio_transport *t);

/* 1 if T is a UNIX-domain socket (no path MTU: datagrams up to 64 KiB). */
int sio_tp_is_unix(const sio_transport *t);

/* Frees buffers; closes the descriptors if asked, else restores their flags. */
void sio_tp_close(sio_tp *tp);

/* Descriptor to poll for input (-1 if none). */
int sio_tp_read_fd(const sio_tp *tp);
/* Descriptor to poll for POLLOUT when sio_tp_send() could not finish, or -1. */
int sio_tp_blocked_fd(const sio_tp *tp);

/* Sends up to N packets. Returns how many were consumed (handed to the kernel
 * or copied into the pending tail), 0 when the transport is full (poll
 * sio_tp_blocked_fd()), or a negative SIO_E code on a fatal error
 * (SIO_ETRUNCATED when the peer reset the connection or a pipe lost its
 * reader: ECONNRESET, EPIPE; SIO_EUNREACH when a connected UNIX datagram
 * socket's peer is gone: ECONNREFUSED, ENOENT, ENOTCONN; SIO_EIO otherwise). Datagrams
 * the kernel refuses for a transient reason (EMSGSIZE, ECONNREFUSED on UDP,
 * ENOBUFS, no route, unknown peer in learn mode) are consumed and counted in
 * drop_send, as if lost on the path; ECONNREFUSED on a connected UDP socket
 * is also counted in refused_tx (refused_rx when sio_tp_recv() met it). */
int sio_tp_send(sio_tp *tp, const struct iovec *pkts, size_t n);

/* Writes the pending tail of a stream record, if any. Returns 1 when nothing
 * is pending any more, 0 when still blocked, or a negative code. */
int sio_tp_flush(sio_tp *tp);

/* Wipes the packets the last sio_tp_recv() handed out (the callback may
 * have decrypted them in place), once each: call when nothing refers to
 * them any more. sio_tp_recv() and sio_tp_close() call it first; callers
 * holding plaintext in place call it as soon as they are done with it. */
void sio_tp_rx_release(sio_tp *tp);

/* Reads what is available without blocking (at most one batch of datagrams or
 * one buffer of stream bytes, or a single record in exact mode) and calls FN
 * for each packet. Returns the number of packets delivered (0 = nothing
 * available), SIO_TP_EOF (clean end of the transport), or a negative code:
 * SIO_ETRUNCATED (end of file inside a record, or the peer reset the
 * connection: ECONNRESET), SIO_EPROTO (record larger than the limit),
 * SIO_EUNREACH (a connected UNIX datagram socket's peer is gone), SIO_EIO
 * (see tp->saved_errno). Packets delivered before
 * the end in the same call were already passed to FN. */
/* Custom callbacks only: frees the receive slots or stream buffers when they
 * hold nothing (no packet handed out and not released, no unparsed or
 * unwritten bytes); the next packet allocates them again. The session calls
 * it when its core returned its own idle buffers. */
void sio_tp_trim(sio_tp *tp);
/* Bytes of those buffers held now (tests, benchmarks). */
size_t sio_tp_held_bytes(const sio_tp *tp);

int sio_tp_recv(sio_tp *tp, sio_tp_packet_fn fn, void *ctx);

/* To an address not yet validated, at most this many times the bytes
 * received from it are sent (docs/PROTOCOL.md §4.5, as QUIC's RFC 9000 §8.1). */
#define SIO_TP_AMPLIFICATION 3

/* What the protocol core made of a received packet, for address learning. */
enum sio_tp_seen {
	SIO_TP_SEEN_NOTHING = 0, /* dropped */
	SIO_TP_SEEN_KX = 1,      /* a newly accepted key-exchange message */
	SIO_TP_SEEN_DATA = 2,    /* an authenticated, fresh data packet */
	SIO_TP_SEEN_REPEAT = 3,  /* a copy of a key-exchange message already held */
};

/* LEARN mode: the LEN-byte packet from FROM was judged SEEN by the core.
 * A fresh authenticated data packet sets the peer to FROM and validates it;
 * once validated, nothing else moves it (never a key-exchange message, new
 * or repeated). Before that, a key-exchange message the core did not drop
 * (new or a repeat) points the peer (tentatively) at FROM, and adds LEN to
 * the amplification budget of that address (a move starts a new budget).
 * Returns 1 if the address changed. */
int sio_tp_learn_peer(sio_tp *tp, const struct sockaddr *from, socklen_t fromlen, size_t len,
		      int seen);

#endif /* SIO_TRANSPORT_H */
