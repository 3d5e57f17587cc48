/* Replays fuzz inputs without libFuzzer: each argument is a file or a
 * directory of files, and every file is passed once to the target's
 * LLVMFuzzerTestOneInput (in name order). Linked with each tests/fuzz/fuzz_*.c
 * in the normal (gcc) build, where ctest runs the checked-in corpus through
 * it as a regression test; a failed check aborts, as under libFuzzer. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    size_t len = 0, cap = 0, n;
    if (f == NULL) {
        perror(path);
        return 1;
    }
    do {
        if (len == cap) {
            unsigned char *nb;
            cap = cap ? cap * 2 : 4096;
            nb = realloc(buf, cap);
            if (nb == NULL) abort();
            buf = nb;
        }
        n = fread(buf + len, 1, cap - len, f);
        len += n;
    } while (n > 0);
    fclose(f);
    LLVMFuzzerTestOneInput(buf, len);
    free(buf);
    return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

int main(int argc, char **argv)
{
    int i, rc = 0;
    unsigned count = 0;
    for (i = 1; i < argc; i++) {
        struct stat sb;
        if (stat(argv[i], &sb) != 0) {
            perror(argv[i]);
            return 1;
        }
        if (S_ISDIR(sb.st_mode)) {
            struct dirent **names;
            int n = scandir(argv[i], &names, NULL, by_name), k;
            if (n < 0) {
                perror(argv[i]);
                return 1;
            }
            for (k = 0; k < n; k++) {
                char path[4096];
                if (names[k]->d_name[0] != '.') {
                    snprintf(path, sizeof path, "%s/%s", argv[i], names[k]->d_name);
                    rc |= run_file(path);
                    count++;
                }
                free(names[k]);
            }
            free(names);
        } else {
            rc |= run_file(argv[i]);
            count++;
        }
    }
    printf("replayed %u inputs\n", count);
    return rc != 0 || count == 0;
}
