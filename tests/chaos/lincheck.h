/* Linearizability checker for per-key registers (Wing-Gong / Lowe search
 * with memoisation of (linearized set, register state)).
 *
 * A history is a list of operations on registers keyed by string. Values are
 * opaque tokens compared byte-wise (JSON text without spaces); NULL means
 * "absent". Each key is checked independently (P-compositionality).
 *
 * History text format, one op per line, whitespace-separated:
 *   <proc> <read|write|cas> <key> <a1> <a2> <invoke_ns> <complete_ns|inf>
 *   <ok|fail|info> <r1> <r2>
 * read:  a1 a2 = "-", r1 = value read or "nil" (404), r2 = "-".
 * write: a1 = value, a2 = "-", r1 r2 = "-".
 * cas:   a1 = expect ("nil" = must be absent), a2 = new value,
 *        r1 = true|false (or "-" when not ok), r2 = current value or "nil"/"-".
 * fail ops are dropped (definitely not applied), info ops may or may not have
 * taken effect (their completion is treated as infinity). Lines starting with
 * '#' and empty lines are ignored. */
#ifndef MR_LINCHECK_H
#define MR_LINCHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum mr_lc_type { MR_LC_READ, MR_LC_WRITE, MR_LC_CAS };
enum mr_lc_outcome { MR_LC_OK, MR_LC_FAIL, MR_LC_INFO };

#define MR_LC_INF INT64_MAX

struct mr_lc_op {
    int proc;
    enum mr_lc_type type;
    char *key;    /* owned by the history */
    char *arg;    /* write value / cas new value; owned; NULL = absent */
    char *expect; /* cas expect; owned; NULL = must be absent */
    int64_t invoke;
    int64_t complete; /* MR_LC_INF for info */
    enum mr_lc_outcome outcome;
    char *value;    /* read value or cas current; owned; NULL = absent/unknown */
    bool cas_ok;    /* cas result (ok outcome only) */
    bool has_value; /* cas: whether `value` (current) was reported */
};

struct mr_lc_history {
    struct mr_lc_op *ops;
    size_t n, cap;
};

/* Empty history (zeroed). */
void mr_lc_history_init(struct mr_lc_history *h);
/* Frees every op's strings and the array; h is left empty. */
void mr_lc_history_free(struct mr_lc_history *h);
/* Appends a copy of *op (strings are duplicated; op keeps ownership of its
 * own). Returns 0 or MR_ENOMEM. */
int mr_lc_history_add(struct mr_lc_history *h, const struct mr_lc_op *op);
/* Parses text (format above) and appends its ops. Returns 0, MR_EINVAL with
 * errmsg (MR_ERRMSG_SIZE) naming the line, or MR_ENOMEM. */
int mr_lc_history_parse(struct mr_lc_history *h, const char *text, char *errmsg);
/* Reads and parses a file. Returns 0, MR_EIOERR/MR_EINVAL/MR_ENOMEM with errmsg. */
int mr_lc_history_load(struct mr_lc_history *h, const char *path, char *errmsg);
/* Writes one op as a history line to f. */
void mr_lc_op_print(FILE *f, const struct mr_lc_op *op);

/* Checks a single-key op list (ops must all share a key; not modified).
 * Sets *linearizable. Returns 0 or MR_ENOMEM. */
int mr_lc_check_ops(const struct mr_lc_op *ops, size_t n, bool *linearizable);

struct mr_lc_summary {
    size_t keys, bad_keys, ops, ops_ok, ops_fail, ops_info;
    double seconds;
};

/* Checks every key of h; prints a verdict per key to out (may be NULL) and,
 * for each violating key, the minimised failing window of operations.
 * Fills *sum (may be NULL). Returns 0 or MR_ENOMEM. */
int mr_lc_check_history(const struct mr_lc_history *h, FILE *out,
                        struct mr_lc_summary *sum);

/* Minimises a failing single-key op list: returns in *out (owned by caller,
 * mr_free) indices into ops of a smaller window that still fails, and *nout.
 * A write is only dropped if no kept op observed its value. Returns 0 or
 * MR_ENOMEM / MR_EINVAL (if ops is linearizable). */
int mr_lc_minimise(const struct mr_lc_op *ops, size_t n, size_t **out, size_t *nout);

#endif
