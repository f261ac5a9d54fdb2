/* opts.h — the command line of `sendmail` (and `hikyaku sendmail`), as the
 * programs that call it write it: Postfix's sendmail(1) options. Pure: no
 * I/O, so the unit test runs it table-driven. */
#ifndef HK_SENDMAIL_OPTS_H
#define HK_SENDMAIL_OPTS_H

#include <stdbool.h>
#include <stddef.h>

enum sendmail_mode {
	SENDMAIL_MODE_DELIVER = 0, /* -bm, the default: read a message */
	SENDMAIL_MODE_SMTP,        /* -bs: SMTP on stdin/stdout */
	SENDMAIL_MODE_LIST,        /* -bp, mailq: the queue listing */
	SENDMAIL_MODE_ALIASES,     /* -bi, -I, newaliases */
	SENDMAIL_MODE_FLUSH,       /* -q: attempt the deferred mail now */
};

enum sendmail_errmode {
	SENDMAIL_ERR_PRINT = 0, /* -oep (default): on stderr, exit status */
	SENDMAIL_ERR_QUIET,     /* -oeq: exit status only */
	SENDMAIL_ERR_MAIL,      /* -oem, -oew, -oee: mailed back, exit 0 */
};

struct sendmail_opts {
	enum sendmail_mode mode;
	enum sendmail_errmode errmode;
	bool extract;       /* -t */
	bool ignore_dots;   /* -i, -oi: a lone "." does not end the message */
	bool verbose;       /* -v */
	const char *sender; /* -f, -r: NULL = the caller */
	const char *name;   /* -F */
	const char *config; /* -C: hikyaku.yaml */
	const char *notify; /* -N: DSN NOTIFY (never, or success,delay,failure) */
	const char *ret;    /* -R: DSN RET (full, hdrs) */
	const char *envid;  /* -V: DSN ENVID */
	char **rcpts;       /* the arguments after the options (views into argv) */
	size_t nrcpts;
};

/* argv[first..argc). Returns 0, or -1 with *error_r (a usage error). */
int sendmail_opts_parse(int argc, char **argv, int first, struct sendmail_opts *o,
                        const char **error_r);

#endif
