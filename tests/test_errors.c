/* Every error code has its own message; unknown codes and states are named;
 * the library's version is the header's. */
#include <string.h>

#include "check.h"
#include "secureio.h"

int main(void)
{
	CHECK_OK(sio_init());
	CHECK_OK(sio_init()); /* idempotent */
	CHECK(sio_version() != NULL && strcmp(sio_version(), SIO_VERSION_STRING) == 0);
	const char *unknown = sio_strerror(12345);
	for (int e = SIO_EINVAL; e >= SIO_EUNREACH; e--) {
		const char *m = sio_strerror(e);
		CHECK(m != NULL && strcmp(m, unknown) != 0);
		for (int f = e - 1; f >= SIO_EUNREACH; f--)
			CHECK(strcmp(m, sio_strerror(f)) != 0);
	}
	CHECK(strcmp(sio_state_name(SIO_STATE_ESTABLISHED), "established") == 0);
	CHECK(strcmp(sio_state_name((sio_state)99), "unknown") == 0);
	return check_done("test_errors");
}
