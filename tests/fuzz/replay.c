/*
 * replay: a main() for one fuzz target, built with the normal compiler
 * and libp2pmesh.a, that runs LLVMFuzzerTestOneInput once on every file
 * of the target's corpus/<name>/ and regressions/<name>/, so make check
 * replays every seed and every input that once crashed. FUZZ_NAME (set
 * at compile time) names the target. Directories may be given as
 * arguments; without any, both are looked up under $srcdir/tests/fuzz
 * (the automake test harness exports srcdir), else ./tests/fuzz. A
 * missing regressions directory is fine; a missing corpus is an error.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

#ifndef FUZZ_NAME
#error "FUZZ_NAME must name the target"
#endif

static int
cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Read the whole file into a malloc'd buffer; NULL on error. */
static uint8_t *
read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t cap = 0, n;

    *len = 0;
    if (f == NULL)
        return NULL;
    for (;;) {
        if (cap - *len < 4096) {
            uint8_t *nb;

            cap = cap ? cap * 2 : 8192;
            nb = realloc(buf, cap);
            if (nb == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        n = fread(buf + *len, 1, cap - *len, f);
        *len += n;
        if (n == 0)
            break;
    }
    fclose(f);
    return buf;
}

/* Run every regular file of dir (sorted); -1 when dir cannot be read. */
static int
replay_dir(const char *dir, size_t *count)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char **names = NULL;
    size_t n = 0, cap = 0, i;

    if (d == NULL)
        return -1;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (n == cap) {
            char **nn;

            cap = cap ? cap * 2 : 64;
            nn = realloc(names, cap * sizeof *names);
            if (nn == NULL)
                abort();
            names = nn;
        }
        names[n] = strdup(de->d_name);
        if (names[n] == NULL)
            abort();
        n++;
    }
    closedir(d);
    if (n > 0)
        qsort(names, n, sizeof *names, cmp_names);
    for (i = 0; i < n; i++) {
        char path[4096];
        struct stat st;
        uint8_t *buf;
        size_t len;

        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        free(names[i]);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        buf = read_all(path, &len);
        if (buf == NULL) {
            fprintf(stderr, "replay: cannot read %s: %s\n", path,
                    strerror(errno));
            abort();
        }
        /* stderr first: a crash names the input that caused it */
        fprintf(stderr, "replay %s: %s (%zu bytes)\n", FUZZ_NAME, path, len);
        LLVMFuzzerTestOneInput(buf, len);
        free(buf);
        (*count)++;
    }
    free(names);
    return 0;
}

int
main(int argc, char **argv)
{
    const char *srcdir = getenv("srcdir");
    char corpus[4096], regress[4096];
    size_t count = 0;
    int i;

    if (argc > 1) {
        for (i = 1; i < argc; i++)
            if (replay_dir(argv[i], &count) != 0) {
                fprintf(stderr, "replay: cannot open %s\n", argv[i]);
                return 1;
            }
    } else {
        if (srcdir == NULL || *srcdir == '\0')
            srcdir = ".";
        snprintf(corpus, sizeof corpus, "%s/tests/fuzz/corpus/%s", srcdir,
                 FUZZ_NAME);
        snprintf(regress, sizeof regress, "%s/tests/fuzz/regressions/%s",
                 srcdir, FUZZ_NAME);
        if (replay_dir(corpus, &count) != 0) {
            fprintf(stderr, "replay: cannot open %s\n", corpus);
            return 1;
        }
        (void)replay_dir(regress, &count); /* may not exist */
    }
    printf("replay %s: %zu inputs, no failure\n", FUZZ_NAME, count);
    return 0;
}
