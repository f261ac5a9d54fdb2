/* dmarcd.h — the queue process's daily DMARC aggregate report run
 * (dmarc.reports: true): at 00:05 UTC plus a random delay of up to ten
 * minutes, and once shortly after the start to catch up, it sends every
 * finished day of the last DMARCD_CATCHUP_DAYS that is not marked done
 * (dauth/dmarcrep_report.h: dmarcrep_run, on a worker thread). A run that
 * must be tried again (the submission socket or DNS failed) is repeated
 * an hour later. */
#ifndef HK_QUEUE_DMARCD_H
#define HK_QUEUE_DMARCD_H

#define DMARCD_CATCHUP_DAYS 7

struct event_base;
struct conf;
struct dmarcd;

struct dmarcd *dmarcd_create(struct event_base *base, const struct conf *conf);
/* Cuts a submission in progress and waits for the worker. */
void dmarcd_free(struct dmarcd **d);

#endif
