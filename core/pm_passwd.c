/*
 * pm_passwd: bcrypt hashing and verification over crypt_r (see
 * pm_passwd.h). bcrypt reads at most 72 bytes of a password; callers cap
 * the length (the chat role allows 100 characters, as FaltuBaat did, and
 * bcryptjs truncates the same way, so its hashes verify here).
 */
#include "config.h"

#include <crypt.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "pm_passwd.h"
#include "pm_util.h"

int
pm_passwd_hash(const char *pw, char out[PM_PASSWD_HASH_SIZE])
{
    struct crypt_data *cd = pm_xcalloc(1, sizeof *cd);
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    const char *h;
    int rv = PM_EIO;

    /* NULL random bytes: libcrypt reads the system's RNG itself. */
    if (crypt_gensalt_rn("$2b$", PM_PASSWD_COST, NULL, 0, salt, sizeof salt) !=
        NULL) {
        h = crypt_r(pw, salt, cd);
        if (h != NULL && h[0] == '$' && strlen(h) < PM_PASSWD_HASH_SIZE) {
            strcpy(out, h);
            rv = PM_OK;
        }
    }
    explicit_bzero(cd, sizeof *cd);
    free(cd);
    return rv;
}

bool
pm_passwd_verify(const char *pw, const char *hash)
{
    struct crypt_data *cd = pm_xcalloc(1, sizeof *cd);
    const char *h;
    bool ok = false;
    size_t n = strlen(hash);

    /* crypt_r returns "*0"/"*1" (or NULL) for a hash it cannot read. */
    if (hash[0] == '$' && n < PM_PASSWD_HASH_SIZE) {
        h = crypt_r(pw, hash, cd);
        ok = h != NULL && h[0] == '$' && strlen(h) == n &&
             CRYPTO_memcmp(h, hash, n) == 0;
    }
    explicit_bzero(cd, sizeof *cd);
    free(cd);
    return ok;
}
