/* Listener hub: one UDP socket serves many peers (server mode).
 *
 * The server creates a sio_listener on its socket, with the set of allowed
 * client keys, and accepts each authenticated peer as an ordinary session.
 * Clients are ordinary sessions with the option listener_peer set. Here five
 * clients (threads of this same process, each with its own UDP socket) greet
 * the hub, which answers each with the fingerprint it authenticated.
 * In real use the hub and each client are separate programs. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <secureio.h>

#define NCLIENTS 5
#define FAIL(...)                                                                                  \
	do {                                                                                       \
		fprintf(stderr, __VA_ARGS__);                                                      \
		exit(1);                                                                           \
	} while (0)

static struct sockaddr_in hub_addr;
static uint8_t hub_pk[SIO_PUBLIC_KEY_BYTES];
static sio_identity *client_id[NCLIENTS];

static int udp_socket(struct sockaddr_in *addr)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in a;
	memset(&a, 0, sizeof a);
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t len = sizeof a;
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) != 0)
		FAIL("socket: cannot bind\n");
	if (addr)
		*addr = a;
	return fd;
}

static void *client(void *arg)
{
	int i = (int)(long)arg;
	sio_remote *hub;
	if (sio_remote_from_public_key(&hub, hub_pk) != 0)
		FAIL("client %d: remote\n", i);
	int fd = udp_socket(NULL);
	sio_transport t;
	sio_transport_fd(&t, fd, fd);
	memcpy(&t.peer, &hub_addr, sizeof hub_addr); /* unconnected socket, fixed peer */
	t.peer_len = sizeof hub_addr;
	t.close_fds = 1;
	sio_options o;
	memset(&o, 0, sizeof o);
	o.listener_peer = 1; /* the peer is a sio_listener */
	sio_session *s;
	if (sio_session_new(&s, client_id[i], hub, &t, &o, NULL) != 0 || sio_session_start(s) != 0)
		FAIL("client %d: session\n", i);
	char msg[64], reply[128];
	int n = snprintf(msg, sizeof msg, "hello from client %d", i);
	if (sio_write(s, msg, (size_t)n) != n)
		FAIL("client %d: write\n", i);
	ssize_t r = sio_read_timeout(s, reply, sizeof reply - 1, 10000);
	if (r <= 0)
		FAIL("client %d: read: %s\n", i, sio_strerror((int)r));
	reply[r] = 0;
	printf("client %d got: %s\n", i, reply);
	sio_close_and_wait(s, 2000);
	sio_session_free(s);
	sio_remote_free(hub);
	return NULL;
}

int main(void)
{
	if (sio_init() != 0)
		FAIL("sio_init\n");
	sio_identity *hub_id;
	sio_remote *allowed = NULL;
	if (sio_identity_generate(&hub_id) != 0)
		FAIL("identity\n");
	sio_identity_public_key(hub_id, hub_pk);
	for (int i = 0; i < NCLIENTS; i++) {
		uint8_t pk[SIO_PUBLIC_KEY_BYTES];
		if (sio_identity_generate(&client_id[i]) != 0)
			FAIL("identity\n");
		sio_identity_public_key(client_id[i], pk);
		int r = allowed ? sio_remote_add(allowed, pk) : sio_remote_from_public_key(&allowed, pk);
		if (r != 0)
			FAIL("allowed set\n");
	}
	int fd = udp_socket(&hub_addr);
	sio_listener_options lo;
	memset(&lo, 0, sizeof lo);
	lo.close_fd = 1;
	sio_listener *l;
	if (sio_listener_new(&l, hub_id, fd, allowed, &lo) != 0 || sio_listener_start(l) != 0)
		FAIL("listener\n");

	pthread_t th[NCLIENTS];
	for (int i = 0; i < NCLIENTS; i++)
		pthread_create(&th[i], NULL, client, (void *)(long)i);
	sio_session *peers[NCLIENTS];
	for (int i = 0; i < NCLIENTS; i++) {
		if (sio_listener_accept(l, &peers[i], 10000) != 0)
			FAIL("accept\n");
		uint8_t pk[SIO_PUBLIC_KEY_BYTES];
		char fp[SIO_FINGERPRINT_MAX], buf[128], reply[256];
		sio_session_remote_key(peers[i], pk);
		sio_fingerprint(pk, fp, sizeof fp);
		ssize_t r = sio_read_timeout(peers[i], buf, sizeof buf - 1, 10000);
		if (r <= 0)
			FAIL("hub: read\n");
		buf[r] = 0;
		int n = snprintf(reply, sizeof reply, "hub heard \"%s\" from %s", buf, fp);
		if (sio_write(peers[i], reply, (size_t)n) != n)
			FAIL("hub: write\n");
	}
	for (int i = 0; i < NCLIENTS; i++)
		pthread_join(th[i], NULL);
	sio_listener_stats st;
	sio_listener_stats_get(l, &st);
	printf("hub: %llu peers accepted, %llu live sessions\n", (unsigned long long)st.accepted,
	       (unsigned long long)st.sessions);
	for (int i = 0; i < NCLIENTS; i++)
		sio_session_free(peers[i]);
	sio_listener_free(l);
	sio_remote_free(allowed);
	for (int i = 0; i < NCLIENTS; i++)
		sio_identity_free(client_id[i]);
	sio_identity_free(hub_id);
	return st.accepted == NCLIENTS ? 0 : 1;
}
