/* opts.c — sendmail's command line (opts.h). Postfix's option letters:
 * the ones with an argument take it attached (-fuser) or as the next word
 * (-f user); flags cluster (-ti). Options end at "--" or the first word
 * that is not one (POSIX); every later word is a recipient. Options
 * programs pass for the Sendmail of old and that change nothing here are
 * accepted and ignored, as Postfix does (-e, -h, -m, -n, -c, -x, -U, -G,
 * -L, -O, -A, -X, -B, -o other than e and i). */
#include "sendmail/opts.h"

#include <string.h>

static int opts_b(struct sendmail_opts *o, const char *v, const char **error_r)
{
	if (strcmp(v, "m") == 0)
		o->mode = SENDMAIL_MODE_DELIVER;
	else if (strcmp(v, "s") == 0)
		o->mode = SENDMAIL_MODE_SMTP;
	else if (strcmp(v, "p") == 0)
		o->mode = SENDMAIL_MODE_LIST;
	else if (strcmp(v, "i") == 0)
		o->mode = SENDMAIL_MODE_ALIASES;
	else {
		*error_r = "unsupported -b mode (supported: -bm, -bs, -bp, -bi)";
		return -1;
	}
	return 0;
}

/* -o<letter><value>: -oi and the error mode; the rest is Sendmail's
 * configuration, meaningless here. */
static int opts_o(struct sendmail_opts *o, const char *v, const char **error_r)
{
	if (strcmp(v, "i") == 0) {
		o->ignore_dots = true;
	} else if (v[0] == 'e') {
		switch (v[1]) {
		case 'p':
			o->errmode = SENDMAIL_ERR_PRINT;
			break;
		case 'q':
			o->errmode = SENDMAIL_ERR_QUIET;
			break;
		case 'm':
		case 'w':
		case 'e':
			o->errmode = SENDMAIL_ERR_MAIL;
			break;
		default:
			*error_r = "unknown error mode (-oep, -oeq, -oem, -oew, -oee)";
			return -1;
		}
	}
	return 0;
}

static bool opts_takes_arg(char c)
{
	return strchr("ABCFLNORVXbfhoprq", c) != NULL;
}

static int opts_apply(struct sendmail_opts *o, char c, const char *v, const char **error_r)
{
	switch (c) {
	case 'b':
		return opts_b(o, v, error_r);
	case 'o':
		return opts_o(o, v, error_r);
	case 'f':
	case 'r':
		o->sender = v;
		return 0;
	case 'F':
		o->name = v;
		return 0;
	case 'C':
		o->config = v;
		return 0;
	case 'N':
		o->notify = v;
		return 0;
	case 'R':
		o->ret = v;
		return 0;
	case 'V':
		o->envid = v;
		return 0;
	case 'q':
		/* -q (flush now); -qInterval, -qR..., -qS... are a daemon's
		 * options: only the flush is done. */
		o->mode = SENDMAIL_MODE_FLUSH;
		return 0;
	case 't':
		o->extract = true;
		return 0;
	case 'i':
		o->ignore_dots = true;
		return 0;
	case 'v':
		o->verbose = true;
		return 0;
	case 'I':
		o->mode = SENDMAIL_MODE_ALIASES;
		return 0;
	case 'e':
	case 'h':
	case 'm':
	case 'n':
	case 'c':
	case 'x':
	case 'U':
	case 'G':
	case 'L':
	case 'O':
	case 'A':
	case 'X':
	case 'B':
	case 'p':
		return 0;
	default:
		*error_r = "unknown option";
		return -1;
	}
}

int sendmail_opts_parse(int argc, char **argv, int first, struct sendmail_opts *o,
                        const char **error_r)
{
	memset(o, 0, sizeof(*o));
	int i = first;
	for (; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--") == 0) {
			i++;
			break;
		}
		if (a[0] != '-' || a[1] == '\0')
			break;
		for (const char *p = a + 1; *p != '\0'; p++) {
			const char *v = NULL;
			if (opts_takes_arg(*p)) {
				if (p[1] != '\0') {
					v = p + 1;
				} else if (*p == 'q') {
					v = ""; /* -q alone */
				} else if (i + 1 < argc) {
					v = argv[++i];
				} else {
					*error_r = "option requires an argument";
					return -1;
				}
			}
			if (opts_apply(o, *p, v, error_r) < 0)
				return -1;
			if (v != NULL)
				break;
		}
	}
	o->rcpts = argv + i;
	o->nrcpts = (size_t)(argc - i);
	return 0;
}
