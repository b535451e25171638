/* Minimal test helpers shared by every test program.
 * CHECK(cond) records a failure with file:line and keeps going;
 * CHECK_EQ/CHECK_OK compare integers; check_done() prints the plain
 * "N passed, N failed" line and returns the process exit code. */
#ifndef SIO_TEST_CHECK_H
#define SIO_TEST_CHECK_H

#include <stdint.h>
#include <stdio.h>

extern unsigned long check_passed, check_failed;

void check_fail(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define CHECK(cond)                                                                               \
	do {                                                                                      \
		if (cond)                                                                         \
			check_passed++;                                                           \
		else                                                                              \
			check_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);                       \
	} while (0)

#define CHECK_EQ(a, b)                                                                            \
	do {                                                                                      \
		long long check_a_ = (long long)(a), check_b_ = (long long)(b);                   \
		if (check_a_ == check_b_)                                                         \
			check_passed++;                                                           \
		else                                                                              \
			check_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, check_a_, \
				   check_b_);                                                     \
	} while (0)

#define CHECK_OK(expr) CHECK_EQ((expr), 0)

/* Prints "name: N passed, N failed" and returns 0 if nothing failed. */
int check_done(const char *name);

/* Hex helpers for test vectors: returns decoded length or -1. */
long check_unhex(const char *hex, uint8_t *out, size_t cap);

#endif
