/* sio-bench: the benchmark program (issue #9). Rows are registered in tables
 * (rows_*.c); main.c scales iterations like Go's testing package and prints
 * one line per row in Go's benchmark format. */
#ifndef SIO_BENCH_H
#define SIO_BENCH_H

#include <stddef.h>
#include <stdint.h>

/* A row. setup() runs once per measurement series (sessions, threads,
 * handshake); run() performs N operations and brackets the measured part
 * with bench_start()/bench_stop(); teardown() frees what setup() made.
 * run() returns 0, or -1 after bench_fail() said why (1 after bench_fail():
 * skipped, a feature the row needs is missing from this build). setup()
 * returns the same codes. */
struct bench_row {
	const char *name;  /* without the "Benchmark" prefix and "-N" suffix */
	const char *group; /* "limit", "kx", "session", "peer", "tool", "listener" */
	size_t arg;        /* row parameter (message size, ...) */
	size_t bytes;      /* bytes per operation for MB/s (0: no MB/s column) */
	int (*setup)(void **st, const struct bench_row *r);
	int (*run)(void *st, uint64_t n);
	void (*teardown)(void *st);
	uint64_t fixed_n; /* nonzero: run exactly this many ops once (no scaling) */
};

/* Measured window: starts the clock and the allocation counters. */
void bench_start(void);
/* Stops both. */
void bench_stop(void);
/* CPU time (ns) the row measured itself for the current run (a process's
 * or a thread's clock, see rows_listener.c): summed over the run and printed
 * as cpu-ns/op beside the wall-clock ns/op. */
void bench_cpu_add(uint64_t ns);
/* Records a failure message for the current row (printf-like). */
void bench_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Monotonic nanoseconds. */
uint64_t bench_now_ns(void);
/* Nonzero in quick (smoke-test) mode. */
extern int bench_quick;
/* Bytes pushed through the command-line tools (default 1 GiB). */
extern uint64_t bench_stream_bytes;
/* Path of the sio command ("" when not found). */
extern char bench_sio_path[4096];

/* Allocation counting (alloc.c): counts every malloc/calloc/realloc/
 * aligned allocation of any thread while enabled. */
void bench_alloc_enable(int on);
void bench_alloc_reset(void);
void bench_alloc_read(uint64_t *count, uint64_t *bytes);
/* 1 when counting works in this build. */
int bench_alloc_available(void);

/* Row tables (NULL-name terminated). */
extern const struct bench_row bench_rows_limit[];
extern const struct bench_row bench_rows_kx[];
extern const struct bench_row bench_rows_session[];
extern const struct bench_row bench_rows_peer[];
extern const struct bench_row bench_rows_tool[];
extern const struct bench_row bench_rows_listener[];

/* A stopwatch-free helper: sleeps-free wait of one thread for a counter to
 * reach a value, with wake-ups only when someone waits (eventcount). */
struct bench_gate;
struct bench_gate *bench_gate_new(void);
void bench_gate_free(struct bench_gate *g);
/* Waits until *v >= target or timeout_ms passes without *v changing.
 * Returns 0, or -1 on timeout. */
int bench_gate_wait(struct bench_gate *g, const _Atomic uint64_t *v, uint64_t target,
		    int stall_ms);
/* Call after changing a value a waiter may be waiting on. */
void bench_gate_notify(struct bench_gate *g);

#endif
