/* usercmd.c — `hikyaku user add|passwd|del|list`: edit the users file.
 *
 * Runs in the `hikyaku` command-line process as the operator. Inputs: argv
 * (trusted operator, still validated), the password on the tty or stdin
 * (never argv, so it stays out of `ps` and shell history), and the users
 * file itself, which must already load with users_load() before we touch it.
 *
 * The file is rewritten atomically: every line is kept verbatim (comments,
 * the uid/gid/home fields Dovecot uses) except the one being changed; the new
 * content goes to a temporary file in the same directory with the original's
 * mode and owner (0640 for a new file), which is fsync'ed, renamed over the
 * original, and the directory fsync'ed, so a crash leaves the old or the new
 * file, never half of one. Neither passwords nor hashes are ever printed.
 * TODO(issue 3): no lock against two concurrent `hikyaku user` runs; the
 * last rename wins. */
#include "auth/usercmd.h"

#include "auth/passwd.h"
#include "conf/conf.h"
#include "auth/users.h"
#include "lib/alloc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#define USERCMD_PASSWORD_MAX 255 /* what SASL PLAIN can carry (RFC 4616 §2) */
#define USERCMD_NEW_MODE 0640

struct usercmd_args {
	const char *file;
	const char *config;
	const char *scheme;
	const char *verb;
	const char *name;
};

/* The file as lines without their "\n" (a "\r" stays, verbatim). */
struct usercmd_file {
	char **lines;
	size_t n;
	bool exists;
	struct stat st;
};

static int usercmd_usage(void)
{
	fputs("usage: hikyaku user add NAME [--scheme SCHEME] (-f USERSFILE | -c CONFIG)\n"
	      "       hikyaku user passwd NAME [--scheme SCHEME] (-f USERSFILE | -c CONFIG)\n"
	      "       hikyaku user del NAME (-f USERSFILE | -c CONFIG)\n"
	      "       hikyaku user list (-f USERSFILE | -c CONFIG)\n"
	      "SCHEME: CRYPT (yescrypt, default), BLF-CRYPT, SHA512-CRYPT, CRAM-MD5, "
	      "SCRAM-SHA-256\n"
	      "The password is read from the terminal, or one line from stdin.\n",
	      stderr);
	return 2;
}

static int usercmd_fail(const char *what, const char *detail)
{
	if (detail != NULL)
		fprintf(stderr, "hikyaku user: %s: %s\n", what, detail);
	else
		fprintf(stderr, "hikyaku user: %s\n", what);
	return 1;
}

static int usercmd_args_parse(int argc, char **argv, struct usercmd_args *a)
{
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		const char **slot = NULL;
		if (strcmp(arg, "-f") == 0)
			slot = &a->file;
		else if (strcmp(arg, "-c") == 0)
			slot = &a->config;
		else if (strcmp(arg, "--scheme") == 0)
			slot = &a->scheme;
		if (slot != NULL) {
			if (i + 1 >= argc || *slot != NULL)
				return -1;
			*slot = argv[++i];
		} else if (strncmp(arg, "--scheme=", 9) == 0 && a->scheme == NULL) {
			a->scheme = arg + 9;
		} else if (arg[0] == '-' && arg[1] != '\0') {
			return -1;
		} else if (a->verb == NULL) {
			a->verb = arg;
		} else if (a->name == NULL) {
			a->name = arg;
		} else {
			return -1;
		}
	}
	if (a->verb == NULL || (a->file == NULL) == (a->config == NULL))
		return -1;
	bool needs_name = strcmp(a->verb, "list") != 0;
	bool takes_scheme = strcmp(a->verb, "add") == 0 || strcmp(a->verb, "passwd") == 0;
	if (needs_name != (a->name != NULL) || (a->scheme != NULL && !takes_scheme))
		return -1;
	return 0;
}

/* ---- password input ---- */

/* Read one line (without "\n") from fd into buf[size]: 1 with a line, 0 at
 * end of file before any octet, -1 on error or when longer than size - 1. */
static int usercmd_line_read(int fd, char *buf, size_t size, size_t *len_r)
{
	size_t n = 0;
	bool too_long = false;
	char c;

	for (;;) {
		ssize_t r = read(fd, &c, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0) {
			if (n == 0 && !too_long)
				return 0;
			break;
		}
		if (c == '\n')
			break;
		if (n + 1 < size)
			buf[n++] = c;
		else
			too_long = true;
	}
	buf[n] = '\0';
	*len_r = n;
	return too_long ? -1 : 1;
}

static int usercmd_tty_read(int fd, const char *prompt, char *buf, size_t size, size_t *len_r)
{
	struct termios old, quiet;
	int rc;

	if (write(fd, prompt, strlen(prompt)) < 0 || tcgetattr(fd, &old) < 0)
		return -1;
	quiet = old;
	quiet.c_lflag &= ~(tcflag_t)ECHO;
	quiet.c_lflag |= ECHONL;
	if (tcsetattr(fd, TCSAFLUSH, &quiet) < 0)
		return -1;
	rc = usercmd_line_read(fd, buf, size, len_r);
	tcsetattr(fd, TCSAFLUSH, &old);
	return rc;
}

/* The new password into buf[USERCMD_PASSWORD_MAX + 2]. */
static int usercmd_password(char *buf, size_t size, size_t *len_r, const char **error_r)
{
	int rc;

	if (isatty(STDIN_FILENO)) {
		char again[USERCMD_PASSWORD_MAX + 2];
		size_t alen = 0;
		int fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
		if (fd < 0) {
			*error_r = "cannot open /dev/tty";
			return -1;
		}
		rc = usercmd_tty_read(fd, "Password: ", buf, size, len_r);
		if (rc > 0)
			rc = usercmd_tty_read(fd, "Retype password: ", again, sizeof(again), &alen);
		close(fd);
		bool same = rc > 0 && alen == *len_r && memcmp(buf, again, alen) == 0;
		passwd_wipe(again, sizeof(again));
		if (rc > 0 && !same) {
			*error_r = "passwords do not match";
			return -1;
		}
	} else {
		rc = usercmd_line_read(STDIN_FILENO, buf, size, len_r);
	}
	if (rc <= 0) {
		*error_r = rc == 0 ? "no password given"
		                   : "cannot read the password (longer "
		                     "than 255 octets?)";
		return -1;
	}
	if (*len_r == 0 || memchr(buf, '\0', *len_r) != NULL) {
		*error_r = "empty password or NUL octet in it";
		return -1;
	}
	return 0;
}

static char *usercmd_hash(enum passwd_scheme scheme)
{
	char pw[USERCMD_PASSWORD_MAX + 2];
	size_t len = 0;
	const char *error = NULL;
	char *hash = NULL;

	if (usercmd_password(pw, sizeof(pw), &len, &error) == 0) {
		hash = passwd_hash(scheme, pw, len, &error);
	}
	passwd_wipe(pw, sizeof(pw));
	if (hash == NULL)
		usercmd_fail("password", error);
	return hash;
}

/* ---- the file ---- */

static void usercmd_file_free(struct usercmd_file *f)
{
	for (size_t i = 0; i < f->n; i++) {
		passwd_wipe(f->lines[i], strlen(f->lines[i]));
		free(f->lines[i]);
	}
	free(f->lines);
	f->lines = NULL;
	f->n = 0;
}

static void usercmd_file_add(struct usercmd_file *f, char *line)
{
	f->lines = xreallocarray(f->lines, f->n + 1, sizeof(*f->lines));
	f->lines[f->n++] = line;
}

/* Validate with the daemon's own parser, then keep every line verbatim. */
static int usercmd_file_read(const char *path, bool may_be_missing, struct usercmd_file *f)
{
	char err[1024];
	struct users *users = NULL;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	memset(f, 0, sizeof(*f));
	FILE *fp = fopen(path, "re");
	if (fp == NULL) {
		if (errno == ENOENT && may_be_missing)
			return 0;
		usercmd_fail(path, strerror(errno));
		return -1;
	}
	if (users_load(path, &users, err, sizeof(err)) < 0) {
		fclose(fp);
		usercmd_fail(err, NULL);
		return -1;
	}
	users_free(&users);
	f->exists = true;
	if (fstat(fileno(fp), &f->st) < 0) {
		fclose(fp);
		usercmd_fail(path, strerror(errno));
		return -1;
	}
	while ((n = getline(&line, &cap, fp)) >= 0) {
		if (n > 0 && line[n - 1] == '\n')
			line[--n] = '\0';
		usercmd_file_add(f, xstrndup(line, (size_t)n));
	}
	if (line != NULL)
		passwd_wipe(line, cap);
	free(line);
	bool bad = ferror(fp);
	fclose(fp);
	if (bad) {
		usercmd_fail(path, "read error");
		usercmd_file_free(f);
		return -1;
	}
	return 0;
}

/* The user name of a line, as users.c reads it, or len 0 for a blank or
 * comment line. */
static size_t usercmd_line_name(const char *line, const char **secret_r)
{
	size_t i = strspn(line, " \t");
	const char *colon;

	*secret_r = NULL;
	if (line[i] == '\0' || line[i] == '#' || (line[i] == '\r' && line[i + 1] == '\0'))
		return 0;
	colon = strchr(line, ':');
	if (colon == NULL)
		return strcspn(line, "\r");
	*secret_r = colon + 1;
	return (size_t)(colon - line);
}

static ssize_t usercmd_file_find(const struct usercmd_file *f, const char *name)
{
	size_t len = strlen(name);
	const char *secret;

	for (size_t i = 0; i < f->n; i++) {
		size_t nlen = usercmd_line_name(f->lines[i], &secret);
		if (nlen == len && strncasecmp(f->lines[i], name, len) == 0)
			return (ssize_t)i;
	}
	return -1;
}

static int usercmd_write_all(int fd, const struct usercmd_file *f)
{
	for (size_t i = 0; i < f->n; i++) {
		const char *p = f->lines[i];
		size_t left = strlen(p);
		while (left > 0) {
			ssize_t w = write(fd, p, left);
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0)
				return -1;
			p += w;
			left -= (size_t)w;
		}
		if (write(fd, "\n", 1) != 1)
			return -1;
	}
	return 0;
}

static int usercmd_dir_sync(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = fsync(fd);
	close(fd);
	return rc;
}

/* Temporary file beside path, same mode and owner, fsync, rename, fsync the
 * directory. */
static int usercmd_file_write(const char *path, const struct usercmd_file *f)
{
	const char *slash = strrchr(path, '/');
	char *dir = slash != NULL ? xstrndup(path, slash == path ? 1 : (size_t)(slash - path))
	                          : xstrdup(".");
	const char *base = slash != NULL ? slash + 1 : path;
	size_t n = strlen(dir) + strlen(base) + 16;
	char *tmp = xmalloc(n);
	const char *what = "cannot create a temporary file";
	struct stat tst;
	int fd, rc = -1;

	snprintf(tmp, n, "%s/.%s.XXXXXX", dir, base);
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		goto out;
	what = "cannot set mode/owner of the temporary file";
	if (fchmod(fd, f->exists ? f->st.st_mode & 07777 : USERCMD_NEW_MODE) < 0 ||
	    fstat(fd, &tst) < 0)
		goto fail;
	if (f->exists && (tst.st_uid != f->st.st_uid || tst.st_gid != f->st.st_gid) &&
	    fchown(fd, f->st.st_uid, f->st.st_gid) < 0)
		goto fail;
	what = "cannot write the temporary file";
	if (usercmd_write_all(fd, f) < 0 || fsync(fd) < 0)
		goto fail;
	if (close(fd) < 0) {
		fd = -1;
		goto fail;
	}
	fd = -1;
	what = "cannot rename the temporary file";
	if (rename(tmp, path) < 0)
		goto fail;
	what = "cannot sync the directory";
	if (usercmd_dir_sync(dir) < 0)
		goto out;
	rc = 0;
	goto out;
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
out:
	if (rc < 0)
		usercmd_fail(what, strerror(errno));
	free(tmp);
	free(dir);
	return rc;
}

/* ---- verbs ---- */

static int usercmd_list(const struct usercmd_file *f)
{
	const char *secret;

	for (size_t i = 0; i < f->n; i++) {
		size_t nlen = usercmd_line_name(f->lines[i], &secret);
		if (nlen == 0)
			continue;
		const char *scheme = "-";
		if (secret != NULL && secret[0] != ':' && secret[0] != '\0' && secret[0] != '\r')
			scheme = passwd_scheme_name(passwd_scheme_of(secret));
		printf("%.*s %s\n", (int)nlen, f->lines[i], scheme);
	}
	return fflush(stdout) == 0 ? 0 : 1;
}

/* "name:hash" followed by whatever fields came after the old secret. */
static char *usercmd_line_make(const char *name, const char *hash, const char *old_line)
{
	const char *secret, *rest = "";

	if (old_line != NULL && usercmd_line_name(old_line, &secret) > 0 && secret != NULL) {
		const char *colon = strchr(secret, ':');
		if (colon != NULL)
			rest = colon;
		else if (secret[0] != '\0' && secret[strlen(secret) - 1] == '\r')
			rest = "\r";
	}
	size_t nl = strlen(name), hl = strlen(hash), rl = strlen(rest);
	char *line = xmalloc(nl + hl + rl + 2);
	memcpy(line, name, nl);
	line[nl] = ':';
	memcpy(line + nl + 1, hash, hl);
	memcpy(line + nl + 1 + hl, rest, rl + 1);
	return line;
}

static int usercmd_modify(const struct usercmd_args *a, const char *path, struct usercmd_file *f)
{
	ssize_t idx = usercmd_file_find(f, a->name);
	bool add = strcmp(a->verb, "add") == 0, del = strcmp(a->verb, "del") == 0;
	enum passwd_scheme scheme = PASSWD_CRYPT;

	if (add && idx >= 0)
		return usercmd_fail(a->name, "user already exists");
	if (!add && idx < 0)
		return usercmd_fail(a->name, "no such user");
	if (a->scheme != NULL && (scheme = passwd_scheme_parse(a->scheme)) == PASSWD_UNKNOWN)
		return usercmd_fail(a->scheme, "unknown scheme");
	if (del) {
		passwd_wipe(f->lines[idx], strlen(f->lines[idx]));
		free(f->lines[idx]);
		memmove(&f->lines[idx], &f->lines[idx + 1],
		        (f->n - (size_t)idx - 1) * sizeof(*f->lines));
		f->n--;
	} else {
		char *hash = usercmd_hash(scheme);
		if (hash == NULL)
			return 1;
		char *line = usercmd_line_make(a->name, hash, add ? NULL : f->lines[idx]);
		passwd_wipe(hash, strlen(hash));
		free(hash);
		if (add) {
			usercmd_file_add(f, line);
		} else {
			passwd_wipe(f->lines[idx], strlen(f->lines[idx]));
			free(f->lines[idx]);
			f->lines[idx] = line;
		}
	}
	return usercmd_file_write(path, f) < 0 ? 1 : 0;
}

static int usercmd_run(const struct usercmd_args *a, const char *path)
{
	struct usercmd_file f;
	bool add = strcmp(a->verb, "add") == 0;
	int rc;

	if (a->name != NULL) {
		const char *why = users_name_check(a->name, strlen(a->name));
		if (why != NULL)
			return usercmd_fail(a->name, why);
	}
	/* Through a symlink, replace the file it points to, not the link. */
	char *real = realpath(path, NULL);
	if (real != NULL)
		path = real;
	if (usercmd_file_read(path, add, &f) < 0) {
		free(real);
		return 1;
	}
	if (strcmp(a->verb, "list") == 0)
		rc = usercmd_list(&f);
	else
		rc = usercmd_modify(a, path, &f);
	usercmd_file_free(&f);
	free(real);
	return rc;
}

int auth_user_command(int argc, char **argv)
{
	struct usercmd_args a = {0};
	struct conf *conf = NULL;
	char err[1024];
	int rc;

	if (usercmd_args_parse(argc, argv, &a) < 0)
		return usercmd_usage();
	if (strcmp(a.verb, "add") != 0 && strcmp(a.verb, "passwd") != 0 &&
	    strcmp(a.verb, "del") != 0 && strcmp(a.verb, "list") != 0)
		return usercmd_usage();
	if (a.file != NULL)
		return usercmd_run(&a, a.file);
	if (conf_load(a.config, &conf, err, sizeof(err)) < 0)
		return usercmd_fail(err, NULL);
	if (conf->users_file == NULL || conf->users_file[0] == '\0')
		rc = usercmd_fail(a.config, "no users_file configured");
	else
		rc = usercmd_run(&a, conf->users_file);
	conf_free(&conf);
	return rc;
}
