/* The local identity of `sio`: resolving -i (a directory holding
 * id_ed25519, or a key file as `ssh -i` takes), never creating one outside
 * `sio keygen`, and the passphrase of an encrypted key: --passphrase-file,
 * the SIO_ASKPASS program, or the terminal without echo. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "cli.h"

/* ---- passphrase sources -------------------------------------------------- */

/* Cuts S (N bytes) at its first newline ("\n" or "\r\n"). */
static size_t first_line(const char *s, size_t n)
{
	const char *nl = memchr(s, '\n', n);
	if (!nl)
		return n;
	size_t l = (size_t)(nl - s);
	if (l && s[l - 1] == '\r')
		l--;
	return l;
}

static int read_all(int fd, char *buf, size_t cap, size_t *len)
{
	size_t n = 0;
	for (;;) {
		if (n == cap)
			return -1; /* longer than we take: refuse rather than cut */
		ssize_t r = read(fd, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0)
			break;
		n += (size_t)r;
	}
	*len = n;
	return 0;
}

/* The first line of FILE (the whole file if it has no newline). */
static int pass_from_file(const char *file, char *buf, size_t cap, size_t *len)
{
	int fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		cli_err("--passphrase-file %s: %s", file, strerror(errno));
		return CLI_ERR;
	}
	size_t n = 0;
	int rc = read_all(fd, buf, cap, &n);
	close(fd);
	if (rc) {
		cli_err("--passphrase-file %s: unreadable or longer than %zu bytes", file, cap - 1);
		return CLI_ERR;
	}
	*len = first_line(buf, n);
	return 0;
}

/* Runs PROG PROMPT and takes the first line of its standard output; a
 * program that exits non-zero cancels (as ssh treats SSH_ASKPASS). */
static int pass_from_askpass(const char *prog, const char *prompt, char *buf, size_t cap,
                             size_t *len)
{
	int p[2];
	if (pipe(p) != 0) {
		cli_err("SIO_ASKPASS: %s", strerror(errno));
		return CLI_ERR;
	}
	pid_t pid = fork();
	if (pid < 0) {
		cli_err("SIO_ASKPASS: %s", strerror(errno));
		close(p[0]);
		close(p[1]);
		return CLI_ERR;
	}
	if (pid == 0) {
		close(p[0]);
		if (dup2(p[1], STDOUT_FILENO) < 0)
			_exit(127);
		execlp(prog, prog, prompt, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	size_t n = 0;
	int rc = read_all(p[0], buf, cap, &n);
	close(p[0]);
	int st = 0;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (rc || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		cli_err("SIO_ASKPASS program '%s' %s", prog,
		        rc ? "gave more than we take" : "gave no passphrase (cancelled or failed)");
		return CLI_ERR;
	}
	*len = first_line(buf, n);
	return 0;
}

static int tty_fd = -1;
static struct termios tty_saved;
static struct sigaction old_int, old_term, old_hup, old_quit, old_tstp;

/* A signal while echo is off: put the terminal back, then die of it. */
static void tty_restore_and_die(int sig)
{
	if (tty_fd >= 0)
		tcsetattr(tty_fd, TCSAFLUSH, &tty_saved);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Asks on the controlling terminal (not stdin/stdout: they carry data)
 * with echo off. Returns 0, CLI_ERR, or -1 when there is no terminal. */
static int pass_from_tty(const char *prompt, char *buf, size_t cap, size_t *len)
{
	int fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -1;
	struct termios t;
	if (tcgetattr(fd, &t) != 0) {
		close(fd);
		return -1;
	}
	tty_saved = t;
	tty_fd = fd;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = tty_restore_and_die;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);
	sigaction(SIGHUP, &sa, &old_hup);
	sigaction(SIGQUIT, &sa, &old_quit);
	sigaction(SIGTSTP, &sa, &old_tstp);
	t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
	t.c_lflag |= ICANON;
	int rc = tcsetattr(fd, TCSAFLUSH, &t) == 0 ? 0 : CLI_ERR;
	if (rc == 0 && write(fd, prompt, strlen(prompt)) < 0)
		rc = CLI_ERR;
	size_t n = 0;
	while (rc == 0) { /* one line; a longer one is refused, never cut */
		char c;
		ssize_t r = read(fd, &c, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0 || c == '\n')
			break;
		if (n + 1 >= cap) {
			rc = CLI_ERR;
			break;
		}
		buf[n++] = c;
	}
	tcsetattr(fd, TCSAFLUSH, &tty_saved);
	if (write(fd, "\n", 1) < 0)
		rc = rc ? rc : CLI_ERR;
	tty_fd = -1;
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	sigaction(SIGHUP, &old_hup, NULL);
	sigaction(SIGQUIT, &old_quit, NULL);
	sigaction(SIGTSTP, &old_tstp, NULL);
	close(fd);
	if (rc) {
		cli_err("cannot read the passphrase from the terminal");
		return CLI_ERR;
	}
	*len = n;
	return 0;
}

int cli_get_passphrase(const char *passfile, const char *prompt, char *buf, size_t cap,
                       size_t *len, int *interactive)
{
	if (interactive)
		*interactive = 0;
	if (passfile)
		return pass_from_file(passfile, buf, cap, len);
	const char *ask = getenv("SIO_ASKPASS");
	if (ask && *ask)
		return pass_from_askpass(ask, prompt, buf, cap, len);
	int rc = pass_from_tty(prompt, buf, cap, len);
	if (rc == 0 && interactive)
		*interactive = 1;
	return rc;
}

/* ---- loading the identity -------------------------------------------- */

struct ask_ctx {
	const char *passfile;
	int interactive; /* the last answer came from a person at a terminal */
	int none;        /* no way to ask */
	int failed;      /* the source itself failed (message printed) */
};

static int ask_cb(void *vctx, const char *path, char *buf, size_t cap, size_t *len)
{
	struct ask_ctx *a = vctx;
	char prompt[4200];
	snprintf(prompt, sizeof prompt, "Enter passphrase for %s: ", path);
	int rc = cli_get_passphrase(a->passfile, prompt, buf, cap, len, &a->interactive);
	if (rc == -1)
		a->none = 1;
	if (rc == CLI_ERR)
		a->failed = 1;
	return rc ? SIO_ECANCELED : 0;
}

int cli_resolve_identity(const char *arg, char *path, size_t cap)
{
	struct stat st;
	char pub[4300];
	int isdir = stat(arg, &st) == 0 && S_ISDIR(st.st_mode);
	int n = isdir ? snprintf(path, cap, "%s/id_ed25519", arg) : snprintf(path, cap, "%s", arg);
	if (n < 0 || (size_t)n >= cap || (size_t)n + 5 > sizeof pub) {
		cli_err("identity %s: path too long", arg);
		return CLI_ERR;
	}
	if (isdir) {
		int drc = sio_identity_check_dir(arg);
		if (drc)
			return cli_identity_error(arg, NULL, drc);
	}
	if (stat(path, &st) == 0)
		return 0;
	int e = errno;
	snprintf(pub, sizeof pub, "%s.pub", path);
	if (e == ENOENT && access(pub, F_OK) == 0)
		return 0; /* only the public half: an agent may hold the key */
	cli_err("identity %s: %s (create one with: sio keygen -i %s)", path, strerror(e), arg);
	return CLI_ERR;
}

/* 0 when PATH.pub is absent or holds PK. */
static int check_pub(const char *path, const uint8_t pk[SIO_PUBLIC_KEY_BYTES])
{
	char pub[4300];
	size_t l = strlen(path);
	if (l + 5 > sizeof pub)
		return CLI_ERR;
	memcpy(pub, path, l);
	memcpy(pub + l, ".pub", 5);
	if (access(pub, F_OK) != 0)
		return 0;
	sio_remote *r = NULL;
	int rc = sio_remote_load(&r, pub);
	int ok = rc == 0 && sio_remote_contains(r, pk);
	sio_remote_free(r);
	if (!ok) {
		cli_err("identity %s: %s", pub,
		        rc ? sio_strerror(rc) : "does not hold the public half of the private key");
		return CLI_ERR;
	}
	return 0;
}

/* The public key of PATH.pub (the first key in it). */
static int pub_of(const char *path, uint8_t pk[SIO_PUBLIC_KEY_BYTES])
{
	char pub[4300];
	snprintf(pub, sizeof pub, "%s.pub", path);
	sio_remote *r = NULL;
	int rc = sio_remote_load(&r, pub);
	if (rc == 0)
		rc = sio_remote_key(r, 0, pk);
	sio_remote_free(r);
	if (rc)
		cli_err("identity %s: %s", pub, sio_strerror(rc));
	return rc ? CLI_ERR : 0;
}

static void say_identity(const struct cli_opts *o, const uint8_t pk[SIO_PUBLIC_KEY_BYTES],
                         const char *path, const char *how)
{
	if (!o->verbose)
		return;
	char fp[SIO_FINGERPRINT_MAX];
	if (sio_fingerprint(pk, fp, sizeof fp) != 0)
		fp[0] = 0;
	fprintf(stderr, "sio: identity %s %s: signing with %s\n", fp, path, how);
}

int cli_load_identity(const struct cli_opts *o, sio_identity **out)
{
	char path[4200];
	*out = NULL;
	if (cli_resolve_identity(o->id_dir, path, sizeof path))
		return CLI_ERR;
	uint8_t pk[SIO_PUBLIC_KEY_BYTES];
	int encrypted = 0, absent = access(path, F_OK) != 0;
	int rc = 0;
	errno = 0;
	if (absent) {
		if (pub_of(path, pk))
			return CLI_ERR;
	} else {
		rc = sio_private_key_info(path, pk, &encrypted, NULL, 0);
		if (rc == 0 && check_pub(path, pk))
			return CLI_ERR;
	}
	/* the agent: asked for (--agent), or needed and holding the key */
	const char *sock = getenv("SSH_AUTH_SOCK");
	if (rc == 0 && (o->agent > 0 || (o->agent == 0 && (encrypted || absent) && sock && *sock))) {
		int arc = sio_identity_from_agent(out, NULL, pk);
		if (arc == 0) {
			char how[200];
			snprintf(how, sizeof how, "the ssh-agent at %.150s", sock);
			say_identity(o, pk, path, how);
			return 0;
		}
		if (o->agent > 0 || absent) {
			cli_err("identity %s: %s%s", path,
			        !sock || !*sock ? "SSH_AUTH_SOCK is not set: no ssh-agent"
			                        : arc == SIO_EAGENT ? "the ssh-agent does not hold this key (add it with: ssh-add)"
			                                            : sio_strerror(arc),
			        absent && o->agent <= 0 ? " (and the private key file is absent)" : "");
			return CLI_ERR;
		}
		/* encrypted, the agent lacks it: ask for the passphrase instead */
	}
	if (rc == 0 && absent) {
		cli_err("identity %s: the private key file is absent and %s", path,
		        o->agent < 0 ? "--no-agent was given" : "SSH_AUTH_SOCK is not set: no ssh-agent");
		return CLI_ERR;
	}
	struct ask_ctx a = {o->passphrase_file, 0, 0, 0};
	for (int tries = 0; rc == 0; tries++) {
		errno = 0;
		rc = sio_identity_load_ask(out, path, ask_cb, &a);
		if (rc == SIO_EPASSPHRASE && a.interactive && tries < 2) {
			fprintf(stderr, "sio: wrong passphrase, try again\n");
			rc = 0;
			continue;
		}
		break;
	}
	if (rc == 0) {
		say_identity(o, pk, path, encrypted ? "the key file (passphrase-protected)" : "the key file");
		return 0;
	}
	if (a.failed)
		return CLI_ERR;
	if (a.none)
		cli_err("identity %s is passphrase-protected and there is no terminal to ask on: "
		        "use --passphrase-file FILE, SIO_ASKPASS or an ssh-agent holding the key",
		        path);
	else
		cli_err("identity %s: %s", path,
		        rc == SIO_EIO && errno ? strerror(errno) : sio_strerror(rc));
	return CLI_ERR;
}

int cli_load_remote(const char *path, sio_remote **out)
{
	char msg[300];
	errno = 0;
	int rc = sio_remote_load_err(out, path, msg, sizeof msg);
	if (rc == 0)
		return 0;
	if (msg[0])
		cli_err("%s: %s", path, msg);
	else
		cli_err("%s: %s", path, rc == SIO_EIO && errno ? strerror(errno) : sio_strerror(rc));
	return CLI_ERR;
}
