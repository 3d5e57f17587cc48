/* Helpers shared by the fuzz targets (header-only: each target is one
 * translation unit plus, in the normal build, replay_main.c). */
#ifndef MR_FUZZ_UTIL_H
#define MR_FUZZ_UTIL_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A failed check is a crash libFuzzer saves as a reproducer. Always on. */
#define FUZZ_CHECK(x)                                                                    \
    do {                                                                                 \
        if (!(x)) {                                                                      \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #x);        \
            abort();                                                                     \
        }                                                                                \
    } while (0)

/* snprintf into a char array; a path that does not fit is a harness bug. */
#define FUZZ_PATH(buf, ...)                                                              \
    do {                                                                                 \
        int n_ = snprintf((buf), sizeof(buf), __VA_ARGS__);                              \
        if (n_ < 0 || (size_t)n_ >= sizeof(buf)) abort();                                \
    } while (0)

/* Reads every byte so ASan checks the range. */
static inline void fuzz_touch(const void *p, size_t n)
{
    const volatile unsigned char *b = p;
    unsigned char x = 0;
    size_t i;
    for (i = 0; i < n; i++) x ^= b[i];
    (void)x;
}

/* Removes a directory tree two levels deep (dir/sub/file), ignoring errors. */
static inline void fuzz_rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char path[4096];
    struct stat sb;
    if (d == NULL) {
        unlink(dir);
        return;
    }
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        FUZZ_PATH(path, "%s/%s", dir, de->d_name);
        if (lstat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
            fuzz_rm_rf(path);
        else
            unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static char fuzz_tmp_root[256];

static inline void fuzz_tmp_cleanup(void)
{
    if (fuzz_tmp_root[0]) fuzz_rm_rf(fuzz_tmp_root);
}

/* A private temp directory for this process (on /dev/shm when it exists,
 * so file I/O costs little), removed at exit. */
static inline const char *fuzz_tmpdir(void)
{
    if (fuzz_tmp_root[0] == '\0') {
        struct stat sb;
        const char *base = stat("/dev/shm", &sb) == 0 && access("/dev/shm", W_OK) == 0
                               ? "/dev/shm"
                               : "/tmp";
        snprintf(fuzz_tmp_root, sizeof fuzz_tmp_root, "%s/mr-fuzz-XXXXXX", base);
        if (mkdtemp(fuzz_tmp_root) == NULL) abort();
        atexit(fuzz_tmp_cleanup);
    }
    return fuzz_tmp_root;
}

static inline FILE *fuzz_devnull(void)
{
    static FILE *f;
    if (f == NULL) f = fopen("/dev/null", "w");
    if (f == NULL) abort();
    return f;
}

#endif /* MR_FUZZ_UTIL_H */
