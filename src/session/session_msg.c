/* Public session API, message part (layer 3): the byte queues of received
 * data, reading, handlers, messengers. Writing, the write queue and the
 * completion objects: session_write.c. See session_int.h for the locking
 * rules. */
#include <sched.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/membarrier.h>

#include "session_int.h"

/* ---- byte queues ---------------------------------------------------------- */

/* The queues hold decrypted messages (the read stream, messengers) and the
 * event arena. Invariant: bytes outside [head, len) hold no message data:
 * what is consumed is wiped at once, and so is what a move or a growth
 * leaves behind. Each byte is thus wiped once, after its last use. */
int sio_bq_put(struct sio_bq *q, const void *a, size_t alen, const void *b, size_t blen)
{
	size_t need = alen + blen;
	if (q->head == q->len)
		q->head = q->len = 0;
	if (q->cap - q->len < need) {
		size_t used = q->len - q->head;
		if (q->head > 0 && q->cap - used >= need && used < q->cap / 2) {
			memmove(q->buf, q->buf + q->head, used);
			/* what the move did not overwrite: [max(used, head), len) */
			size_t from = used > q->head ? used : q->head;
			sodium_memzero(q->buf + from, q->len - from);
		} else {
			size_t nc = q->cap ? q->cap : 4096;
			while (nc < used + need)
				nc *= 2;
			uint8_t *n = malloc(nc); /* not realloc: the old block is wiped first */
			if (!n)
				return SIO_ENOMEM;
			if (used)
				memcpy(n, q->buf + q->head, used);
			if (q->buf)
				sodium_memzero(q->buf + q->head, used);
			free(q->buf);
			q->buf = n;
			q->cap = nc;
		}
		q->len = used;
		q->head = 0;
	}
	if (alen)
		memcpy(q->buf + q->len, a, alen);
	if (blen)
		memcpy(q->buf + q->len + alen, b, blen);
	q->len += need;
	return 0;
}

void sio_bq_wipe_free(struct sio_bq *q)
{
	if (q->buf)
		sodium_memzero(q->buf + q->head, q->len - q->head);
	free(q->buf);
	memset(q, 0, sizeof(*q));
}

/* The arena after its events ran: everything in it was used. */
void sio_bq_wipe_all(struct sio_bq *q)
{
	if (q->len)
		sodium_memzero(q->buf, q->len);
	q->head = q->len = 0;
}

static size_t bq_get(struct sio_bq *q, void *out, size_t n)
{
	size_t avail = q->len - q->head;
	if (n > avail)
		n = avail;
	if (n && out)
		memcpy(out, q->buf + q->head, n);
	if (n)
		sodium_memzero(q->buf + q->head, n); /* the reader has its copy */
	q->head += n;
	if (q->head == q->len)
		q->head = q->len = 0;
	return n;
}

/* ---- reading ------------------------------------------------------------ */

/* The session ended: 0 after a graceful close, else the error. */
static int end_code(const sio_session *s)
{
	return s->close_err;
}

ssize_t sio_read_timeout(sio_session *s, void *buf, size_t len, int timeout_ms)
{
	if (!s || (!buf && len))
		return SIO_EINVAL;
	uint64_t deadline = sio_deadline_of(timeout_ms);
	pthread_mutex_lock(&s->sh->mu);
	ssize_t r;
	for (;;) {
		if (s->rd.len > s->rd.head) {
			r = (ssize_t)bq_get(&s->rd, buf, len);
			if (s->input_stalled)
				sio_kick(s);
			break;
		}
		if (atomic_load(&s->state) == SIO_STATE_CLOSED) {
			r = end_code(s);
			break;
		}
		if (sio_nonblocking(s)) {
			r = SIO_EAGAIN;
			break;
		}
		if (timeout_ms == 0) {
			r = SIO_EAGAIN;
			break;
		}
		if (sio_now_ns() >= deadline) {
			r = SIO_ETIMEDOUT;
			break;
		}
		sio_reader_wait(s, deadline);
	}
	pthread_mutex_unlock(&s->sh->mu);
	return r;
}

ssize_t sio_read(sio_session *s, void *buf, size_t len)
{
	return sio_read_timeout(s, buf, len, -1);
}

/* ---- handlers ----------------------------------------------------------- */

struct sio_handler *sio_find_handler(sio_session *s, uint32_t type)
{
	for (size_t i = 0; i < s->nh; i++)
		if (s->h[i].type == type)
			return &s->h[i];
	return NULL;
}

static int handler_set(sio_session *s, uint32_t type, sio_message_fn fn, sio_handler_error_fn efn,
		       void *ctx, sio_messenger *m)
{
	s->rx_cev = 0; /* cb_deliver looks the type up again */
	struct sio_handler *h = sio_find_handler(s, type);
	if (h && h->m && !m)
		return SIO_ESTATE; /* a messenger owns this type */
	if (!fn && !m) {
		if (h) {
			size_t i = (size_t)(h - s->h);
			memmove(h, h + 1, (s->nh - i - 1) * sizeof(*h));
			s->nh--;
		}
		return 0;
	}
	if (!h) {
		if (s->nh == s->caph) {
			size_t nc = s->caph ? 2 * s->caph : 8;
			struct sio_handler *n = realloc(s->h, nc * sizeof(*n));
			if (!n)
				return SIO_ENOMEM;
			s->h = n;
			s->caph = nc;
		}
		h = &s->h[s->nh++];
	}
	h->type = type;
	h->fn = fn;
	h->efn = efn;
	h->ctx = ctx;
	h->m = m;
	return 0;
}

int sio_set_handler(sio_session *s, uint32_t type, sio_message_fn on_message,
		    sio_handler_error_fn on_error, void *ctx)
{
	if (!s || !sio_check_type(type))
		return SIO_EINVAL;
	pthread_mutex_lock(&s->sh->mu);
	int r = handler_set(s, type, on_message, on_error, ctx, NULL);
	pthread_mutex_unlock(&s->sh->mu);
	return r;
}

int sio_set_default_handler(sio_session *s, sio_message_fn on_message, void *ctx)
{
	if (!s)
		return SIO_EINVAL;
	pthread_mutex_lock(&s->sh->mu);
	s->rx_cev = 0; /* cb_deliver looks the type up again */
	s->def_fn = on_message;
	s->def_ctx = ctx;
	pthread_mutex_unlock(&s->sh->mu);
	return 0;
}

/* ---- messengers ----------------------------------------------------------- */

void sio_messenger_push(sio_messenger *m, const uint8_t *data, size_t len)
{
	uint32_t l = (uint32_t)len;
	if (sio_bq_put(&m->q, &l, sizeof(l), data, len) < 0)
		return;
	m->msgs++;
	m->in_msgs++;
	m->in_bytes += len;
}

int sio_messenger_open(sio_session *s, uint32_t type, sio_messenger **out)
{
	if (!s || !out || !sio_check_type(type))
		return SIO_EINVAL;
	*out = NULL;
	sio_messenger *m = calloc(1, sizeof(*m));
	if (!m)
		return SIO_ENOMEM;
	m->s = s;
	m->type = type;
	pthread_mutex_lock(&s->sh->mu);
	struct sio_handler *h = sio_find_handler(s, type);
	int r = h && h->m ? SIO_ESTATE : handler_set(s, type, NULL, NULL, NULL, m);
	pthread_mutex_unlock(&s->sh->mu);
	if (r < 0) {
		free(m);
		return r;
	}
	*out = m;
	return 0;
}

ssize_t sio_messenger_read(sio_messenger *m, void *buf, size_t len, size_t *full, int timeout_ms)
{
	if (!m || (!buf && len))
		return SIO_EINVAL;
	sio_session *s = m->s;
	if (!s)
		return SIO_ECLOSED;
	uint64_t deadline = sio_deadline_of(timeout_ms);
	pthread_mutex_lock(&s->sh->mu);
	ssize_t r;
	for (;;) {
		if (!m->paused && m->msgs > 0) {
			uint32_t l;
			bq_get(&m->q, &l, sizeof(l));
			size_t n = l < len ? l : len;
			bq_get(&m->q, buf, n);
			bq_get(&m->q, NULL, l - n);
			m->msgs--;
			if (full)
				*full = l;
			r = (ssize_t)n;
			if (s->input_stalled)
				sio_kick(s);
			break;
		}
		if (atomic_load(&s->state) == SIO_STATE_CLOSED) {
			r = end_code(s);
			break;
		}
		if (sio_nonblocking(s) || timeout_ms == 0) {
			r = SIO_EAGAIN;
			break;
		}
		if (sio_now_ns() >= deadline) {
			r = SIO_ETIMEDOUT;
			break;
		}
		sio_wait_cond(s, &s->cond, &s->waiters, deadline);
	}
	pthread_mutex_unlock(&s->sh->mu);
	return r;
}

int sio_messenger_write(sio_messenger *m, const void *data, size_t len)
{
	if (!m)
		return SIO_EINVAL;
	sio_session *s = m->s;
	if (!s)
		return SIO_ECLOSED;
	int r = sio_write_message(s, m->type, data, len);
	if (r == 0) {
		pthread_mutex_lock(&s->sh->mu);
		m->out_msgs++;
		m->out_bytes += len;
		pthread_mutex_unlock(&s->sh->mu);
	}
	return r;
}

void sio_messenger_pause(sio_messenger *m)
{
	if (!m || !m->s)
		return;
	pthread_mutex_lock(&m->s->sh->mu);
	m->paused = 1;
	pthread_mutex_unlock(&m->s->sh->mu);
}

void sio_messenger_resume(sio_messenger *m)
{
	if (!m || !m->s)
		return;
	sio_session *s = m->s;
	pthread_mutex_lock(&s->sh->mu);
	m->paused = 0;
	sio_signal(s);
	pthread_mutex_unlock(&s->sh->mu);
}

void sio_messenger_counts(const sio_messenger *m, uint64_t *msgs_in, uint64_t *bytes_in,
			  uint64_t *msgs_out, uint64_t *bytes_out)
{
	if (!m)
		return;
	sio_session *s = m->s;
	if (s)
		pthread_mutex_lock(&s->sh->mu);
	if (msgs_in)
		*msgs_in = m->in_msgs;
	if (bytes_in)
		*bytes_in = m->in_bytes;
	if (msgs_out)
		*msgs_out = m->out_msgs;
	if (bytes_out)
		*bytes_out = m->out_bytes;
	if (s)
		pthread_mutex_unlock(&s->sh->mu);
}

void sio_messenger_close(sio_messenger *m)
{
	if (!m)
		return;
	sio_session *s = m->s;
	if (s) {
		pthread_mutex_lock(&s->sh->mu);
		struct sio_handler *h = sio_find_handler(s, m->type);
		if (h && h->m == m) {
			h->m = NULL;
			handler_set(s, m->type, NULL, NULL, NULL, NULL);
		}
		pthread_mutex_unlock(&s->sh->mu);
	}
	sio_bq_wipe_free(&m->q); /* messages never read */
	free(m);
}
