/* sio-bench: runs the benchmark rows and prints them in Go's format
 *   BenchmarkName-N  iterations  ns/op  [MB/s]  B/op  allocs/op
 * then a summary of the targets as ratios measured in the same run.
 * See docs/BENCHMARKS.md. */
#include <errno.h>
#include <limits.h>
#include <regex.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "bench.h"
#include "secureio.h"

int bench_quick;
uint64_t bench_stream_bytes = 1ull << 30;
char bench_sio_path[4096];

static uint64_t t_start, t_elapsed, c_elapsed;
static int c_set;
static uint64_t a_count, a_bytes;
static int timer_on;
static char fail_msg[400];

void bench_start(void)
{
	bench_alloc_reset();
	bench_alloc_enable(1);
	timer_on = 1;
	t_start = bench_now_ns();
}

void bench_stop(void)
{
	uint64_t now = bench_now_ns();
	bench_alloc_enable(0);
	if (timer_on)
		t_elapsed += now - t_start;
	timer_on = 0;
	uint64_t c, b;
	bench_alloc_read(&c, &b);
	a_count += c;
	a_bytes += b;
}

void bench_cpu_add(uint64_t ns)
{
	c_elapsed += ns;
	c_set = 1;
}

void bench_fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(fail_msg, sizeof fail_msg, fmt, ap);
	va_end(ap);
}

/* ---- results ------------------------------------------------------------ */

struct result {
	const char *name;
	const char *group;
	uint64_t n;
	double ns_op, mbps;
	double cpu_ns_op; /* rows that measure their CPU time (has_cpu) */
	uint64_t b_op, allocs_op;
	int has_mbps, has_cpu;
	int failed;
	char err[512];
};

static struct result *res;
static size_t nres, capres;
static int ncpu = 1;
static int json;

static struct result *add_result(void)
{
	if (nres == capres) {
		capres = capres ? capres * 2 : 64;
		res = realloc(res, capres * sizeof(*res));
		if (!res) {
			perror("realloc");
			exit(1);
		}
	}
	memset(&res[nres], 0, sizeof(*res));
	return &res[nres++];
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Median over repetitions of the named row; NULL when absent or failed. */
static const struct result *lookup(const char *name, struct result *out)
{
	double ns[256], mb[256], cpu[256];
	size_t k = 0;
	const struct result *last = NULL;
	for (size_t i = 0; i < nres && k < 256; i++) {
		if (strcmp(res[i].name, name) || res[i].failed)
			continue;
		ns[k] = res[i].ns_op;
		mb[k] = res[i].mbps;
		cpu[k] = res[i].cpu_ns_op;
		k++;
		last = &res[i];
	}
	if (!last)
		return NULL;
	qsort(ns, k, sizeof(double), cmp_double);
	qsort(mb, k, sizeof(double), cmp_double);
	qsort(cpu, k, sizeof(double), cmp_double);
	*out = *last;
	out->ns_op = ns[k / 2];
	out->mbps = mb[k / 2];
	out->cpu_ns_op = cpu[k / 2];
	return out;
}

/* ---- options -------------------------------------------------------------- */

static regex_t filter;
static int have_filter;
static double benchtime_s = 1.0;
static uint64_t benchtime_n; /* "100x": fixed iterations */
static int count = 1;
static int list_only;

static void usage(FILE *f)
{
	fprintf(f,
		"usage: sio-bench [options] [REGEX]\n"
		"  -b, --bench REGEX     run rows whose name matches REGEX (extended regex;\n"
		"                        a plain word is a substring match)\n"
		"  -t, --benchtime D     target time per row: 1s, 300ms, 2.5s, or Nx for N iterations\n"
		"                        (default 1s)\n"
		"  -c, --count N         repeat every row N times (default 1; ratios use the median)\n"
		"  -q, --quick           smoke test: every row briefly (20ms, 16 MiB through the tools)\n"
		"      --json            print one JSON document instead of text\n"
		"      --stream-bytes N  bytes pushed through sio/socat/spiped (default 1073741824;\n"
		"                        suffixes k, M, G)\n"
		"      --sio PATH        the sio command (default: next to sio-bench)\n"
		"  -l, --list            list row names and exit\n"
		"  -h, --help            this text\n");
}

static uint64_t parse_size(const char *s)
{
	char *e;
	double v = strtod(s, &e);
	if (*e == 'k' || *e == 'K')
		v *= 1024;
	else if (*e == 'm' || *e == 'M')
		v *= 1024 * 1024;
	else if (*e == 'g' || *e == 'G')
		v *= 1024.0 * 1024 * 1024;
	else if (*e)
		return 0;
	return (uint64_t)v;
}

static int parse_benchtime(const char *s)
{
	char *e;
	double v = strtod(s, &e);
	if (e == s || v <= 0)
		return -1;
	if (!strcmp(e, "x")) {
		benchtime_n = (uint64_t)v;
		return 0;
	}
	benchtime_n = 0;
	if (!strcmp(e, "s") || !*e)
		benchtime_s = v;
	else if (!strcmp(e, "ms"))
		benchtime_s = v / 1e3;
	else if (!strcmp(e, "us"))
		benchtime_s = v / 1e6;
	else if (!strcmp(e, "m"))
		benchtime_s = v * 60;
	else
		return -1;
	return 0;
}

static void find_sio(void)
{
	char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n <= 0)
		return;
	self[n] = 0;
	char *slash = strrchr(self, '/');
	if (!slash)
		return;
	*slash = 0;
	snprintf(bench_sio_path, sizeof bench_sio_path, "%.4000s/sio", self);
	if (access(bench_sio_path, X_OK))
		bench_sio_path[0] = 0;
}

/* ---- running ------------------------------------------------------------ */

static int matches(const char *name)
{
	char full[256];
	snprintf(full, sizeof full, "Benchmark%s", name);
	return !have_filter || regexec(&filter, full, 0, NULL, 0) == 0;
}

static int run_once(const struct bench_row *r, void *st, uint64_t n, uint64_t *ns)
{
	t_elapsed = 0;
	c_elapsed = 0;
	c_set = 0;
	a_count = a_bytes = 0;
	fail_msg[0] = 0;
	int rc = r->run(st, n);
	if (timer_on)
		bench_stop();
	*ns = t_elapsed ? t_elapsed : 1;
	return rc;
}

static void print_json_string(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
	putchar('"');
}

static void print_row(const struct result *x)
{
	if (json)
		return;
	char name[256];
	snprintf(name, sizeof name, "Benchmark%s-%d", x->name, ncpu);
	if (x->failed) {
		printf("--- FAIL: %s\n    %s\n", name, x->err);
		fflush(stdout);
		return;
	}
	printf("%-52s\t%10llu\t%14.1f ns/op", name, (unsigned long long)x->n, x->ns_op);
	if (x->has_mbps)
		printf("\t%10.2f MB/s", x->mbps);
	printf("\t%8llu B/op\t%6llu allocs/op", (unsigned long long)x->b_op,
	       (unsigned long long)x->allocs_op);
	if (x->has_cpu)
		printf("\t%14.1f cpu-ns/op", x->cpu_ns_op);
	printf("\n");
	fflush(stdout);
}

static uint64_t row_bytes(const struct bench_row *r)
{
	return r->bytes == (size_t)-1 ? bench_stream_bytes : r->bytes;
}

static void run_row(const struct bench_row *r)
{
	struct result *x = add_result();
	x->name = r->name;
	x->group = r->group;
	void *st = NULL;
	fail_msg[0] = 0;
	int src = r->setup ? r->setup(&st, r) : 0;
	if (src > 0) { /* skipped: not counted as a result */
		if (!json)
			printf("--- SKIP: Benchmark%s-%d\n    %s\n", r->name, ncpu, fail_msg);
		else
			fprintf(stderr, "sio-bench: skip %s: %s\n", r->name, fail_msg);
		fflush(stdout);
		nres--;
		return;
	}
	if (src) {
		x->failed = 1;
		snprintf(x->err, sizeof x->err, "setup: %s", fail_msg[0] ? fail_msg : "failed");
		print_row(x);
		return;
	}
	uint64_t n = 1, ns = 0;
	int rc;
	uint64_t target_ns = (uint64_t)(benchtime_s * 1e9);
	uint64_t fixed = r->fixed_n ? r->fixed_n : benchtime_n;
	if (fixed) {
		n = fixed;
		rc = run_once(r, st, n, &ns);
	} else {
		rc = run_once(r, st, n, &ns); /* also the warm-up */
		while (rc == 0 && ns < target_ns && n < 1000000000ull) {
			uint64_t last = n;
			double per = (double)ns / (double)n;
			if (per < 1)
				per = 1;
			double want = (double)target_ns / per * 1.2;
			if (want > 100.0 * (double)last)
				want = 100.0 * (double)last;
			n = (uint64_t)want;
			if (n <= last)
				n = last + 1;
			if (n > 1000000000ull)
				n = 1000000000ull;
			rc = run_once(r, st, n, &ns);
		}
	}
	if (rc > 0) { /* the row found its feature missing in this build */
		if (r->teardown)
			r->teardown(st);
		if (!json)
			printf("--- SKIP: Benchmark%s-%d\n    %s\n", r->name, ncpu, fail_msg);
		else
			fprintf(stderr, "sio-bench: skip %s: %s\n", r->name, fail_msg);
		fflush(stdout);
		nres--;
		return;
	}
	if (rc) {
		x->failed = 1;
		snprintf(x->err, sizeof x->err, "%s", fail_msg[0] ? fail_msg : "failed");
	}
	x->n = n;
	x->ns_op = (double)ns / (double)n;
	uint64_t by = row_bytes(r);
	x->has_mbps = by > 0;
	x->mbps = by ? (double)by * (double)n / ((double)ns / 1e9) / 1e6 : 0;
	x->has_cpu = c_set;
	x->cpu_ns_op = (double)c_elapsed / (double)n;
	x->b_op = a_bytes / n;
	x->allocs_op = a_count / n;
	if (r->teardown)
		r->teardown(st);
	print_row(x);
}

/* ---- targets -------------------------------------------------------------- */

enum tkind {
	T_MB_RATIO,    /* MB/s of row / MB/s of base >= goal */
	T_NS_MAX,      /* ns/op of row <= goal */
	T_NS_RATIO,    /* ns/op of row / ns/op of (base + base2) <= goal */
	T_NS_DIFF,     /* ns/op of row - ns/op of base <= goal */
	T_MB_MIN,      /* MB/s of row >= goal */
	T_ALLOCS_ZERO, /* allocs/op of every row named row... is 0 */
	T_NS_SPEEDUP,  /* ns/op of base / ns/op of row >= goal (times faster) */
	T_BYTE_COST,   /* ns per byte of row / ns per byte of base <= goal */
	T_PIPELINE,    /* MB/s of row / the two-core pipeline limit of base (raw
			* transport rate R) and base2 (seal+open ns t) >= goal */
	T_CPU_RATE,    /* ops per CPU-second of row / ops per CPU-second of base
			* (cpu-ns/op of base / cpu-ns/op of row) >= goal */
};

struct target {
	const char *what;
	enum tkind kind;
	const char *row, *base; /* base: baseline row (ratios) */
	double goal;
	const char *goal_text;
	const char *base2; /* T_NS_RATIO: added to base (unavoidable work) */
};

static const struct target targets[] = {
	{"async 64000 vs one-core AEAD seal+open 64000", T_MB_RATIO, "SessionWriteMessageAsyncRead64000",
	 "AEADSealOpen64000", 0.75, ">= 0.75", NULL},
	{"async 1 byte", T_NS_MAX, "SessionWriteMessageAsyncRead1", NULL, 40, "<= 40 ns/op", NULL},
	{"async 16 bytes", T_NS_MAX, "SessionWriteMessageAsyncRead16", NULL, 40, "<= 40 ns/op", NULL},
	{"async 1300_max1400 (UNIX) vs Go 99.5 MB/s", T_MB_MIN,
	 "SessionWriteMessageAsyncRead1300_max1400", NULL, 4 * 99.5, ">= 4x Go = 398 MB/s", NULL},
	{"async 1300_max1400 UDP vs raw UDP 1300", T_MB_RATIO,
	 "SessionWriteMessageAsyncRead1300_max1400_udp", "RawUDP1300", 0.8, ">= 0.80", NULL},
	{"sync round trip 1 byte vs raw round trip", T_NS_RATIO, "SessionWriteRead1",
	 "RawSeqpacketRoundTrip1", 2.0, "<= 2.0", NULL},
	/* a synchronous 64000-byte message cannot beat its own seal+open (done
	 * one after the other): the baseline is the raw round trip plus that */
	{"sync 64000 vs raw round trip + AEAD seal+open", T_NS_RATIO, "SessionWriteRead64000",
	 "RawSeqpacketRoundTrip1", 2.0, "<= 2.0", "AEADSealOpen64000"},
	{"zero allocations per message, every async row", T_ALLOCS_ZERO, "SessionWriteMessageAsyncRead",
	 NULL, 0, "0 allocs/op", NULL},
	/* issue #16: small messages at memory speed, and the peers beside us */
	{"async 1024 per byte vs async 64000 per byte", T_BYTE_COST, "SessionWriteMessageAsyncRead1024",
	 "SessionWriteMessageAsyncRead64000", 1.25, "<= 1.25", NULL},
	{"async 64000 vs two-core pipeline limit", T_PIPELINE, "SessionWriteMessageAsyncRead64000",
	 "RawSeqpacket64000", 0.85, ">= 0.85", "AEADSealOpen64000"},
	{"async 1 byte vs CurveZMQ PUSH/PULL 1", T_NS_SPEEDUP, "SessionWriteMessageAsyncRead1",
	 "ZmqCurvePushPull1", 10, ">= 10x", NULL},
	{"async 16 bytes vs CurveZMQ PUSH/PULL 16", T_NS_SPEEDUP, "SessionWriteMessageAsyncRead16",
	 "ZmqCurvePushPull16", 10, ">= 10x", NULL},
	{"async 64000 vs CurveZMQ PUSH/PULL 64000", T_NS_SPEEDUP, "SessionWriteMessageAsyncRead64000",
	 "ZmqCurvePushPull64000", 2, ">= 2x", NULL},
	{"handshake", T_NS_MAX, "Handshake", NULL, 1e6, "< 1 ms", NULL},
	{"junk kx naming the pinned key vs a stranger", T_NS_DIFF, "KxJunkPinned", "KxJunkStranger",
	 2000, "<= +2 us", NULL},
	{"replayed old kx vs junk naming a stranger", T_NS_DIFF, "KxJunkReplayOld", "KxJunkStranger",
	 2000, "<= +2 us", NULL},
	/* issue #17: a listener's handshakes per second of its CPU */
	{"listener handshakes per CPU-second vs crypto bound", T_CPU_RATE, "ListenerHandshakeRate",
	 "HandshakeCryptoBound", 0.7, ">= 0.7", NULL},
	{"sio stream vs socat TLS ChaCha20-Poly1305", T_MB_RATIO, "StreamSio", "StreamSocatTLSChaCha",
	 1.5, ">= 1.5", NULL},
	{"sio stream vs spiped", T_MB_RATIO, "StreamSio", "StreamSpiped", 3.0, ">= 3.0", NULL},
	{NULL, 0, NULL, NULL, 0, NULL, NULL},
};

struct tresult {
	const struct target *t;
	int have;
	double value, ratio;
	int met;
	char detail[200];
};

static void eval_target(const struct target *t, struct tresult *o)
{
	struct result a, b, b2;
	memset(o, 0, sizeof(*o));
	o->t = t;
	if (t->kind == T_ALLOCS_ZERO) {
		uint64_t worst = 0;
		int seen = 0;
		const char *worst_name = "";
		for (size_t i = 0; i < nres; i++) {
			if (strncmp(res[i].name, t->row, strlen(t->row)) || res[i].failed)
				continue;
			seen++;
			if (res[i].allocs_op >= worst) {
				worst = res[i].allocs_op;
				worst_name = res[i].name;
			}
		}
		if (!seen || !bench_alloc_available())
			return;
		o->have = 1;
		o->value = (double)worst;
		o->met = worst == 0;
		snprintf(o->detail, sizeof o->detail, "max %llu allocs/op (%s) over %d rows",
			 (unsigned long long)worst, worst_name, seen);
		return;
	}
	if (!lookup(t->row, &a))
		return;
	if (t->base && !lookup(t->base, &b))
		return;
	if (t->base2) {
		if (!lookup(t->base2, &b2))
			return;
		if (t->kind == T_NS_RATIO)
			b.ns_op += b2.ns_op;
	}
	o->have = 1;
	switch (t->kind) {
	case T_MB_RATIO:
		o->value = a.mbps;
		o->ratio = b.mbps > 0 ? a.mbps / b.mbps : 0;
		o->met = o->ratio >= t->goal;
		snprintf(o->detail, sizeof o->detail, "%.1f / %.1f MB/s = %.2f", a.mbps, b.mbps, o->ratio);
		break;
	case T_NS_RATIO:
		o->value = a.ns_op;
		o->ratio = a.ns_op / b.ns_op;
		o->met = o->ratio <= t->goal;
		snprintf(o->detail, sizeof o->detail, "%.0f / %.0f ns/op = %.2f", a.ns_op, b.ns_op, o->ratio);
		break;
	case T_NS_DIFF:
		o->value = a.ns_op;
		o->ratio = a.ns_op / b.ns_op;
		o->met = a.ns_op - b.ns_op <= t->goal;
		snprintf(o->detail, sizeof o->detail, "%.0f - %.0f ns/op = %+.0f ns", a.ns_op, b.ns_op,
			 a.ns_op - b.ns_op);
		break;
	case T_NS_MAX:
		o->value = a.ns_op;
		o->met = a.ns_op <= t->goal;
		snprintf(o->detail, sizeof o->detail, "%.1f ns/op", a.ns_op);
		break;
	case T_NS_SPEEDUP:
		o->value = a.ns_op;
		o->ratio = b.ns_op / a.ns_op;
		o->met = o->ratio >= t->goal;
		snprintf(o->detail, sizeof o->detail, "%.0f / %.0f ns/op = %.2fx", b.ns_op, a.ns_op,
			 o->ratio);
		break;
	case T_BYTE_COST: {
		/* MB/s is bytes per time: the cost of a byte is its inverse */
		double ca = a.mbps > 0 ? 1e3 / a.mbps : 0, cb = b.mbps > 0 ? 1e3 / b.mbps : 0;
		o->value = ca;
		o->ratio = cb > 0 ? ca / cb : 0;
		o->met = cb > 0 && o->ratio <= t->goal;
		snprintf(o->detail, sizeof o->detail, "%.3f / %.3f ns/B = %.2f", ca, cb, o->ratio);
		break;
	}
	case T_PIPELINE: {
		/* one message of S bytes crosses the socket (S / R ns, R from the
		 * raw row in bytes/ns) while the two cores share its seal and
		 * open (t ns on one core, so t / 2 on two) */
		double s_bytes = 64000, r_bpns = b.mbps / 1e3, t_ns = b2.ns_op;
		double limit_ns = r_bpns > 0 ? s_bytes / r_bpns + t_ns / 2 : 0;
		double limit_mbps = limit_ns > 0 ? s_bytes / limit_ns * 1e3 : 0;
		o->value = a.mbps;
		o->ratio = limit_mbps > 0 ? a.mbps / limit_mbps : 0;
		o->met = o->ratio >= t->goal;
		snprintf(o->detail, sizeof o->detail, "%.1f / %.1f MB/s = %.2f", a.mbps, limit_mbps,
			 o->ratio);
		break;
	}
	case T_CPU_RATE:
		if (!a.has_cpu || !b.has_cpu || a.cpu_ns_op <= 0 || b.cpu_ns_op <= 0) {
			o->have = 0;
			break;
		}
		o->value = 1e9 / a.cpu_ns_op;
		o->ratio = b.cpu_ns_op / a.cpu_ns_op;
		o->met = o->ratio >= t->goal;
		snprintf(o->detail, sizeof o->detail, "%.0f / %.0f hs per CPU-s = %.2f (wall %.0f hs/s)",
			 1e9 / a.cpu_ns_op, 1e9 / b.cpu_ns_op, o->ratio, 1e9 / a.ns_op);
		break;
	case T_MB_MIN:
		o->value = a.mbps;
		o->ratio = a.mbps / (t->goal / 4);
		o->met = a.mbps >= t->goal;
		snprintf(o->detail, sizeof o->detail, "%.1f MB/s = %.2fx Go", a.mbps, o->ratio);
		break;
	default:
		break;
	}
}

static void machine_info(char *cpu, size_t n)
{
	snprintf(cpu, n, "unknown");
	FILE *f = fopen("/proc/cpuinfo", "r");
	if (!f)
		return;
	char line[512];
	while (fgets(line, sizeof line, f)) {
		if (!strncmp(line, "model name", 10)) {
			char *c = strchr(line, ':');
			if (c) {
				c++;
				while (*c == ' ' || *c == '\t')
					c++;
				c[strcspn(c, "\n")] = 0;
				snprintf(cpu, n, "%s", c);
			}
			break;
		}
	}
	fclose(f);
}

static void print_summary(void)
{
	struct tresult tr[32];
	size_t nt = 0;
	for (const struct target *t = targets; t->what && nt < 32; t++)
		eval_target(t, &tr[nt++]);
	if (json) {
		char cpu[256];
		struct utsname u;
		uname(&u);
		machine_info(cpu, sizeof cpu);
		printf("{\n  \"goos\": \"linux\",\n  \"machine\": {\"cpu\": ");
		print_json_string(cpu);
		printf(", \"ncpu\": %d, \"kernel\": ", ncpu);
		print_json_string(u.release);
		printf("},\n  \"benchtime_s\": %g,\n  \"quick\": %s,\n  \"rows\": [\n", benchtime_s,
		       bench_quick ? "true" : "false");
		for (size_t i = 0; i < nres; i++) {
			const struct result *x = &res[i];
			printf("    {\"name\": \"Benchmark%s-%d\", \"group\": \"%s\", ", x->name, ncpu, x->group);
			if (x->failed) {
				printf("\"failed\": true, \"error\": ");
				print_json_string(x->err);
			} else {
				printf("\"iterations\": %llu, \"ns_per_op\": %.3f, ", (unsigned long long)x->n,
				       x->ns_op);
				if (x->has_mbps)
					printf("\"mb_per_s\": %.3f, ", x->mbps);
				if (x->has_cpu)
					printf("\"cpu_ns_per_op\": %.3f, ", x->cpu_ns_op);
				printf("\"bytes_per_op\": %llu, \"allocs_per_op\": %llu",
				       (unsigned long long)x->b_op, (unsigned long long)x->allocs_op);
			}
			printf("}%s\n", i + 1 < nres ? "," : "");
		}
		printf("  ],\n  \"targets\": [\n");
		for (size_t i = 0; i < nt; i++) {
			printf("    {\"target\": ");
			print_json_string(tr[i].t->what);
			printf(", \"goal\": ");
			print_json_string(tr[i].t->goal_text);
			if (tr[i].have) {
				printf(", \"value\": %.3f", tr[i].value);
				if (tr[i].t->kind != T_NS_MAX && tr[i].t->kind != T_ALLOCS_ZERO)
					printf(", \"ratio\": %.3f", tr[i].ratio);
				printf(", \"met\": %s, \"detail\": ", tr[i].met ? "true" : "false");
				print_json_string(tr[i].detail);
			} else {
				printf(", \"met\": null");
			}
			printf("}%s\n", i + 1 < nt ? "," : "");
		}
		printf("  ]\n}\n");
		return;
	}
	printf("\ntargets (issues #9, #16 and #17), measured in this run:\n");
	for (size_t i = 0; i < nt; i++) {
		if (!tr[i].have) {
			printf("  %-48s %-22s not measured (row skipped, filtered or failed)\n", tr[i].t->what,
			       tr[i].t->goal_text);
			continue;
		}
		printf("  %-48s %-22s %-40s %s\n", tr[i].t->what, tr[i].t->goal_text, tr[i].detail,
		       tr[i].met ? "met" : "MISSED");
	}
}

int main(int argc, char **argv)
{
	const char *pattern = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define NEEDV()                                                               \
	do {                                                                  \
		if (!v) {                                                     \
			fprintf(stderr, "sio-bench: %s needs a value\n", a); \
			return 2;                                             \
		}                                                             \
		i++;                                                          \
	} while (0)
		if (!strcmp(a, "-b") || !strcmp(a, "--bench") || !strcmp(a, "-bench") || !strcmp(a, "--run")) {
			NEEDV();
			pattern = v;
		} else if (!strcmp(a, "-t") || !strcmp(a, "--benchtime") || !strcmp(a, "-benchtime")) {
			NEEDV();
			if (parse_benchtime(v)) {
				fprintf(stderr, "sio-bench: bad duration %s\n", v);
				return 2;
			}
		} else if (!strcmp(a, "-c") || !strcmp(a, "--count") || !strcmp(a, "-count")) {
			NEEDV();
			count = atoi(v);
			if (count < 1 || count > 100) {
				fprintf(stderr, "sio-bench: bad count %s\n", v);
				return 2;
			}
		} else if (!strcmp(a, "-q") || !strcmp(a, "--quick")) {
			bench_quick = 1;
		} else if (!strcmp(a, "--json")) {
			json = 1;
		} else if (!strcmp(a, "--stream-bytes")) {
			NEEDV();
			bench_stream_bytes = parse_size(v);
			if (!bench_stream_bytes) {
				fprintf(stderr, "sio-bench: bad size %s\n", v);
				return 2;
			}
		} else if (!strcmp(a, "--sio")) {
			NEEDV();
			snprintf(bench_sio_path, sizeof bench_sio_path, "%s", v);
		} else if (!strcmp(a, "-l") || !strcmp(a, "--list")) {
			list_only = 1;
		} else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return 0;
		} else if (a[0] != '-' && !pattern) {
			pattern = a;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (bench_quick) {
		benchtime_s = 0.02;
		benchtime_n = 0;
		if (bench_stream_bytes == 1ull << 30)
			bench_stream_bytes = 16u << 20;
	}
	if (pattern) {
		if (regcomp(&filter, pattern, REG_EXTENDED | REG_NOSUB)) {
			fprintf(stderr, "sio-bench: bad regular expression %s\n", pattern);
			return 2;
		}
		have_filter = 1;
	}
	if (!bench_sio_path[0])
		find_sio();
	long nc = sysconf(_SC_NPROCESSORS_ONLN);
	ncpu = nc > 0 ? (int)nc : 1;

	const struct bench_row *tables[] = {bench_rows_limit, bench_rows_kx, bench_rows_session,
					    bench_rows_peer, bench_rows_tool, bench_rows_listener};
	const size_t ntables = sizeof tables / sizeof tables[0];
	if (list_only) {
		for (size_t t = 0; t < ntables; t++)
			for (const struct bench_row *r = tables[t]; r->name; r++)
				if (matches(r->name))
					printf("Benchmark%s\n", r->name);
		return 0;
	}
	signal(SIGPIPE, SIG_IGN); /* a tool that dies must not kill the bench */
	if (sio_init()) {
		fprintf(stderr, "sio-bench: sio_init failed\n");
		return 1;
	}
	bench_alloc_available();
	if (!json) {
		char cpu[256];
		machine_info(cpu, sizeof cpu);
		printf("goos: linux\ngoarch: %s\npkg: secureio (C, sio-bench)\ncpu: %s\n",
#if defined(__x86_64__)
		       "amd64",
#elif defined(__aarch64__)
		       "arm64",
#else
		       "other",
#endif
		       cpu);
		if (!bench_alloc_available())
			printf("# allocation counting unavailable in this build: B/op and allocs/op read 0\n");
		fflush(stdout);
	}
	int failed = 0;
	for (size_t t = 0; t < ntables; t++)
		for (const struct bench_row *r = tables[t]; r->name; r++) {
			if (!matches(r->name))
				continue;
			for (int c = 0; c < count; c++) {
				run_row(r);
				failed |= res[nres - 1].failed;
			}
		}
	print_summary();
	if (!json)
		printf("%s\n", failed ? "FAIL" : "ok");
	if (have_filter)
		regfree(&filter);
	free(res);
	return failed ? 1 : 0;
}
