/*
 * pm_passwd: password hashes with libcrypt (libxcrypt) crypt_r. New
 * hashes are bcrypt "$2b$" at PM_PASSWD_COST; verification accepts every
 * method libcrypt knows, so bcryptjs "$2a$"/"$2y$" hashes of an existing
 * deployment keep working. Both calls take tens of milliseconds on
 * purpose: run them on the worker pool (pm_loop_submit), never on the
 * loop thread. Thread-safe.
 */
#ifndef PM_PASSWD_H
#define PM_PASSWD_H

#include <stdbool.h>
#include <stddef.h>

#define PM_PASSWD_COST 10
/* Longest hash string produced or accepted, with the NUL. */
#define PM_PASSWD_HASH_SIZE 128

/* Hash pw into out; PM_OK or PM_EIO (no randomness, libcrypt refused). */
int pm_passwd_hash(const char *pw, char out[PM_PASSWD_HASH_SIZE]);
/* Does pw match hash? False for a malformed or unknown hash. Constant
 * time in the comparison of the computed hash. */
bool pm_passwd_verify(const char *pw, const char *hash);

#endif
