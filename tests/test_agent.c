/* Identities whose key lives elsewhere: a real ssh-agent started by the
 * test (holding the key, not holding it, refusing with ssh-add -c and no
 * askpass, killed between renewals) and signer callbacks (failing, giving
 * another key's signature, working). Skipped when ssh-agent is missing. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"
#include "check.h"
#include "identity.h"
#include "sess_pair.h"

static char dir[] = "/tmp/sio-agenttest-XXXXXX";
static char sock[200];
static pid_t agent_pid = -1;

static int sh(const char *fmt, const char *a, const char *b)
{
	char cmd[1024];
	snprintf(cmd, sizeof cmd, fmt, a, b);
	int st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ssh-agent -D in the foreground, on a socket of our own, with no askpass
 * and no display: a key added with ssh-add -c can never be confirmed. */
static int agent_start(void)
{
	snprintf(sock, sizeof sock, "%s/agent.sock", dir);
	unlink(sock);
	agent_pid = fork();
	if (agent_pid == 0) {
		unsetenv("DISPLAY");
		unsetenv("SSH_ASKPASS");
		unsetenv("WAYLAND_DISPLAY");
		if (!freopen("/dev/null", "w", stdout))
			_exit(127);
		execlp("ssh-agent", "ssh-agent", "-D", "-a", sock, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 400; i++) {
		struct stat st;
		if (stat(sock, &st) == 0)
			return 0;
		usleep(10000);
	}
	return -1;
}

static void agent_kill(void)
{
	if (agent_pid > 0) {
		kill(agent_pid, SIGKILL);
		waitpid(agent_pid, NULL, 0);
	}
	agent_pid = -1;
}

/* Makes DIR/NAME with ssh-keygen, returns its public key in PK. */
static void keygen(const char *name, uint8_t pk[32])
{
	char path[300];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	CHECK_OK(sh("ssh-keygen -q -t ed25519 -N '' -f %s >/dev/null 2>&1%s", path, ""));
	CHECK_OK(sio_private_key_info(path, pk, NULL, NULL, 0));
}

static int ssh_add(const char *opts, const char *name)
{
	char cmd[600];
	snprintf(cmd, sizeof cmd, "SSH_AUTH_SOCK=%s ssh-add -q %s %s/%s </dev/null >/dev/null 2>&1",
	         sock, opts, dir, name);
	int st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A session pair: A uses IDA (e.g. the agent), B a local key; each pins
 * the other. Returns what A's wait for "established" returned. */
static int run_pair(sio_identity *ida, struct pair *p, const sio_options *o)
{
	memset(p, 0, sizeof *p);
	uint8_t pka[32], pkb[32];
	p->ida = sio_identity_ref(ida);
	CHECK_OK(sio_identity_generate(&p->idb));
	sio_identity_public_key(p->ida, pka);
	sio_identity_public_key(p->idb, pkb);
	CHECK_OK(sio_remote_from_public_key(&p->ra, pkb));
	CHECK_OK(sio_remote_from_public_key(&p->rb, pka));
	sio_transport ta, tb;
	CHECK_OK(pair_transports(p, PK_UNIX_STREAM, &ta, &tb));
	CHECK_OK(sio_session_new(&p->a, p->ida, p->ra, &ta, o, NULL));
	CHECK_OK(sio_session_new(&p->b, p->idb, p->rb, &tb, o, NULL));
	int r = sio_session_start(p->a);
	CHECK_OK(sio_session_start(p->b));
	if (r == 0)
		r = sio_session_wait_state(p->a, SIO_STATE_ESTABLISHED, 20000);
	return r;
}

static void with_agent(void)
{
	uint8_t pk[32], pk_other[32], pk_confirm[32];
	keygen("k", pk);
	keygen("other", pk_other);
	keygen("confirm", pk_confirm);
	if (agent_start() != 0) {
		CHECK(!"ssh-agent did not start");
		return;
	}
	CHECK_OK(ssh_add("", "k"));
	/* the private key file is then encrypted, or gone: the agent has it */
	CHECK_OK(sh("ssh-keygen -q -p -P '' -N locked -f %s/k >/dev/null 2>&1%s", dir, ""));
	sio_identity *id = NULL;
	CHECK_OK(sio_identity_from_agent(&id, sock, pk));
	CHECK(id != NULL);
	if (!id)
		return;
	uint8_t got[32];
	sio_identity_public_key(id, got);
	CHECK(memcmp(got, pk, 32) == 0);
	CHECK(sio_identity_secret_key(id) == NULL);
	CHECK_EQ(sio_identity_save(id, "/nonexistent/x", NULL), SIO_EINVAL);

	struct pair p;
	sio_options o;
	memset(&o, 0, sizeof o);
	o.kx_interval_ns = 300 * 1000000LL; /* several renewals signed by the agent */
	CHECK_OK(run_pair(id, &p, &o));
	CHECK_OK(sio_session_wait_state(p.b, SIO_STATE_ESTABLISHED, 20000));
	char buf[16];
	CHECK_EQ(sio_write(p.a, "via agent", 9), 9);
	CHECK_EQ(sio_read(p.b, buf, sizeof buf), 9);
	/* wait for two renewals, each signed by the agent */
	sio_stats st;
	for (int i = 0; i < 400; i++) {
		sio_session_stats(p.a, &st);
		if (st.rekeys >= 2)
			break;
		usleep(50000);
	}
	CHECK(st.rekeys >= 2);
	/* the agent dies between renewals: the next renewal cannot be signed
	 * and the session ends with SIO_ESIGN, not a hang or a crash */
	agent_kill();
	CHECK_OK(sio_session_wait_state(p.a, SIO_STATE_CLOSED, 20000));
	CHECK_EQ(sio_read(p.a, buf, sizeof buf), SIO_ESIGN); /* what ended it */
	pair_free(&p);

	/* a new identity from the dead agent's socket */
	sio_identity *none = NULL;
	CHECK_EQ(sio_identity_from_agent(&none, sock, pk), SIO_EAGENT);
	CHECK_EQ(sio_identity_from_agent(&none, "/nonexistent/sock", pk), SIO_EAGENT);

	/* a fresh agent, without the key we ask for */
	CHECK_OK(agent_start());
	CHECK_EQ(sio_identity_from_agent(&none, sock, pk_other), SIO_EAGENT);
	CHECK_EQ(sio_identity_from_agent(&none, sock, NULL), SIO_EAGENT); /* empty */
	CHECK(none == NULL);
	/* the old identity reconnects to the path: the new agent lacks the key */
	CHECK_EQ(run_pair(id, &p, NULL), SIO_ESIGN);
	pair_free(&p);
	/* ssh-add -c: the agent must ask someone to confirm each signature and
	 * has no askpass: it refuses */
	CHECK_OK(ssh_add("-c", "confirm"));
	sio_identity *cid = NULL;
	CHECK_OK(sio_identity_from_agent(&cid, sock, pk_confirm));
	if (cid)
		CHECK_EQ(run_pair(cid, &p, NULL), SIO_ESIGN);
	pair_free(&p);
	sio_identity_free(cid);
	/* NULL key: the first Ed25519 key the agent lists */
	CHECK_OK(ssh_add("", "other"));
	CHECK_OK(sio_identity_from_agent(&cid, sock, NULL));
	if (cid) {
		sio_identity_public_key(cid, got);
		CHECK(memcmp(got, pk_confirm, 32) == 0 || memcmp(got, pk_other, 32) == 0);
		sio_identity_free(cid);
	}
	/* $SSH_AUTH_SOCK is the default */
	setenv("SSH_AUTH_SOCK", sock, 1);
	CHECK_OK(sio_identity_from_agent(&cid, NULL, pk_other));
	CHECK_OK(run_pair(cid, &p, NULL));
	pair_free(&p);
	sio_identity_free(cid);
	unsetenv("SSH_AUTH_SOCK");
	CHECK_EQ(sio_identity_from_agent(&cid, NULL, pk_other), SIO_EAGENT);
	agent_kill();
	sio_identity_free(id);
}

/* ---- signer callbacks ---------------------------------------------------- */

struct signer {
	uint8_t sk[64];
	int mode; /* 0 sign, 1 fail, 2 another key's signature */
	int calls;
};

static int cb_sign(void *ctx, uint8_t sig[64], const uint8_t *msg, size_t len)
{
	struct signer *s = ctx;
	s->calls++;
	if (s->mode == 1)
		return SIO_ESIGN;
	uint8_t pk[32], sk2[64];
	if (s->mode == 2) {
		crypto_sign_keypair(pk, sk2);
		crypto_sign_detached(sig, NULL, msg, len, sk2);
		return 0;
	}
	crypto_sign_detached(sig, NULL, msg, len, s->sk);
	return 0;
}

static void signers(void)
{
	struct signer s;
	uint8_t pk[32];
	memset(&s, 0, sizeof s);
	crypto_sign_keypair(pk, s.sk);
	sio_identity *id = NULL;
	CHECK_EQ(sio_identity_from_signer(&id, pk, NULL, &s, NULL), SIO_EINVAL);
	CHECK_OK(sio_identity_from_signer(&id, pk, cb_sign, &s, NULL));
	struct pair p;
	CHECK_OK(run_pair(id, &p, NULL));
	CHECK(s.calls >= 1);
	pair_free(&p);
	s.mode = 1;
	CHECK_EQ(run_pair(id, &p, NULL), SIO_ESIGN);
	char buf[8];
	CHECK_EQ(sio_read(p.a, buf, sizeof buf), SIO_ESIGN);
	pair_free(&p);
	s.mode = 2; /* a signature by another key is never sent */
	CHECK_EQ(run_pair(id, &p, NULL), SIO_ESIGN);
	pair_free(&p);
	/* failing at a renewal, after the session was established */
	s.mode = 0;
	sio_options o;
	memset(&o, 0, sizeof o);
	o.kx_interval_ns = 200 * 1000000LL;
	CHECK_OK(run_pair(id, &p, &o));
	s.mode = 1;
	CHECK_OK(sio_session_wait_state(p.a, SIO_STATE_CLOSED, 20000));
	CHECK_EQ(sio_read(p.a, buf, sizeof buf), SIO_ESIGN);
	pair_free(&p);
	sio_identity_free(id);
}

/* ---- a slow signer does not stall a listener's other sessions ---------- */

static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static int gate_entered, gate_open, gate_calls;
static uint8_t gate_sk[64];

/* The first signature waits until the test opens the gate (a person
 * confirming on an agent, a slow HSM); the others are made at once. */
static int gated_sign(void *ctx, uint8_t sig[64], const uint8_t *msg, size_t len)
{
	pthread_mutex_lock(&gate_mu);
	int first = gate_calls++ == 0;
	if (first) {
		gate_entered = 1;
		pthread_cond_broadcast(&gate_cv);
		while (!gate_open)
			pthread_cond_wait(&gate_cv, &gate_mu);
	}
	pthread_mutex_unlock(&gate_mu);
	crypto_sign_detached(sig, NULL, msg, len, gate_sk);
	return 0;
}

static int udp_loopback(struct sockaddr_in *a)
{
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	memset(a, 0, sizeof *a);
	a->sin_family = AF_INET;
	a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t l = sizeof *a;
	if (fd < 0 || bind(fd, (struct sockaddr *)a, sizeof *a) != 0 ||
	    getsockname(fd, (struct sockaddr *)a, &l) != 0)
		return -1;
	return fd;
}

static sio_session *client(const struct sockaddr_in *srv, const uint8_t srv_pk[32],
                           sio_identity **id)
{
	struct sockaddr_in me;
	int fd = udp_loopback(&me);
	sio_remote *r = NULL;
	sio_session *s = NULL;
	CHECK_OK(sio_identity_generate(id));
	CHECK_OK(sio_remote_from_public_key(&r, srv_pk));
	sio_transport t;
	sio_transport_fd(&t, fd, fd);
	memcpy(&t.peer, srv, sizeof *srv);
	t.peer_len = sizeof *srv;
	t.close_fds = 1;
	sio_options o;
	memset(&o, 0, sizeof o);
	o.listener_peer = 1;
	o.kx_retry_ns = 200000000;
	CHECK_OK(sio_session_new(&s, *id, r, &t, &o, NULL));
	CHECK_OK(sio_session_start(s));
	sio_remote_free(r);
	return s;
}

static void slow_signer_listener(void)
{
	uint8_t pk[32];
	crypto_sign_keypair(pk, gate_sk);
	sio_identity *id = NULL;
	CHECK_OK(sio_identity_from_signer(&id, pk, gated_sign, NULL, NULL));
	struct sockaddr_in sa;
	int sfd = udp_loopback(&sa);
	CHECK(sfd >= 0);
	sio_listener *l = NULL;
	CHECK_OK(sio_listener_new(&l, id, sfd, NULL, NULL));
	CHECK_OK(sio_listener_start(l));
	sio_identity *c1id = NULL, *c2id = NULL;
	sio_session *c1 = client(&sa, pk, &c1id);
	/* the first peer's session is now waiting for its signature */
	pthread_mutex_lock(&gate_mu);
	while (!gate_entered)
		pthread_cond_wait(&gate_cv, &gate_mu);
	pthread_mutex_unlock(&gate_mu);
	/* a second peer gets its session meanwhile */
	sio_session *c2 = client(&sa, pk, &c2id);
	CHECK_OK(sio_session_wait_state(c2, SIO_STATE_ESTABLISHED, 20000));
	pthread_mutex_lock(&gate_mu);
	CHECK(!gate_open); /* ... while the first signature still waits */
	gate_open = 1;
	pthread_cond_broadcast(&gate_cv);
	pthread_mutex_unlock(&gate_mu);
	CHECK_OK(sio_session_wait_state(c1, SIO_STATE_ESTABLISHED, 20000));
	sio_session_free(c1);
	sio_session_free(c2);
	sio_identity_free(c1id);
	sio_identity_free(c2id);
	sio_listener_free(l);
	sio_identity_free(id);
	close(sfd);
}

/* ---- the reply parsers ----------------------------------------------------- */

static void parsers(void)
{
	uint8_t pk[32], out[32], sig[64];
	randombytes_buf(pk, 32);
	uint8_t m[256];
	size_t n = 0;
	m[n++] = SIO_AGENT_IDENTITIES_ANSWER;
	m[n++] = 0, m[n++] = 0, m[n++] = 0, m[n++] = 2;
	/* an RSA-looking key first, then ours */
	const uint8_t rsa[] = {0, 0, 0, 11, 0, 0, 0, 7, 's', 's', 'h', '-', 'r', 's', 'a', 0, 0, 0, 0, 0, 0, 0, 1, 'x'};
	memcpy(m + n, rsa + 4, sizeof rsa - 4);
	m[n + 3] = 11; /* blob length 11: "\0\0\0\7ssh-rsa" */
	n += sizeof rsa - 4;
	m[n++] = 0, m[n++] = 0, m[n++] = 0, m[n++] = 51;
	sio_pubkey_blob(pk, m + n);
	n += 51;
	m[n++] = 0, m[n++] = 0, m[n++] = 0, m[n++] = 0; /* empty comment */
	CHECK_OK(sio_agent_parse_identities(m, n, pk, out));
	CHECK_OK(sio_agent_parse_identities(m, n, NULL, out));
	CHECK(memcmp(out, pk, 32) == 0);
	for (size_t cut = 1; cut < n; cut++)
		CHECK_EQ(sio_agent_parse_identities(m, n - cut, NULL, out), SIO_EPROTO);
	uint8_t other[32] = {1};
	CHECK_EQ(sio_agent_parse_identities(m, n, other, out), SIO_EAGENT);
	uint8_t fail = SIO_AGENT_FAILURE;
	CHECK_EQ(sio_agent_parse_identities(&fail, 1, NULL, out), SIO_EAGENT);
	CHECK_EQ(sio_agent_parse_sign(&fail, 1, sig), SIO_ESIGN);
	uint8_t r[1 + 4 + 4 + 11 + 4 + 64] = {SIO_AGENT_SIGN_RESPONSE, 0, 0, 0, 83, 0, 0, 0, 11};
	memcpy(r + 9, "ssh-ed25519", 11);
	r[23] = 64;
	CHECK_OK(sio_agent_parse_sign(r, sizeof r, sig));
	for (size_t cut = 1; cut < sizeof r; cut++)
		CHECK_EQ(sio_agent_parse_sign(r, sizeof r - cut, sig), SIO_EPROTO);
	r[9] = 'x';
	CHECK_EQ(sio_agent_parse_sign(r, sizeof r, sig), SIO_EPROTO);
}

int main(void)
{
	CHECK_OK(sio_init());
	signal(SIGPIPE, SIG_IGN);
	parsers();
	signers();
	slow_signer_listener();
	if (system("command -v ssh-agent >/dev/null 2>&1 && command -v ssh-add >/dev/null 2>&1"
	           " && command -v ssh-keygen >/dev/null 2>&1") != 0) {
		printf("test_agent: SKIPPED the ssh-agent part: openssh-client not installed\n");
		return check_done("test_agent");
	}
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	with_agent();
	agent_kill();
	sh("rm -rf '%s'%s", dir, "");
	return check_done("test_agent");
}
