/* Quick start (the Go README's first snippet, in C): identities from key
 * directories (generated if missing), the remote identity from the other
 * side's public key file, a UDP "connection", an encrypted session on it,
 * then write and read like on a socket.
 *
 * Both sides run in this one process (two UDP sockets on 127.0.0.1) so the
 * example is self-contained; in real use each side is its own program. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <secureio.h>

#define FAIL(...)                                                                                  \
	do {                                                                                       \
		fprintf(stderr, __VA_ARGS__);                                                      \
		exit(1);                                                                           \
	} while (0)

static int udp_socket(struct sockaddr_in *addr)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	memset(addr, 0, sizeof *addr);
	addr->sin_family = AF_INET;
	addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t len = sizeof *addr;
	if (fd < 0 || bind(fd, (struct sockaddr *)addr, sizeof *addr) ||
	    getsockname(fd, (struct sockaddr *)addr, &len))
		FAIL("udp socket\n");
	return fd;
}

int main(void)
{
	alarm(60);
	int r;
	if (sio_init())
		FAIL("sio_init\n");
	char base[] = "/tmp/sio-quickstart-XXXXXX", dir_a[64], dir_b[64], pub[96];
	if (!mkdtemp(base))
		FAIL("mkdtemp\n");
	snprintf(dir_a, sizeof dir_a, "%s/alice", base);
	snprintf(dir_b, sizeof dir_b, "%s/bob", base);

	/* Generate (if not exists) and read Ed25519 keys */
	sio_identity *alice, *bob;
	if ((r = sio_identity_from_dir(&alice, dir_a)) || (r = sio_identity_from_dir(&bob, dir_b)))
		FAIL("identity: %s\n", sio_strerror(r));

	/* Read the remote identities (each side's id_ed25519.pub) */
	sio_remote *alice_sees_bob, *bob_sees_alice;
	snprintf(pub, sizeof pub, "%s/id_ed25519.pub", dir_b);
	if ((r = sio_remote_load(&alice_sees_bob, pub)))
		FAIL("remote: %s\n", sio_strerror(r));
	snprintf(pub, sizeof pub, "%s/id_ed25519.pub", dir_a);
	if ((r = sio_remote_load(&bob_sees_alice, pub)))
		FAIL("remote: %s\n", sio_strerror(r));

	/* Create a connection (like net.Dial("udp", ...)) */
	struct sockaddr_in aa, ba;
	int fa = udp_socket(&aa), fb = udp_socket(&ba);
	if (connect(fa, (struct sockaddr *)&ba, sizeof ba) || connect(fb, (struct sockaddr *)&aa, sizeof aa))
		FAIL("connect\n");

	/* Create an encrypted session: key exchange with X25519, the remote side
	 * verified by its Ed25519 signature */
	sio_transport ta, tb;
	sio_transport_fd(&ta, fa, fa);
	sio_transport_fd(&tb, fb, fb);
	ta.close_fds = tb.close_fds = 1;
	sio_session *sa, *sb;
	if ((r = sio_session_new(&sa, alice, alice_sees_bob, &ta, NULL, NULL)) ||
	    (r = sio_session_new(&sb, bob, bob_sees_alice, &tb, NULL, NULL)))
		FAIL("session: %s\n", sio_strerror(r));
	if ((r = sio_session_start(sa)) || (r = sio_session_start(sb)))
		FAIL("start: %s\n", sio_strerror(r));

	/* Use it! Write to it... */
	const char hello[] = "hello, encrypted world";
	if (sio_write(sa, hello, sizeof hello) != (ssize_t)sizeof hello)
		FAIL("write\n");
	/* ...or/and read from it */
	char buf[64];
	ssize_t n = sio_read_timeout(sb, buf, sizeof buf, 20000);
	if (n != (ssize_t)sizeof hello || memcmp(buf, hello, sizeof hello) != 0)
		FAIL("read: %zd %s\n", n, n < 0 ? sio_strerror((int)n) : "");
	printf("bob read: %s\n", buf);

	sio_close_and_wait(sa, 5000);
	sio_session_free(sa);
	sio_session_free(sb);
	sio_remote_free(alice_sees_bob);
	sio_remote_free(bob_sees_alice);
	sio_identity_free(alice);
	sio_identity_free(bob);
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
	if (system(cmd) != 0)
		FAIL("cleanup\n");
	return 0;
}
