/* test_sandbox.c — src/lib/sandbox.c: for each role a forked child applies
 * the role's sandbox and then checks that /proc/self/status shows
 * NoNewPrivs 1 and Seccomp 2, that execve() fails, that a file outside its
 * Landlock paths cannot be opened (EACCES) while one inside can, and that the
 * role's ordinary work still runs (smtpd: a libevent loop passing a
 * descriptor with SCM_RIGHTS; queue: create, write, fdatasync, rename, list,
 * unlink in the spool; auth: crypt() on a thread; keys: an OpenSSL
 * signature). As root it drops to "nobody" and checks the ids, that root
 * cannot be regained, and that root without user: is refused.
 * The child exits 0 only if every check held; it ends with exit() so that
 * LeakSanitizer's exit-time check runs inside the sandbox too.
 * Skipped where the kernel lacks Landlock. */
#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/landlock.h>
#include <pthread.h>
#include <pwd.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <seccomp.h>

#include "lib/log.h"
#include "lib/sandbox.h"

/* ---- child side: checks that count failures instead of aborting ---- */

static int child_failures;

static void check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(int ok, const char *fmt, ...)
{
	va_list ap;

	if (ok)
		return;
	child_failures++;
	fprintf(stderr, "child check failed: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (errno %s)\n", strerror(errno));
}

/* Opened before the sandbox (Landlock would refuse /proc afterwards in a
 * build without ASan); procfs makes the text at read time. */
static int status_fd = -1;

static void check_status(void)
{
	char buf[4096];
	ssize_t n = pread(status_fd, buf, sizeof buf - 1, 0);

	check(n > 0, "read /proc/self/status");
	buf[n > 0 ? n : 0] = '\0';
	check(strstr(buf, "NoNewPrivs:\t1\n") != NULL, "NoNewPrivs: 1");
	check(strstr(buf, "Seccomp:\t2\n") != NULL, "Seccomp: 2");
}

static void check_no_exec(void)
{
	char *argv[] = {"/bin/true", NULL};
	char *envp[] = {NULL};

	errno = 0;
	execve("/bin/true", argv, envp);
	check(errno == EPERM, "execve denied with EPERM");
}

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#ifndef TEST_ASAN
#define TEST_ASAN 0
#endif

/* No fork: clone() without CLONE_THREAD is refused (allowed in ASan builds,
 * whose LeakSanitizer clones a tracer process). */
static void check_no_fork(void)
{
	errno = 0;
	pid_t p = fork();
	if (p == 0)
		_exit(0);
	if (TEST_ASAN) {
		if (p > 0)
			waitpid(p, NULL, 0);
		return;
	}
	check(p < 0 && errno == EPERM, "fork refused");
}

/* A world-readable file outside the sandbox's paths: only Landlock (or, in
 * auth and keys, seccomp's refusal of openat) can refuse it. */
static void check_refused(const char *path, int allow_eperm)
{
	errno = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	check(fd < 0 && (errno == EACCES || (allow_eperm && errno == EPERM)), "open %s refused",
	      path);
	if (fd >= 0)
		close(fd);
}

static void check_common(const char *outside, int allow_eperm)
{
	check_status();
	check_no_exec();
	check_no_fork();
	check_refused(outside, allow_eperm);
	check_refused("/etc/passwd", allow_eperm);
	errno = 0;
	check(setuid(0) < 0, "setuid(0) fails");
}

/* ---- test fixture: a spool dir (allowed) and a file outside it ---- */

struct fx {
	char top[64];     /* mode 0755, owned by nobody when root */
	char spool[96];   /* allowed, read-write */
	char outside[96]; /* a readable file, not allowed */
	uid_t uid;
	gid_t gid;
	const char *user;
};

static int landlock_abi(void)
{
	return (int)syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
}

static int fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof *f);
	struct passwd *pw = getpwnam("nobody");

	assert_non_null(f);
	snprintf(f->top, sizeof f->top, "/tmp/hk-sandbox-XXXXXX");
	assert_non_null(mkdtemp(f->top));
	assert_int_equal(chmod(f->top, 0755), 0);
	snprintf(f->spool, sizeof f->spool, "%s/spool", f->top);
	snprintf(f->outside, sizeof f->outside, "%s/outside", f->top);
	assert_int_equal(mkdir(f->spool, 0755), 0);
	int fd = open(f->outside, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "x\n", 2), 2);
	close(fd);
	f->uid = getuid();
	f->gid = getgid();
	if (getuid() == 0) {
		assert_non_null(pw);
		f->uid = pw->pw_uid;
		f->gid = pw->pw_gid;
		f->user = "nobody";
		assert_int_equal(chown(f->spool, f->uid, f->gid), 0);
	}
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;
	char cmd[160];

	if (f == NULL)
		return 0;
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->top); /* test-made name, no quote in it */
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

/* Fork; the child runs fn and exits 0 only if it returned 0 with no failed
 * check. */
static void run_child(int (*fn)(struct fx *), struct fx *f)
{
	if (landlock_abi() < 0)
		skip(); /* the one thing a kernel may lack; the rest is checked */
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* cmocka's handlers would carry on with the next test in here. */
		signal(SIGSEGV, SIG_DFL);
		signal(SIGBUS, SIG_DFL);
		signal(SIGILL, SIG_DFL);
		signal(SIGFPE, SIG_DFL);
		status_fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
		int rc = fn(f);
		fflush(NULL);
		exit(rc == 0 && child_failures == 0 ? 0 : 1);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	if (WIFSIGNALED(st))
		fail_msg("child killed by signal %d", WTERMSIG(st));
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

static int apply(struct fx *f, enum sandbox_role role, const struct sandbox_path *paths, size_t n)
{
	struct sandbox_conf c = {
	    .role = role,
	    .user = f->user,
	    .parent = getppid(),
	    .paths = paths,
	    .npaths = n,
	    .seccomp_mode = SANDBOX_SECCOMP_ENFORCE,
	};
	char err[256] = "";

	if (sandbox_apply(&c, err, sizeof err) < 0) {
		fprintf(stderr, "sandbox_apply %s: %s\n", sandbox_role_name(role), err);
		return -1;
	}
	check(getuid() == f->uid && geteuid() == f->uid, "uid %u", (unsigned)f->uid);
	check(getgid() == f->gid && getegid() == f->gid, "gid %u", (unsigned)f->gid);
	return 0;
}

/* ---- smtpd ---- */

struct pass {
	int got_fd;
	struct event_base *base;
};

static void on_readable(evutil_socket_t s, short what, void *arg)
{
	struct pass *p = arg;
	char byte, cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {&byte, 1};
	struct msghdr m = {
	    .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};

	(void)what;
	if (recvmsg(s, &m, 0) == 1) {
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		if (c != NULL && c->cmsg_type == SCM_RIGHTS)
			memcpy(&p->got_fd, CMSG_DATA(c), sizeof(int));
	}
	event_base_loopbreak(p->base);
}

static int send_fd(int s, int fd)
{
	char byte = 'F', cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {&byte, 1};
	struct msghdr m = {
	    .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);

	memset(cbuf, 0, sizeof cbuf);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	return sendmsg(s, &m, 0) == 1 ? 0 : -1;
}

static int child_smtpd(struct fx *f)
{
	int sp[2], pp[2];

	/* What master hands smtpd: a channel (socketpair) made before. */
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) < 0)
		return -1;
	if (apply(f, SANDBOX_SMTPD, NULL, 0) < 0)
		return -1;
	check_common(f->outside, 0);

	struct pass p = {.got_fd = -1, .base = event_base_new()};
	check(p.base != NULL, "event_base_new");
	if (p.base == NULL)
		return -1;
	struct event *ev = event_new(p.base, sp[1], EV_READ, on_readable, &p);
	event_add(ev, NULL);
	check(pipe2(pp, O_CLOEXEC) == 0, "pipe2");
	check(send_fd(sp[0], pp[1]) == 0, "sendmsg SCM_RIGHTS");
	check(event_base_dispatch(p.base) == 0, "event loop");
	check(p.got_fd >= 0 && write(p.got_fd, "hi", 2) == 2, "write to the passed fd");
	char b[2];
	check(read(pp[0], b, 2) == 2 && memcmp(b, "hi", 2) == 0, "read back");
	event_free(ev);
	event_base_free(p.base);

	int s6 = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	check(s6 >= 0, "socket(AF_INET6)");
	close(s6);
	errno = 0;
	check(socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, 0) < 0 && errno == EPERM,
	      "socket(AF_NETLINK) denied");
	errno = 0;
	check(socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0) < 0 && errno == EPERM,
	      "socket(AF_PACKET) denied");
	errno = 0;
	check(kill(1, 0) < 0 && errno == EPERM, "kill of another process denied");
	return 0;
}

static void test_smtpd(void **state)
{
	run_child(child_smtpd, *state);
}

/* ---- queue ---- */

static int child_queue(struct fx *f)
{
	struct sandbox_path paths[1 + SANDBOX_QUEUE_SYSTEM_MAX];
	char a[160], b[160], sub[128];
	size_t n;

	paths[0] = (struct sandbox_path){f->spool, SANDBOX_RW, false};
	n = 1 + sandbox_paths_queue_system(paths + 1, SANDBOX_QUEUE_SYSTEM_MAX);
	if (apply(f, SANDBOX_QUEUE, paths, n) < 0)
		return -1;
	check_common(f->outside, 0);

	/* incoming/<id> → queue/<id>, as the commit does. */
	snprintf(sub, sizeof sub, "%s/incoming", f->spool);
	check(mkdir(sub, 0700) == 0, "mkdir incoming");
	snprintf(sub, sizeof sub, "%s/queue", f->spool);
	check(mkdir(sub, 0700) == 0, "mkdir queue");
	snprintf(a, sizeof a, "%s/incoming/F1", f->spool);
	snprintf(b, sizeof b, "%s/queue/F1", f->spool);
	int fd = open(a, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	check(fd >= 0, "create in the spool");
	check(write(fd, "record", 6) == 6, "write");
	check(fdatasync(fd) == 0 && fsync(fd) == 0, "fdatasync, fsync");
	check(ftruncate(fd, 3) == 0, "ftruncate");
	close(fd);
	check(rename(a, b) == 0, "rename incoming/ to queue/");
	DIR *d = opendir(sub);
	int found = 0;
	struct dirent *de;
	check(d != NULL, "opendir queue/");
	while (d != NULL && (de = readdir(d)) != NULL)
		found += strcmp(de->d_name, "F1") == 0;
	if (d != NULL)
		closedir(d);
	check(found == 1, "listed queue/F1");
	fd = open(b, O_RDONLY | O_CLOEXEC);
	char buf[8];
	check(fd >= 0 && read(fd, buf, sizeof buf) == 3 && memcmp(buf, "rec", 3) == 0, "read back");
	if (fd >= 0)
		close(fd);
	check(unlink(b) == 0, "unlink");
	fd = open("/etc/hosts", O_RDONLY | O_CLOEXEC);
	check(fd >= 0, "read /etc/hosts");
	if (fd >= 0)
		close(fd);
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	check(s >= 0, "socket(AF_INET)");
	close(s);
	return 0;
}

static void test_queue(void **state)
{
	run_child(child_queue, *state);
}

/* ---- auth ---- */

struct crypt_job {
	char want[CRYPT_OUTPUT_SIZE];
	int ok;
};

static void *crypt_thread(void *arg)
{
	struct crypt_job *j = arg;
	struct crypt_data cd;

	memset(&cd, 0, sizeof cd);
	const char *h = crypt_rn("secret", j->want, &cd, (int)sizeof cd);
	j->ok = h != NULL && strcmp(h, j->want) == 0;
	return NULL;
}

static int child_auth(struct fx *f)
{
	struct crypt_job j = {.ok = 0};
	struct crypt_data cd;
	pthread_t th;

	/* crypt_rn, as src/auth/passwd.c (ASan's crypt_r interceptor assumes
	 * glibc's smaller struct crypt_data); yescrypt, the default scheme. */
	memset(&cd, 0, sizeof cd);
	const char *setting = crypt_gensalt_rn("$y$", 0, NULL, 0, cd.setting, sizeof cd.setting);
	if (setting == NULL)
		return -1;
	char salt[CRYPT_GENSALT_OUTPUT_SIZE];
	snprintf(salt, sizeof salt, "%s", setting);
	const char *h = crypt_rn("secret", salt, &cd, (int)sizeof cd);
	if (h == NULL || h[0] == '*')
		return -1;
	snprintf(j.want, sizeof j.want, "%s", h);
	if (apply(f, SANDBOX_AUTH, NULL, 0) < 0)
		return -1;
	check_common(f->outside, 1);
	check(pthread_create(&th, NULL, crypt_thread, &j) == 0, "pthread_create");
	check(pthread_join(th, NULL) == 0, "pthread_join");
	check(j.ok, "crypt() on a thread gives the same hash");
	errno = 0;
	check(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0) < 0 && errno == EPERM,
	      "socket() denied in auth");
	return 0;
}

static void test_auth(void **state)
{
	run_child(child_auth, *state);
}

/* ---- keys ---- */

static int child_keys(struct fx *f)
{
	/* The key arrives as bytes before the sandbox; here: generated. */
	EVP_PKEY *key = EVP_EC_gen("P-256");
	unsigned char sig[256];
	size_t siglen = sizeof sig;
	static const unsigned char msg[] = "handshake transcript";

	if (key == NULL)
		return -1;
	if (apply(f, SANDBOX_KEYS, NULL, 0) < 0)
		return -1;
	check_common(f->outside, 1);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	check(md != NULL && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
	          EVP_DigestSign(md, sig, &siglen, msg, sizeof msg) == 1,
	      "EVP_DigestSign");
	EVP_MD_CTX_free(md);
	md = EVP_MD_CTX_new();
	check(md != NULL && EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
	          EVP_DigestVerify(md, sig, siglen, msg, sizeof msg) == 1,
	      "EVP_DigestVerify");
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(key);
	return 0;
}

static void test_keys(void **state)
{
	run_child(child_keys, *state);
}

/* ---- credentials ---- */

static int child_drop(struct fx *f)
{
	char err[256] = "";

	if (getuid() != 0)
		return 0;
	/* Root without user: is refused, and nothing changed. */
	check(sandbox_drop(NULL, err, sizeof err) < 0 && strstr(err, "user:") != NULL,
	      "root without user: refused (%s)", err);
	check(sandbox_drop("", err, sizeof err) < 0, "root with user \"\" refused");
	check(sandbox_drop("root", err, sizeof err) < 0, "user root refused");
	check(sandbox_drop("no-such-user-hk", err, sizeof err) < 0, "unknown user refused");
	check(getuid() == 0, "still root after the refusals");

	check(sandbox_drop("nobody", err, sizeof err) == 0, "drop to nobody (%s)", err);
	check(getuid() == f->uid && geteuid() == f->uid, "uid nobody");
	check(getgid() == f->gid && getegid() == f->gid, "gid nogroup");
	check(getgroups(0, NULL) == 0, "no supplementary groups");
	errno = 0;
	check(setuid(0) < 0 && errno == EPERM, "setuid(0) fails (no seccomp yet)");
	check(setgid(0) < 0, "setgid(0) fails");
	check(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1, "NO_NEW_PRIVS");

	/* Changing credentials cleared the death signal; it is set again. */
	int sig = 0;
	check(sandbox_parent_watch(getppid(), err, sizeof err) == 0, "parent watch (%s)", err);
	check(prctl(PR_GET_PDEATHSIG, &sig, 0, 0, 0) == 0 && sig == SIGKILL, "PDEATHSIG");
	check(sandbox_parent_watch(getppid() + 1, err, sizeof err) < 0, "wrong parent refused");
	return 0;
}

static void test_drop(void **state)
{
	if (getuid() != 0)
		skip();
	run_child(child_drop, *state);
}

/* Non-root (the development default): no uid change, user ignored, but
 * NO_NEW_PRIVS, Landlock and seccomp apply. Run as root, the child first
 * becomes nobody by hand. */
static int child_nonroot(struct fx *f)
{
	char err[256] = "";

	if (getuid() == 0 && (setgroups(0, NULL) < 0 || setgid(f->gid) < 0 || setuid(f->uid) < 0))
		return -1;
	struct sandbox_conf c = {.role = SANDBOX_SMTPD, .user = NULL};
	check(sandbox_apply(&c, err, sizeof err) == 0, "non-root without user: (%s)", err);
	check(getuid() == f->uid, "uid unchanged");
	check_common(f->outside, 0);
	return 0;
}

static void test_nonroot(void **state)
{
	run_child(child_nonroot, *state);
}

/* LOG mode: a call off the list goes through (logged by the kernel), the
 * never-list still fails. */
static int child_log(struct fx *f)
{
	char err[256] = "", cwd[256];

	check(sandbox_drop(f->user, err, sizeof err) == 0, "drop (%s)", err);
	check(sandbox_seccomp(SANDBOX_KEYS, SANDBOX_SECCOMP_LOG, err, sizeof err) == 0,
	      "seccomp log (%s)", err);
	check(syscall(SYS_getcwd, cwd, sizeof cwd) > 0, "getcwd allowed in log mode");
	check_status();
	check_no_exec();
	return 0;
}

static void test_log_mode(void **state)
{
	run_child(child_log, *state);
}

/* In ENFORCE mode the same call is refused with EPERM. */
static int child_enforce(struct fx *f)
{
	char err[256] = "", cwd[256];

	check(sandbox_drop(f->user, err, sizeof err) == 0, "drop (%s)", err);
	check(sandbox_seccomp(SANDBOX_KEYS, SANDBOX_SECCOMP_ENFORCE, err, sizeof err) == 0,
	      "seccomp (%s)", err);
	errno = 0;
	check(syscall(SYS_getcwd, cwd, sizeof cwd) < 0 && errno == EPERM, "getcwd denied");
	return 0;
}

static void test_enforce_mode(void **state)
{
	run_child(child_enforce, *state);
}

/* A thread started before would escape Landlock: refused. */
static void *idle_thread(void *arg)
{
	int *fd = arg;
	char b;

	return read(*fd, &b, 1) < 0 ? NULL : arg;
}

static int child_thread_refused(struct fx *f)
{
	char err[256] = "";
	int p[2];
	pthread_t th;

	(void)f;
	if (pipe(p) < 0 || pthread_create(&th, NULL, idle_thread, &p[0]) != 0)
		return -1;
	check(sandbox_landlock(NULL, 0, 0, err, sizeof err) < 0 && strstr(err, "thread") != NULL,
	      "landlock with a second thread refused (%s)", err);
	close(p[1]);
	pthread_join(th, NULL);
	return 0;
}

static void test_thread_refused(void **state)
{
	run_child(child_thread_refused, *state);
}

/* SANDBOX_LL_NO_TCP: no TCP connect or bind (ABI 4); SANDBOX_LL_SCOPE: no
 * signal to a process outside (ABI 6). Landlock alone, so that seccomp
 * cannot be what refuses. */
static int child_net_scope(struct fx *f)
{
	char err[256] = "";
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof sin;
	int abi = landlock_abi();
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	(void)f;
	if (l < 0 || bind(l, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(l, 1) < 0 ||
	    getsockname(l, (struct sockaddr *)&sin, &len) < 0)
		return -1;
	check(sandbox_landlock(NULL, 0, SANDBOX_LL_NO_TCP | SANDBOX_LL_SCOPE, err, sizeof err) == 0,
	      "landlock (%s)", err);
	int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	errno = 0;
	int rc = connect(c, (struct sockaddr *)&sin, sizeof sin);
	if (abi >= 4)
		check(rc < 0 && errno == EACCES, "TCP connect refused");
	else
		check(rc == 0, "TCP connect without ABI 4");
	errno = 0;
	if (abi >= 6)
		check(kill(getppid(), 0) < 0 && errno == EPERM,
		      "signal out of the sandbox refused");
	close(c);
	close(l);
	return 0;
}

static void test_net_scope(void **state)
{
	run_child(child_net_scope, *state);
}

/* A kernel without Landlock (simulated: landlock_create_ruleset fails with
 * ENOSYS under a test filter): one warning line, and the rest goes on. */
static int child_no_landlock(struct fx *f)
{
	char err[256] = "", out[1024];
	int p[2];
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);

	if (ctx == NULL || pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0 ||
	    seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(landlock_create_ruleset), 0) <
	        0 ||
	    seccomp_load(ctx) < 0)
		return -1;
	seccomp_release(ctx);
	log_set_output(p[1]);
	check(sandbox_landlock(NULL, 0, SANDBOX_LL_NO_TCP, err, sizeof err) == 0,
	      "no Landlock is not an error (%s)", err);
	log_flush();
	ssize_t n = read(p[0], out, sizeof out - 1);
	out[n > 0 ? n : 0] = '\0';
	check(n > 0 && strstr(out, "Landlock unavailable") != NULL && strchr(out, '\n') != NULL &&
	          strchr(out, '\n') == out + n - 1,
	      "exactly one warning line: %s", out);
	int fd = open(f->outside, O_RDONLY | O_CLOEXEC);
	check(fd >= 0, "files stay readable without Landlock");
	if (fd >= 0)
		close(fd);
	log_set_output(STDERR_FILENO);
	return 0;
}

static void test_no_landlock(void **state)
{
	run_child(child_no_landlock, *state);
}

static void test_queue_system_paths(void **state)
{
	struct sandbox_path p[SANDBOX_QUEUE_SYSTEM_MAX];
	size_t n = sandbox_paths_queue_system(p, SANDBOX_QUEUE_SYSTEM_MAX);
	int resolv = 0, certs = 0;

	(void)state;
	assert_true(n >= 2 && n <= SANDBOX_QUEUE_SYSTEM_MAX);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(p[i].access, SANDBOX_RO);
		resolv += strcmp(p[i].path, "/etc/resolv.conf") == 0;
		certs += strcmp(p[i].path, "/etc/ssl/certs") == 0;
	}
	assert_int_equal(resolv, 1);
	assert_int_equal(certs, 1);
	assert_int_equal(sandbox_paths_queue_system(p, 1), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_queue_system_paths),
	    cmocka_unit_test_setup_teardown(test_smtpd, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_queue, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_auth, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_keys, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_drop, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_nonroot, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_log_mode, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_enforce_mode, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_thread_refused, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_net_scope, fx_setup, fx_teardown),
	    cmocka_unit_test_setup_teardown(test_no_landlock, fx_setup, fx_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
