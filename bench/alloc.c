/* Heap-allocation counting for B/op and allocs/op.
 *
 * Normal builds interpose malloc, calloc, realloc, free and the aligned
 * allocators in the sio-bench executable itself: the wrappers count (one
 * relaxed atomic add when enabled, a single load otherwise) and call glibc's
 * __libc_* entry points. Every library the program uses (ours, libsodium,
 * libcrypto, libc) resolves malloc to these wrappers, and every thread is
 * counted. Sanitizer builds must not replace the allocator; they use the
 * sanitizer runtime's malloc hooks instead. */
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

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

static inline void count(size_t n)
{
	if (atomic_load_explicit(&counting, memory_order_relaxed)) {
		atomic_fetch_add_explicit(&n_allocs, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&n_bytes, n, memory_order_relaxed);
	}
}

void bench_alloc_enable(int on)
{
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
