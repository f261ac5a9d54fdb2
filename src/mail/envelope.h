/* envelope.h — the in-memory envelope of one queued message: who sent it,
 * to whom, with which ESMTP/DSN options. Mail-generic; no I/O. The on-disk
 * form is queue/record.h. */
#ifndef HK_MAIL_ENVELOPE_H
#define HK_MAIL_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QID_LEN 16 /* queue id: 16 characters [0-9A-Za-z] */
#define ENVELOPE_MAX_RCPTS 100000

struct envelope_rcpt {
	char *addr;      /* "local@domain" as received (never NULL) */
	char *orcpt;     /* DSN ORCPT "rfc822;xtext", or NULL */
	unsigned notify; /* SMTP_NOTIFY_* bits (mail/smtp_params.h), 0 if not given */
	bool done;       /* a final result is recorded for this recipient */
};

struct envelope {
	char qid[QID_LEN + 1];
	uint64_t arrival_us; /* Unix time in microseconds */
	char *sender;        /* "" for the null sender */
	char *envid;         /* DSN ENVID, or NULL */
	unsigned ret;        /* enum smtp_ret */
	unsigned body;       /* enum smtp_body */
	bool smtputf8;
	char *client_addr; /* "192.0.2.1" / "2001:db8::1" */
	char *client_helo; /* EHLO/HELO argument, or NULL */
	uint64_t size;     /* octets of the message: the header fields added at
			    * the end of data and the content as received */
	uint32_t flags;       /* ENVELOPE_FLAG_* */
	char *inbox;          /* ENVELOPE_FLAG_SANDBOX: the inbox (AUTH login), NULL "default" */
	uint64_t content_off; /* where those octets start in the spool file
			       * (queue/record.h REC_CONTENT_OFF); 0 before the
			       * commit sets it */
	struct envelope_rcpt *rcpts;
	size_t nrcpts;
	size_t cap;
	/* queue state, from the last SCHED record (0 when none) */
	uint64_t next_try_us;
	uint32_t attempts;
	uint32_t sched_flags; /* ENVELOPE_SCHED_* */
};

/* Flags of the message itself (queue/record.h REC_FLAGS). */
#define ENVELOPE_FLAG_JUNK 0x1 /* quarantined (DMARC): local delivery into .Junk */
#define ENVELOPE_FLAG_SANDBOX 0x2 /* received on a sandbox listener: captured, never sent */

#define ENVELOPE_SCHED_DELAY_WARNED 0x1 /* the NOTIFY=DELAY warning went out */
#define ENVELOPE_SCHED_HELD 0x2         /* held by the operator (hikyaku queue hold) */

void envelope_init(struct envelope *e);
/* Frees every owned string and the recipient array; leaves e empty. */
void envelope_clear(struct envelope *e);
void envelope_set_str(char **field, const char *value); /* xstrdup, frees old; NULL ok */
struct envelope_rcpt *envelope_add_rcpt(struct envelope *e, const char *addr);
size_t envelope_pending(const struct envelope *e); /* recipients without a final result */

/* Queue ids: 16 characters, time-ordered prefix plus randomness, unique per
 * host without coordination. Thread-safe. */
void qid_generate(char out[QID_LEN + 1]);
bool qid_valid(const char *s);

#endif
