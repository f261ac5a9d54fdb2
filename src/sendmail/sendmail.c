/* sendmail.c — the sendmail command (sendmail.h, docs/ARCHITECTURE.md
 * "Local submission"). Runs as the calling user with no privileges: it
 * reads the message, takes recipients from the arguments (and with -t from
 * To/Cc/Bcc), and submits it over <spool>/public/submit, where smtpd reads
 * the caller's uid from the socket. When the daemon is down it writes the
 * message into <spool>/maildrop, which the queue process picks up; a
 * message is never lost: exit 0 only once it is accepted or durable. */
#include "sendmail/sendmail.h"

#include "conf/conf.h"
#include "ctl/ctl.h"
#include "lib/alloc.h"
#include "lib/base64.h"
#include "lib/buf.h"
#include "lib/fsutil.h"
#include "mail/address.h"
#include "mail/maildrop.h"
#include "sendmail/hdr.h"
#include "sendmail/opts.h"
#include "sendmail/submit.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <unistd.h>

#define SENDMAIL_CONF_DEFAULT "/etc/hikyaku/hikyaku.yaml"
#define SENDMAIL_RCPTS_MAX MAILDROP_RCPTS_MAX

struct sendmail {
	struct sendmail_opts o;
	struct conf *conf;
	char sender[MAIL_PATH_MAX + 1];
	char *rcpts[SENDMAIL_RCPTS_MAX];
	size_t nrcpts;
	int bad; /* a recipient that is not an address: EX_NOUSER */
};

static void sendmail_usage(void)
{
	fprintf(
	    stderr,
	    "usage: sendmail [-t] [-i] [-f sender] [-F name] [-C config] [-N dsn] [-R ret]\n"
	    "                [-V envid] [-oem|-oep|-oeq] [-bm|-bs|-bp|-bi] [--] [recipient...]\n");
}

/* -C, else $HIKYAKU_CONFIG, else /etc/hikyaku/hikyaku.yaml when it exists,
 * else the embedded development default (the same as `hikyaku serve`). */
const char *sendmail_conf_path(const char *path)
{
	if (path == NULL)
		path = getenv("HIKYAKU_CONFIG");
	if (path == NULL && access(SENDMAIL_CONF_DEFAULT, F_OK) == 0)
		path = SENDMAIL_CONF_DEFAULT;
	return path;
}

static struct conf *sendmail_conf(const char *path)
{
	path = sendmail_conf_path(path);
	struct conf *conf = NULL;
	char err[1024];
	if (conf_load(path, &conf, err, sizeof(err)) < 0) {
		fprintf(stderr, "sendmail: %s\n", err);
		return NULL;
	}
	return conf;
}

/* "user" gets "@hostname" (Postfix's myorigin, which defaults to
 * myhostname); the result must parse as an SMTP path. */
static int sendmail_qualify(const struct conf *conf, const char *in, size_t len, char *out,
                            size_t outlen)
{
	struct mail_addr a;
	char path[MAIL_PATH_MAX + 8];
	size_t used;
	const char *err;
	int n = memchr(in, '@', len) != NULL
	            ? snprintf(path, sizeof(path), "<%.*s>", (int)len, in)
	            : snprintf(path, sizeof(path), "<%.*s@%s>", (int)len, in, conf->hostname);
	if (len == 0 || n < 0 || (size_t)n >= sizeof(path) ||
	    mail_addr_parse_path(path, (size_t)n, MAIL_ADDR_ALLOW_UTF8, &a, &used, &err) < 0 ||
	    used != (size_t)n)
		return -1;
	return mail_addr_format(&a, out, outlen) < 0 ? -1 : 0;
}

static void sendmail_add_rcpt(void *arg, const char *addr, size_t len)
{
	struct sendmail *sm = arg;
	char out[MAIL_PATH_MAX + 1];
	if (sendmail_qualify(sm->conf, addr, len, out, sizeof(out)) < 0) {
		fprintf(stderr, "sendmail: bad recipient address: %.*s\n", (int)len, addr);
		sm->bad++;
		return;
	}
	for (size_t i = 0; i < sm->nrcpts; i++) {
		if (strcmp(sm->rcpts[i], out) == 0)
			return; /* once is enough */
	}
	if (sm->nrcpts == SENDMAIL_RCPTS_MAX) {
		fprintf(stderr, "sendmail: more than %d recipients\n", SENDMAIL_RCPTS_MAX);
		sm->bad++;
		return;
	}
	sm->rcpts[sm->nrcpts++] = xstrdup(out);
}

/* The envelope sender: -f (any user may give one, as with Postfix; the
 * daemon records the uid beside it), else the caller's name at our host. */
static int sendmail_sender(struct sendmail *sm, const char *login)
{
	const char *f = sm->o.sender;
	if (f != NULL && (f[0] == '\0' || strcmp(f, "<>") == 0)) {
		sm->sender[0] = '\0';
		return 0;
	}
	if (f != NULL) {
		size_t len = strlen(f);
		if (len >= 2 && f[0] == '<' && f[len - 1] == '>') {
			f++;
			len -= 2;
		}
		if (sendmail_qualify(sm->conf, f, len, sm->sender, sizeof(sm->sender)) < 0) {
			fprintf(stderr, "sendmail: bad sender address: %s\n", sm->o.sender);
			return -1;
		}
		return 0;
	}
	return sendmail_qualify(sm->conf, login, strlen(login), sm->sender, sizeof(sm->sender));
}

/* From: when the message has none: "Full Name <sender>" with -F, else the
 * account's name (GECOS up to the first comma), as Postfix does. */
static void sendmail_from(const struct sendmail *sm, const char *gecos, struct buf *out)
{
	const char *name = sm->o.name != NULL ? sm->o.name : gecos;
	size_t nlen = name != NULL ? strcspn(name, ",") : 0;
	bool ascii = true;
	for (size_t i = 0; i < nlen; i++)
		ascii &= (unsigned char)name[i] >= 0x20 && (unsigned char)name[i] < 0x7f;
	buf_append_str(out, "From: ");
	if (nlen > 0 && ascii) { /* a quoted-string, RFC 5322 §3.2.4 */
		buf_append_byte(out, '"');
		for (size_t i = 0; i < nlen; i++) {
			if (name[i] == '"' || name[i] == '\\')
				buf_append_byte(out, '\\');
			buf_append_byte(out, (unsigned char)name[i]);
		}
		buf_append_str(out, "\" ");
	} else if (nlen > 0) { /* an encoded-word, RFC 2047 */
		struct buf b64;
		buf_init(&b64, 0);
		base64_encode((const unsigned char *)name, nlen > 300 ? 300 : nlen, &b64);
		buf_printf(out, "=?UTF-8?B?%s?= ", buf_cstr(&b64));
		buf_free(&b64);
	}
	if (sm->sender[0] != '\0')
		buf_printf(out, "<%s>\r\n", sm->sender);
	else /* -f '<>': a From must still be an address (RFC 5322 §3.6.2) */
		buf_printf(out, "<MAILER-DAEMON@%s>\r\n", sm->conf->hostname);
}

/* Read the message from stdin into msg (CRLF lines, lone dot honoured). */
static int sendmail_read(const struct sendmail *sm, struct buf *msg)
{
	char in[65536];
	bool bol = true, first = true;
	/* room for our From: and some; the daemon enforces the real limit */
	uint64_t max = sm->conf->limits.message_size + 65536;
	for (;;) {
		ssize_t r = read(STDIN_FILENO, in, sizeof(in));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			fprintf(stderr, "sendmail: reading the message: %s\n", strerror(errno));
			return EX_IOERR;
		}
		if (r == 0 || sendmail_msg_normalize(in, (size_t)r, sm->o.ignore_dots, &bol, &first,
		                                     msg) == 1)
			break;
		if (msg->len > max) {
			fprintf(stderr, "sendmail: message larger than %llu octets\n",
			        (unsigned long long)sm->conf->limits.message_size);
			return EX_DATAERR;
		}
	}
	if (!bol)
		buf_append(msg, "\r\n", 2);
	return 0;
}

/* Into <spool>/maildrop (1733): "t<random>" written and fsynced, renamed
 * to "d<random>", then the file system synced (the directory cannot be
 * opened for fsync: it is not readable to us, on purpose). The name is 128
 * random bits: others cannot list the directory, so they cannot find it;
 * the queue process (another uid) needs to read it, hence 0644. */
static int sendmail_drop(const struct sendmail *sm, const char *const *rcpts, size_t nrcpts,
                         const struct buf *content)
{
	char dir[4096], tname[MAILDROP_NAME_LEN + 1], dname[MAILDROP_NAME_LEN + 1];
	unsigned char rnd[16];
	snprintf(dir, sizeof(dir), "%s/%s", sm->conf->spool_dir, MAILDROP_DIR);
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
		fprintf(stderr, "sendmail: no random numbers: %s\n", strerror(errno));
		return EX_OSERR;
	}
	for (size_t i = 0; i < sizeof(rnd); i++)
		snprintf(tname + 1 + 2 * i, 3, "%02x", rnd[i]);
	tname[0] = 't';
	memcpy(dname, tname, sizeof(dname));
	dname[0] = 'd';

	struct maildrop_msg m = {.sender = sm->sender,
	                         .sender_len = strlen(sm->sender),
	                         .nrcpts = nrcpts,
	                         .content = (const char *)content->data,
	                         .content_len = content->len};
	for (size_t i = 0; i < nrcpts; i++) {
		m.rcpts[i] = rcpts[i];
		m.rcpt_lens[i] = strlen(rcpts[i]);
	}
	struct buf file;
	buf_init(&file, 0);
	maildrop_encode(&m, &file);
	int dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	int fd = dfd < 0 ? -1
	                 : openat(dfd, tname, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	                          0644);
	int rc = fd < 0 || fchmod(fd, 0644) < 0 || fs_write_all(fd, file.data, file.len) < 0 ||
	                 fsync(fd) < 0 || renameat(dfd, tname, dfd, dname) < 0 || syncfs(fd) < 0
	             ? -1
	             : 0;
	int err = errno;
	if (rc < 0 && fd >= 0)
		(void)unlinkat(dfd, tname, 0);
	if (fd >= 0)
		close(fd);
	if (dfd >= 0)
		close(dfd);
	buf_free(&file);
	if (rc < 0) {
		fprintf(stderr,
		        "sendmail: the mail system is down and %s cannot take the message: "
		        "%s\n",
		        dir, strerror(err));
		return err == ENOSPC || err == EDQUOT ? EX_TEMPFAIL : EX_CANTCREAT;
	}
	if (sm->o.verbose)
		fprintf(stderr, "sendmail: the mail system is down; the message waits in %s/%s\n",
		        dir, dname);
	return 0;
}

/* Submit; what the daemon could not take now goes to the maildrop. */
static int sendmail_deliver(struct sendmail *sm, const struct buf *content)
{
	int *codes = xcalloc(sm->nrcpts, sizeof(*codes));
	struct submit_result r = {.rcpt_code = codes};
	struct submit_msg m = {.sender = sm->sender,
	                       .rcpts = (const char *const *)sm->rcpts,
	                       .nrcpts = sm->nrcpts,
	                       .content = (const char *)content->data,
	                       .content_len = content->len,
	                       .xuid = -1,
	                       .notify = sm->o.notify,
	                       .ret = sm->o.ret,
	                       .envid = sm->o.envid};
	bool down = submit_all(sm->conf->spool_dir, &m, &r) < 0;
	const char *later[SENDMAIL_RCPTS_MAX];
	size_t nlater = 0, nrefused = 0;
	struct buf errors;
	buf_init(&errors, 0);
	for (size_t i = 0; i < sm->nrcpts; i++) {
		if (codes[i] >= 500) {
			nrefused++;
			buf_printf(&errors, "<%s>: %s\r\n", sm->rcpts[i], r.reply);
		} else if (codes[i] / 100 != 2) {
			later[nlater++] = sm->rcpts[i];
		}
	}
	int ret = 0;
	if (nlater > 0) {
		/* quiet otherwise: the message is safe, and cron mails any
		 * output of a job to its owner */
		if (sm->o.verbose)
			fprintf(stderr, "sendmail: %s (%s): the message waits in the maildrop\n",
			        down ? "the mail system is down" : "deferred", r.reply);
		ret = sendmail_drop(sm, later, nlater, content);
	}
	if (nrefused > 0) {
		if (sm->o.errmode == SENDMAIL_ERR_MAIL) {
			submit_notice(sm->conf->spool_dir, sm->conf->hostname, sm->sender,
			              buf_cstr(&errors));
		} else {
			if (sm->o.errmode == SENDMAIL_ERR_PRINT)
				fprintf(stderr, "sendmail: refused: %s", buf_cstr(&errors));
			if (ret == 0)
				ret =
				    nrefused == sm->nrcpts && r.sent_data ? EX_DATAERR : EX_NOUSER;
		}
	}
	buf_free(&errors);
	free(codes);
	return ret;
}

/* -bs: SMTP between stdin/stdout and the daemon's socket; smtpd speaks
 * (the caller's uid is known to it from the socket). */
static int sendmail_bs(const struct sendmail *sm)
{
	int fd = submit_connect(sm->conf->spool_dir);
	if (fd < 0) {
		printf("421 4.3.0 %s mail system is down, try again later\r\n", sm->conf->hostname);
		fflush(stdout);
		return EX_TEMPFAIL;
	}
	struct pollfd p[2] = {{.fd = STDIN_FILENO, .events = POLLIN}, {.fd = fd, .events = POLLIN}};
	char b[16384], out[16384];
	bool last_cr = false;
	for (;;) {
		if (poll(p, 2, SUBMIT_TIMEOUT_S * 1000 * 5) <= 0)
			break;
		if (p[1].revents != 0) {
			ssize_t r = read(fd, b, sizeof(b));
			if (r <= 0 || fs_write_all(STDOUT_FILENO, b, (size_t)r) < 0)
				break;
		}
		if (p[0].revents != 0) {
			ssize_t r = read(STDIN_FILENO, b, sizeof(b) / 2);
			if (r <= 0) {
				shutdown(fd, SHUT_WR); /* then drain the daemon's answers */
				p[0].fd = -1;
				continue;
			}
			/* a person typing ends lines with LF; smtpd wants CRLF */
			size_t n = 0;
			for (ssize_t i = 0; i < r; i++) {
				if (b[i] == '\n' && !last_cr)
					out[n++] = '\r';
				out[n++] = b[i];
				last_cr = b[i] == '\r';
			}
			if (fs_write_all(fd, out, n) < 0)
				break;
		}
	}
	close(fd);
	return 0;
}

static int sendmail_message(struct sendmail *sm)
{
	struct passwd *pw = getpwuid(getuid());
	char login[64];
	if (pw != NULL)
		snprintf(login, sizeof(login), "%s", pw->pw_name);
	else /* no account name: the uid stands for it (Postfix says "#uid") */
		snprintf(login, sizeof(login), "uid%u", (unsigned)getuid());
	if (sendmail_sender(sm, login) < 0)
		return EX_NOUSER;
	for (size_t i = 0; i < sm->o.nrcpts; i++) /* "a@b, c@d" in one word too */
		sendmail_addrlist(sm->o.rcpts[i], strlen(sm->o.rcpts[i]), sendmail_add_rcpt, sm);
	struct buf raw, msg;
	buf_init(&raw, 0);
	buf_init(&msg, 0);
	int ret = sendmail_read(sm, &raw);
	struct sendmail_hdr h;
	if (ret == 0) {
		/* Bcc fields go always, -t or not: the To/Cc recipients must
		 * not see them (Postfix removes them too). */
		size_t at = msg.len;
		sendmail_hdr_scan((const char *)raw.data, raw.len, sm->o.extract, true,
		                  sendmail_add_rcpt, sm, &h, &msg);
		if (!h.has_from) {
			struct buf from;
			buf_init(&from, 0);
			sendmail_from(sm, pw != NULL ? pw->pw_gecos : NULL, &from);
			buf_reserve(&msg, from.len);
			memmove(msg.data + at + from.len, msg.data + at, msg.len - at);
			memcpy(msg.data + at, from.data, from.len);
			msg.len += from.len;
			msg.data[msg.len] = '\0'; /* buf's invariant */
			buf_free(&from);
		}
	}
	if (ret == 0 && sm->bad > 0)
		ret = EX_NOUSER;
	else if (ret == 0 && sm->nrcpts == 0) {
		fprintf(stderr, "sendmail: no recipients (give them as arguments, or -t to take "
		                "them from To, Cc and Bcc)\n");
		ret = EX_USAGE;
	}
	if (ret == 0)
		ret = sendmail_deliver(sm, &msg);
	buf_free(&raw);
	buf_free(&msg);
	return ret;
}

int sendmail_main(const char *prog, int argc, char **argv, int first)
{
	struct sendmail sm = {.nrcpts = 0};
	const char *err = NULL;
	/* A daemon that closes on us (421, a stop) must give an error
	 * return, then the maildrop; not a death by SIGPIPE. */
	signal(SIGPIPE, SIG_IGN);
	if (sendmail_opts_parse(argc, argv, first, &sm.o, &err) < 0) {
		fprintf(stderr, "%s: %s\n", prog, err);
		sendmail_usage();
		return EX_USAGE;
	}
	if (strcmp(prog, "mailq") == 0)
		sm.o.mode = SENDMAIL_MODE_LIST;
	else if (strcmp(prog, "newaliases") == 0)
		sm.o.mode = SENDMAIL_MODE_ALIASES;
	if (sm.o.mode == SENDMAIL_MODE_ALIASES) {
		/* aliases_file is a text file read at start and on SIGHUP: no
		 * database to build. */
		printf("%s: hikyaku reads its aliases file as it is (at start and on reload, "
		       "hikyaku check validates it); nothing to compile\n",
		       prog);
		return 0;
	}
	sm.conf = sendmail_conf(sm.o.config);
	if (sm.conf == NULL)
		return EX_CONFIG;
	int ret;
	switch (sm.o.mode) {
	case SENDMAIL_MODE_LIST:
	case SENDMAIL_MODE_FLUSH: {
		char *words[2] = {sm.o.mode == SENDMAIL_MODE_FLUSH ? "flush" : "list", NULL};
		ret = ctl_client_main(sm.conf->spool_dir, 1, words) == 0 ? 0 : EX_UNAVAILABLE;
		break;
	}
	case SENDMAIL_MODE_SMTP:
		ret = sendmail_bs(&sm);
		break;
	default:
		ret = sendmail_message(&sm);
		break;
	}
	for (size_t i = 0; i < sm.nrcpts; i++)
		free(sm.rcpts[i]);
	conf_free(&sm.conf);
	return ret;
}
