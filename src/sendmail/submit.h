/* submit.h — one message over the local submission socket
 * (<spool>/public/submit), as SMTP, blocking. Used by the sendmail command
 * and by the queue's maildrop pickup (on a worker thread). The identity is
 * the caller's uid, which smtpd reads from the socket; xuid >= 0 asks to
 * submit for another uid, which smtpd believes only from root or its own
 * user (the pickup). */
#ifndef HK_SENDMAIL_SUBMIT_H
#define HK_SENDMAIL_SUBMIT_H

#include <stdbool.h>
#include <stddef.h>

#define SUBMIT_TIMEOUT_S 120
#define SUBMIT_REPLY_MAX 512

struct submit_msg {
	const char *sender; /* "" for <> */
	const char *const *rcpts;
	size_t nrcpts;
	const char *content; /* CRLF lines, not dot-stuffed */
	size_t content_len;
	long long xuid;                   /* -1: none */
	const char *notify, *ret, *envid; /* DSN parameters or NULL */
	/* submit_all tells the connection it uses (fd), then -1 before it
	 * closes it: the pickup shuts it down to stop at once. */
	void (*on_fd)(void *arg, int fd);
	void *on_fd_arg;
};

enum submit_status {
	SUBMIT_OK,   /* the message was accepted for every rcpt_code 2xx */
	SUBMIT_TEMP, /* nothing accepted; try again (or drop it) */
	SUBMIT_PERM, /* refused for good: the sender or the content */
};

struct submit_result {
	enum submit_status status;
	int *rcpt_code;               /* per recipient: its RCPT reply (0: not asked) */
	char reply[SUBMIT_REPLY_MAX]; /* the last reply that was not 2xx/3xx */
	bool sent_data;               /* the final dot went out (a lost reply may duplicate) */
};

/* Connect to <spool_dir>/public/submit: the descriptor, or -1 with errno
 * (ENOENT, ECONNREFUSED: the daemon is down). */
int submit_connect(const char *spool_dir);
/* Run the transaction on fd (closed by the caller). r->rcpt_code must
 * have m->nrcpts entries. */
void submit_smtp(int fd, const struct submit_msg *m, struct submit_result *r);
/* Connect and submit, again for the recipients deferred with a 4xx while
 * others were accepted (452 4.5.3 beyond limits.recipients), as long as
 * each round makes progress. r->rcpt_code ends 2xx (accepted), 5xx
 * (refused) or other (try later: r->status is then SUBMIT_TEMP). Returns
 * -1 with errno when no connection could be made at first (daemon down). */
int submit_all(const char *spool_dir, const struct submit_msg *m, struct submit_result *r);
/* A short notice from <> to rcpt (errors mailed back); best effort. */
void submit_notice(const char *spool_dir, const char *hostname, const char *rcpt, const char *text);

#endif
