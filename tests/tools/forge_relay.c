/* forge_relay: an on-path attacker that holds a key of the victim's pin set,
 * run against the real sio binaries (tests/test_sio_pinset.sh).
 *
 *   forge_relay PORT TARGET_PORT KEYFILE SECONDS
 *
 * Relays UDP datagrams between a client (sending to 127.0.0.1:PORT) and the
 * victim (a `sio listen` on 127.0.0.1:TARGET_PORT). With the private key in
 * KEYFILE (an identity the victim's -r file lists next to the client's), it
 * forges key exchanges as the client (tests/lib/forge.h): first while the
 * victim is still in its first handshake (the client's packets other than
 * key exchanges are held back for 300 ms after its first one), then every
 * 100 ms, the three variants in turn, for SECONDS; when the victim replies
 * to a forgery it sends data sealed under the keys that forgery would
 * agree. Everything it sends leaves from the relay's own socket, the
 * address the victim knows as its peer. It relays until SIGTERM, then
 * prints "forged N data M" on stdout. Loopback only. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "identity.h"
#include "lib/forge.h"
#include "secureio.h"

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
	(void)sig;
	stop = 1;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t wall_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int udp_socket(uint16_t port)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || (port && bind(fd, (struct sockaddr *)&a, sizeof a) != 0)) {
		perror("forge_relay: socket");
		exit(2);
	}
	return fd;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: forge_relay PORT TARGET_PORT KEYFILE SECONDS\n");
		return 2;
	}
	sio_identity *id;
	if (sio_init() != 0 || sio_identity_load(&id, argv[3]) != 0) {
		fprintf(stderr, "forge_relay: cannot load %s\n", argv[3]);
		return 2;
	}
	forge g;
	forge_init(&g, sio_identity_secret_key(id), NULL, 0);
	sio_identity_free(id);

	int cfd = udp_socket((uint16_t)atoi(argv[1])); /* the client talks to this */
	int vfd = udp_socket(0);                         /* this talks to the victim */
	struct sockaddr_in victim = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
	victim.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(vfd, (struct sockaddr *)&victim, sizeof victim) != 0) {
		perror("forge_relay: connect");
		return 2;
	}
	struct sockaddr_storage client;
	socklen_t client_len = 0;
	uint64_t start = now_ms(), end = start + (uint64_t)atoi(argv[4]) * 1000u;
	uint64_t hold_until = 0, next_forge = 0;
	int first_kx_seen = 0, first_forged = 0;
	static uint8_t held[64][2048];
	static size_t held_len[64];
	unsigned nheld = 0;
	uint8_t buf[65536];

	signal(SIGTERM, on_term);
	signal(SIGINT, on_term);
	/* relays until SIGTERM; forging stops after SECONDS */
	while (!stop) {
		struct pollfd p[2] = {{cfd, POLLIN, 0}, {vfd, POLLIN, 0}};
		uint64_t t;
		if (poll(p, 2, 50) < 0)
			continue; /* EINTR: the loop condition decides */
		t = now_ms();
		if (p[0].revents & POLLIN) { /* client -> victim */
			client_len = sizeof client;
			ssize_t n = recvfrom(cfd, buf, sizeof buf, 0, (struct sockaddr *)&client,
					     &client_len);
			if (n > 0) {
				int kx = buf[0] & 0x80;
				forge_observe(&g, 0, buf, (size_t)n, NULL);
				if (kx && !first_kx_seen) {
					first_kx_seen = 1;
					hold_until = t + 300;
				}
				if (!kx && t < hold_until && nheld < 64 && (size_t)n <= sizeof held[0]) {
					memcpy(held[nheld], buf, (size_t)n);
					held_len[nheld++] = (size_t)n;
				} else if (send(vfd, buf, (size_t)n, 0) < 0) {
					perror("forge_relay: send");
				}
			}
		}
		if (p[1].revents & POLLIN) { /* victim -> client */
			ssize_t n = recv(vfd, buf, sizeof buf, 0);
			if (n > 0) {
				uint8_t out[FORGE_DATA_LEN];
				if (forge_observe(&g, 1, buf, (size_t)n, out) &&
				    send(vfd, out, sizeof out, 0) < 0)
					perror("forge_relay: send");
				if (client_len &&
				    sendto(cfd, buf, (size_t)n, 0, (struct sockaddr *)&client, client_len) < 0)
					perror("forge_relay: sendto");
			}
		}
		/* forge: at once during the first handshake, then every 100 ms */
		if (t < end && (!first_forged || t >= next_forge)) {
			uint8_t kx[FORGE_KX_MAX];
			size_t n = forge_kx(&g, (int)(g.forged % 3), wall_ns() + 1000000000u, kx);
			if (n) {
				first_forged = 1;
				next_forge = t + 100;
				if (send(vfd, kx, n, 0) < 0)
					perror("forge_relay: send");
			}
		}
		if (nheld && t >= hold_until) {
			for (unsigned i = 0; i < nheld; i++)
				if (send(vfd, held[i], held_len[i], 0) < 0)
					perror("forge_relay: send");
			nheld = 0;
		}
	}
	printf("forged %llu data %llu\n", (unsigned long long)g.forged,
	       (unsigned long long)g.data_made);
	forge_wipe(&g);
	return 0;
}
