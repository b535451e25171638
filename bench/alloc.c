/* Heap-allocation counting for B/op and allocs/op.
 *
 * Normal builds interpose malloc, calloc, realloc, free and the aligned
 * allocators in the sio-bench executable itself: the wrappers count (one
 * relaxed atomic add when enabled, a single load otherwise) and call glibc's
 * __libc_* entry points. Every library the program uses (ours, libsodium,
 * libcrypto, libc) resolves malloc to these wrappers, and every thread is
 * counted. Sanitizer builds must not replace the allocator; they use the
 * sanitizer runtime's malloc hooks instead. */
#include <execinfo.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "bench.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define BENCH_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define BENCH_SANITIZER 1
#endif
#endif

static atomic_int counting;
static _Atomic uint64_t n_allocs, n_bytes;

/* SIO_BENCH_ALLOC_TRACE=N: print the call stacks of the first N allocations
 * counted inside measured windows (to find who allocates in steady state). */
static int trace_left = -1;
static __thread int in_trace;

static void trace(size_t n)
{
	if (in_trace || trace_left <= 0)
		return;
	in_trace = 1; /* backtrace() may allocate on its first call */
	trace_left--;
	void *pc[16];
	int k = backtrace(pc, 16);
	char head[64];
	int hl = snprintf(head, sizeof head, "sio-bench: allocation of %zu bytes at\n", n);
	if (hl > 0)
		(void)!write(2, head, (size_t)hl);
	backtrace_symbols_fd(pc, k, 2);
	in_trace = 0;
}

static inline void count(size_t n)
{
	if (atomic_load_explicit(&counting, memory_order_relaxed)) {
		atomic_fetch_add_explicit(&n_allocs, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&n_bytes, n, memory_order_relaxed);
		if (trace_left > 0)
			trace(n);
	}
}

void bench_alloc_enable(int on)
{
	if (trace_left < 0) {
		const char *e = getenv("SIO_BENCH_ALLOC_TRACE");
		trace_left = e ? atoi(e) : 0;
	}
	atomic_store(&counting, on);
}

void bench_alloc_reset(void)
{
	atomic_store(&n_allocs, 0);
	atomic_store(&n_bytes, 0);
}

void bench_alloc_read(uint64_t *c, uint64_t *b)
{
	*c = atomic_load(&n_allocs);
	*b = atomic_load(&n_bytes);
}

#ifdef BENCH_SANITIZER

/* Declared by the sanitizer runtimes (gcc knows it as a builtin, with a
 * different return type than clang's header: the result is not used). */
void __sanitizer_install_malloc_and_free_hooks(void (*m)(const volatile void *, size_t),
					       void (*f)(const volatile void *));
static int hooks_ok;

static void on_malloc(const volatile void *p, size_t n)
{
	(void)p;
	count(n);
}

static void on_free(const volatile void *p)
{
	(void)p;
}

int bench_alloc_available(void)
{
	if (!hooks_ok) {
		__sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
		hooks_ok = 1;
	}
	return hooks_ok;
}

#else

#include <errno.h>

void *__libc_malloc(size_t n);
void *__libc_calloc(size_t n, size_t m);
void *__libc_realloc(void *p, size_t n);
void __libc_free(void *p);
void *__libc_memalign(size_t align, size_t n);

int bench_alloc_available(void)
{
	return 1;
}

/* The interposed allocator: prototypes come from the C library headers we
 * deliberately do not include here (they would clash on attributes). */
void *malloc(size_t n);
void *calloc(size_t n, size_t m);
void *realloc(void *p, size_t n);
void free(void *p);
void *aligned_alloc(size_t align, size_t n);
int posix_memalign(void **out, size_t align, size_t n);
void *memalign(size_t align, size_t n);

void *malloc(size_t n)
{
	count(n);
	return __libc_malloc(n);
}

void *calloc(size_t n, size_t m)
{
	count(n * m);
	return __libc_calloc(n, m);
}

void *realloc(void *p, size_t n)
{
	count(n);
	return __libc_realloc(p, n);
}

void free(void *p)
{
	__libc_free(p);
}

void *memalign(size_t align, size_t n)
{
	count(n);
	return __libc_memalign(align, n);
}

void *aligned_alloc(size_t align, size_t n)
{
	count(n);
	return __libc_memalign(align, n);
}

int posix_memalign(void **out, size_t align, size_t n)
{
	if (align < sizeof(void *) || (align & (align - 1)))
		return EINVAL;
	count(n);
	void *p = __libc_memalign(align, n);
	if (!p)
		return ENOMEM;
	*out = p;
	return 0;
}

#endif
