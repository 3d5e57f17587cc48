/* libFuzzer target for the Lua config loader: the input is a config file's
 * text. It is loaded with mr_cfg_load_file into its sandbox (base, string,
 * table, math; 64 MiB heap cap; instruction budget), then validated and
 * dumped, as `moonraft --config FILE` would.
 *
 * The loader is compiled into this file with a budget of 1,000,000 Lua
 * instructions instead of 100,000,000, so a looping config trips it in
 * milliseconds: a hang here (a libFuzzer timeout) is a hole in the sandbox,
 * some path where user Lua runs without the budget.
 *
 * Checks: no crash, sanitizer report, leak or timeout; the loader returns 0,
 * MR_ECONFIG or MR_ENOMEM, and an error always comes with a message. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_util.h"

#define CFG_LUA_INSTRUCTIONS 1000000
#include "../../src/config/config.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[4096], errmsg[MR_ERRMSG_SIZE];
    struct mr_cfg cfg;
    int fd, rv;
    if (size > (256u << 10)) return 0;
    FUZZ_PATH(path, "%s/node.lua", fuzz_tmpdir());
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    FUZZ_CHECK(fd >= 0);
    FUZZ_CHECK(size == 0 || write(fd, data, size) == (ssize_t)size);
    close(fd);

    mr_cfg_defaults(&cfg);
    errmsg[0] = '\0';
    rv = mr_cfg_load_file(&cfg, path, errmsg);
    FUZZ_CHECK(rv == 0 || rv == MR_ECONFIG || rv == MR_ENOMEM);
    FUZZ_CHECK(rv == 0 || errmsg[0] != '\0');
    if (rv == 0) {
        errmsg[0] = '\0';
        rv = mr_cfg_validate(&cfg, errmsg);
        FUZZ_CHECK(rv == 0 || rv == MR_ECONFIG);
        FUZZ_CHECK(rv == 0 || errmsg[0] != '\0');
        if (rv == 0) {
            FUZZ_CHECK(cfg.id != NULL && cfg.data_dir != NULL && cfg.raft_addr != NULL);
            FUZZ_CHECK(cfg.election_timeout_min_ms < cfg.election_timeout_max_ms);
        }
        mr_cfg_dump(fuzz_devnull(), &cfg);
    }
    mr_cfg_free(&cfg);
    unlink(path);
    return 0;
}
