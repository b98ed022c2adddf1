/* What the planner (planner.c) hands the send loop (sender.c): one request to send.
 *
 * A job may be queued for several targets (a --baseline, more than one --target): each queue
 * holds a reference, released on the send thread while the planning thread may still hold
 * its own, hence atomic counts. */
#ifndef SHADOWTAP_JOB_H
#define SHADOWTAP_JOB_H

#include <stddef.h>
#include <stdlib.h>

typedef struct job {
    int refs;
    char *id; size_t idlen;
    char *data; size_t dlen;
    char *host; size_t hostlen; int has_host; /* host: UTF-8, as the result's Arrow column holds it */
    double t_due;           /* wall clock, for the result's lag; NaN: none */
    double t_at;            /* monotonic: not sent before (a paced run's schedule); NaN: at once */
    int close;              /* the captured request asked to close its connection */
    int head;               /* HEAD: the answer has no body */
} job_t;

static inline void job_incref(job_t *j) { __atomic_add_fetch(&j->refs, 1, __ATOMIC_RELAXED); }

static inline void job_decref(job_t *j) {
    if (__atomic_sub_fetch(&j->refs, 1, __ATOMIC_ACQ_REL) == 0) { free(j->id); free(j->data); free(j->host); free(j); }
}

/* planner.c: the Planner and Planned types, added to the module by PyInit__sender. */
struct _object;
int planner_add_types(struct _object *module);
/* The jobs of a Planned (borrowed: the Planned keeps its own reference to each). */
int planned_jobs(struct _object *planned, job_t ***jobs, size_t *n);

#endif
