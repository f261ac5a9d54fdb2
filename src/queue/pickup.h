/* pickup.h — the maildrop pickup, in the queue process: what `sendmail`
 * left in <spool>/maildrop while the daemon was down goes to smtpd over
 * the local submission socket, for the drop file's owner (XUID). */
#ifndef HK_QUEUE_PICKUP_H
#define HK_QUEUE_PICKUP_H

struct event_base;
struct conf;
struct pickup;

struct pickup *pickup_create(struct event_base *base, const struct conf *conf);
/* Waits for a pickup in progress (bounded by the submission timeout). */
void pickup_free(struct pickup **p);

#endif
