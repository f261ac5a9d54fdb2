/* sandbox.c — drop privileges, Landlock, seccomp for the unprivileged
 * processes (smtpd, queue, auth, keys; see docs/ARCHITECTURE.md
 * "Hardening"). Runs once, in the child, before its first hostile input;
 * reads no hostile input itself (paths and the user name come from the
 * config master parsed).
 *
 * seccomp's default action is EPERM, not KILL_PROCESS: a call missing from
 * an allow-list then shows up as "Operation not permitted" in the log line of
 * the operation that failed, while the process keeps serving what it can;
 * a killed child would be restarted by master, die again on the same path,
 * and lose the diagnosis. The calls that no role may ever make (execve,
 * ptrace, mount, bpf, ...) are denied explicitly, so that they stay denied
 * in HIKYAKU_SECCOMP=log mode too. */
#include "lib/sandbox.h"

#include <dlfcn.h>
#include <errno.h>
#include <iconv.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/landlock.h>
#include <pwd.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "lib/log.h"

#if defined(__SANITIZE_ADDRESS__)
#define SANDBOX_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANDBOX_ASAN 1
#endif
#endif
#ifndef SANDBOX_ASAN
#define SANDBOX_ASAN 0
#endif

/* Newer than Debian 12's linux/landlock.h (ABI 2). */
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14) /* ABI 3 */
#endif
#ifndef LANDLOCK_ACCESS_FS_IOCTL_DEV
#define LANDLOCK_ACCESS_FS_IOCTL_DEV (1ULL << 15) /* ABI 5 */
#endif
#define SANDBOX_LL_NET_BIND_TCP (1ULL << 0)        /* ABI 4 */
#define SANDBOX_LL_NET_CONNECT_TCP (1ULL << 1)     /* ABI 4 */
#define SANDBOX_LL_SCOPE_ABSTRACT_UNIX (1ULL << 0) /* ABI 6 */
#define SANDBOX_LL_SCOPE_SIGNAL (1ULL << 1)        /* ABI 6 */

/* The kernel's struct landlock_ruleset_attr as of ABI 6; the kernel accepts
 * the size we pass, older fields first. */
struct sandbox_ll_attr {
	uint64_t handled_access_fs;
	uint64_t handled_access_net;
	uint64_t scoped;
};

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (errlen > 0) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -1;
}

const char *sandbox_role_name(enum sandbox_role role)
{
	switch (role) {
	case SANDBOX_SMTPD:
		return "smtpd";
	case SANDBOX_QUEUE:
		return "queue";
	case SANDBOX_AUTH:
		return "auth";
	case SANDBOX_KEYS:
		return "keys";
	case SANDBOX_HTTP:
		return "http";
	}
	return "?";
}

unsigned sandbox_role_landlock_flags(enum sandbox_role role)
{
	/* smtpd connects out too (recipient probes, DNS). */
	return role == SANDBOX_QUEUE || role == SANDBOX_SMTPD ? SANDBOX_LL_SCOPE
							      : SANDBOX_LL_SCOPE | SANDBOX_LL_NO_TCP;
}

/* ---- credentials ---- */

static int sandbox_setids(const char *user, char *err, size_t errlen)
{
	struct passwd pw, *pwp = NULL;
	char buf[4096];
	int e;

	if (user == NULL || user[0] == '\0')
		return fail(err, errlen,
		            "running as root needs user: in the config "
		            "(the unprivileged service user the processes run as)");
	e = getpwnam_r(user, &pw, buf, sizeof buf, &pwp);
	if (pwp == NULL)
		return fail(err, errlen, "user %s: %s", user,
		            e != 0 ? strerror(e) : "no such user");
	if (pw.pw_uid == 0 || pw.pw_gid == 0)
		return fail(err, errlen, "user %s: has uid or gid 0, not an unprivileged user",
		            user);
	if (setgroups(0, NULL) < 0)
		return fail(err, errlen, "setgroups: %s", strerror(errno));
	if (setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid) < 0)
		return fail(err, errlen, "setresgid %u: %s", (unsigned)pw.pw_gid, strerror(errno));
	if (setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid) < 0)
		return fail(err, errlen, "setresuid %u: %s", (unsigned)pw.pw_uid, strerror(errno));
	/* Belt and braces: the way back must be closed. */
	if (setuid(0) == 0 || seteuid(0) == 0 || setgid(0) == 0)
		return fail(err, errlen, "user %s: could regain root after dropping", user);
	if (getuid() != pw.pw_uid || geteuid() != pw.pw_uid || getgid() != pw.pw_gid ||
	    getegid() != pw.pw_gid || getgroups(0, NULL) != 0)
		return fail(err, errlen, "user %s: ids not as set", user);
	return 0;
}

int sandbox_drop(const char *user, char *err, size_t errlen)
{
	if ((geteuid() == 0 || getuid() == 0) && sandbox_setids(user, err, errlen) < 0)
		return -1;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return fail(err, errlen, "PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
	return 0;
}

int sandbox_parent_watch(pid_t parent, char *err, size_t errlen)
{
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
		return fail(err, errlen, "PR_SET_PDEATHSIG: %s", strerror(errno));
	if (getppid() != parent)
		return fail(err, errlen, "parent %ld is gone", (long)parent);
	return 0;
}

/* ---- Landlock ---- */

/* Every filesystem right of each ABI (Documentation/userspace-api/landlock.rst). */
static uint64_t sandbox_ll_fs_handled(int abi)
{
	uint64_t all = (LANDLOCK_ACCESS_FS_MAKE_SYM << 1) - 1; /* ABI 1: bits 0..12 */

	if (abi >= 2)
		all |= LANDLOCK_ACCESS_FS_REFER;
	if (abi >= 3)
		all |= LANDLOCK_ACCESS_FS_TRUNCATE;
	if (abi >= 5)
		all |= LANDLOCK_ACCESS_FS_IOCTL_DEV;
	return all;
}

/* The rights a rule grants. RW leaves out what no process of ours does
 * (execute, device nodes, fifos, sockets, symlinks, device ioctls). REFER is
 * needed for rename() between directories (incoming/ to queue/, Maildir tmp/
 * to new/). Rights on a file are limited to the file ones, else EINVAL. */
static uint64_t sandbox_ll_rule_access(enum sandbox_access a, bool dir, uint64_t handled)
{
	uint64_t file = LANDLOCK_ACCESS_FS_READ_FILE;
	uint64_t tree = LANDLOCK_ACCESS_FS_READ_DIR;

	if (a == SANDBOX_RW) {
		file |= LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_TRUNCATE;
		tree |= LANDLOCK_ACCESS_FS_REMOVE_DIR | LANDLOCK_ACCESS_FS_REMOVE_FILE |
		        LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG |
		        LANDLOCK_ACCESS_FS_REFER |
		        /* the queue's control socket lives in its spool */
		        LANDLOCK_ACCESS_FS_MAKE_SOCK;
	}
	return (dir ? file | tree : file) & handled;
}

static int sandbox_ll_add(int rfd, const struct sandbox_path *p, uint64_t handled, char *err,
                          size_t errlen)
{
	struct landlock_path_beneath_attr pb;
	struct stat st;
	int fd, rc;

	fd = open(p->path, O_PATH | O_CLOEXEC);
	if (fd < 0) {
		if (p->optional && errno == ENOENT)
			return 0;
		return fail(err, errlen, "landlock: %s: %s", p->path, strerror(errno));
	}
	if (fstat(fd, &st) < 0) {
		close(fd);
		return fail(err, errlen, "landlock: %s: %s", p->path, strerror(errno));
	}
	pb.allowed_access = sandbox_ll_rule_access(p->access, S_ISDIR(st.st_mode), handled);
	pb.parent_fd = fd;
	rc = (int)syscall(SYS_landlock_add_rule, rfd, LANDLOCK_RULE_PATH_BENEATH, &pb, 0);
	close(fd);
	if (rc < 0)
		return fail(err, errlen, "landlock_add_rule %s: %s", p->path, strerror(errno));
	return 0;
}

/* What the sanitizers read at run time and at exit (/proc/self/maps,
 * /proc/PID/task for LeakSanitizer's stop-the-world). Test builds only. */
static const struct sandbox_path sandbox_asan_paths[] = {
    {"/proc", SANDBOX_RO, true},
};

static int sandbox_ll_rules(int rfd, const struct sandbox_path *paths, size_t n, uint64_t handled,
                            char *err, size_t errlen)
{
	for (size_t i = 0; i < n; i++)
		if (sandbox_ll_add(rfd, &paths[i], handled, err, errlen) < 0)
			return -1;
	if (SANDBOX_ASAN && sandbox_ll_add(rfd, &sandbox_asan_paths[0], handled, err, errlen) < 0)
		return -1;
	return 0;
}

/* Threads of this process, from /proc/self/status; -1 if unknown. */
static int sandbox_threads(void)
{
	char line[256];
	int n = -1;
	FILE *f = fopen("/proc/self/status", "re");

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof line, f) != NULL)
		if (strncmp(line, "Threads:", 8) == 0) {
			n = (int)strtol(line + 8, NULL, 10);
			break;
		}
	fclose(f);
	return n;
}

int sandbox_landlock(const struct sandbox_path *paths, size_t n, unsigned flags, char *err,
                     size_t errlen)
{
	struct sandbox_ll_attr attr = {0};
	size_t attr_size = sizeof attr.handled_access_fs;
	int abi, rfd;

	abi = (int)syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
	if (abi < 0) {
		log_warn("sandbox: Landlock unavailable (%s); file access is not restricted",
		         strerror(errno));
		return 0;
	}
	/* landlock_restrict_self() binds the calling thread only: a thread
	 * started before would keep every path. */
	if (sandbox_threads() > 1)
		return fail(err, errlen,
		            "landlock: apply the sandbox before any thread starts "
		            "(this process has %d)",
		            sandbox_threads());
	attr.handled_access_fs = sandbox_ll_fs_handled(abi);
	if ((flags & SANDBOX_LL_NO_TCP) && abi >= 4) {
		attr.handled_access_net = SANDBOX_LL_NET_BIND_TCP | SANDBOX_LL_NET_CONNECT_TCP;
		attr_size = offsetof(struct sandbox_ll_attr, scoped);
	}
	if ((flags & SANDBOX_LL_SCOPE) && abi >= 6) {
		attr.scoped = SANDBOX_LL_SCOPE_ABSTRACT_UNIX | SANDBOX_LL_SCOPE_SIGNAL;
		attr_size = sizeof attr;
	}
	rfd = (int)syscall(SYS_landlock_create_ruleset, &attr, attr_size, 0);
	if (rfd < 0)
		return fail(err, errlen, "landlock_create_ruleset: %s", strerror(errno));
	if (sandbox_ll_rules(rfd, paths, n, attr.handled_access_fs, err, errlen) < 0) {
		close(rfd);
		return -1;
	}
	/* Without CAP_SYS_ADMIN the kernel requires it; sandbox_drop() has
	 * set it already when called first. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
	    syscall(SYS_landlock_restrict_self, rfd, 0) < 0) {
		close(rfd);
		return fail(err, errlen, "landlock_restrict_self: %s", strerror(errno));
	}
	close(rfd);
	return 0;
}

const char *sandbox_gconv_dir(void)
{
	static char dir[4096];
	const char *env = getenv("GCONV_PATH");
	if (env != NULL && env[0] == '/') {
		size_t n = strcspn(env, ":");
		if (n < sizeof(dir)) {
			memcpy(dir, env, n);
			dir[n] = '\0';
			return dir;
		}
	}
	Dl_info info;
	if (dladdr((void *)iconv_open, &info) == 0 || info.dli_fname == NULL)
		return NULL;
	const char *slash = strrchr(info.dli_fname, '/');
	if (slash == NULL)
		return NULL;
	int n = snprintf(dir, sizeof(dir), "%.*s/gconv", (int)(slash - info.dli_fname),
	                 info.dli_fname);
	if (n < 0 || (size_t)n >= sizeof(dir))
		return NULL;
	return dir;
}

size_t sandbox_paths_queue_system(struct sandbox_path *out, size_t cap)
{
	static const char *const fixed[] = {
	    "/etc/resolv.conf",
	    "/etc/hosts",
	    "/etc/nsswitch.conf",
	    "/etc/gai.conf",
	    "/etc/localtime",
	    "/dev/urandom",
	    "/etc/ssl/certs",             /* CA directory; ca-certificates.crt is in it */
	    "/usr/lib/ssl",               /* OPENSSLDIR: cert.pem, certs/ (symlinks to the above) */
	    "/usr/share/ca-certificates", /* targets of the /etc/ssl/certs links */
	};
	const char *env[] = {getenv("SSL_CERT_FILE"), getenv("SSL_CERT_DIR")};
	size_t n = 0;

	for (size_t i = 0; i < sizeof fixed / sizeof fixed[0] && n < cap; i++)
		out[n++] = (struct sandbox_path){fixed[i], SANDBOX_RO, true};
	for (size_t i = 0; i < sizeof env / sizeof env[0] && n < cap; i++) {
		/* A single absolute path (OpenSSL also takes a ':' list: not
		 * covered); not one already listed. */
		bool dup = env[i] == NULL || env[i][0] != '/' || strchr(env[i], ':') != NULL;
		for (size_t k = 0; k < n && !dup; k++)
			dup = strcmp(out[k].path, env[i]) == 0;
		if (!dup)
			out[n++] = (struct sandbox_path){env[i], SANDBOX_RO, true};
	}
	return n;
}

/* ---- seccomp ---- */

/* Every role: memory, signals, time, threads (workq, the logger thread,
 * crypt(3) workers), the event loop (libevent: epoll, eventfd, pipe2), I/O on
 * descriptors it already holds or receives (sendmsg/recvmsg with SCM_RIGHTS),
 * getrandom (OpenSSL, libunbound). Found with strace -f over the integration
 * suite plus what glibc 2.36 does on x86_64 (rseq, set_robust_list). */
static const int sandbox_sys_base[] = {
    SCMP_SYS(read),
    SCMP_SYS(write),
    SCMP_SYS(readv),
    SCMP_SYS(writev),
    SCMP_SYS(pread64),
    SCMP_SYS(pwrite64),
    SCMP_SYS(close),
    SCMP_SYS(fstat),
    SCMP_SYS(newfstatat),
    SCMP_SYS(statx),
    SCMP_SYS(lseek),
    SCMP_SYS(fcntl),
    SCMP_SYS(dup),
    SCMP_SYS(dup3),
    SCMP_SYS(pipe2),
    SCMP_SYS(mmap),
    SCMP_SYS(munmap),
    SCMP_SYS(mprotect),
    SCMP_SYS(mremap),
    SCMP_SYS(madvise),
    SCMP_SYS(brk),
    SCMP_SYS(rt_sigaction),
    SCMP_SYS(rt_sigprocmask),
    SCMP_SYS(rt_sigreturn),
    SCMP_SYS(sigaltstack),
    SCMP_SYS(restart_syscall),
    SCMP_SYS(getpid),
    SCMP_SYS(gettid),
    SCMP_SYS(getppid),
    SCMP_SYS(getuid),
    SCMP_SYS(geteuid),
    SCMP_SYS(getgid),
    SCMP_SYS(getegid),
    SCMP_SYS(getresuid),
    SCMP_SYS(getresgid),
    SCMP_SYS(getgroups),
    SCMP_SYS(clock_gettime),
    SCMP_SYS(clock_getres),
    SCMP_SYS(clock_nanosleep),
    SCMP_SYS(nanosleep),
    SCMP_SYS(gettimeofday),
    SCMP_SYS(time),
    SCMP_SYS(futex),
    SCMP_SYS(set_robust_list),
    SCMP_SYS(get_robust_list),
    SCMP_SYS(rseq),
    SCMP_SYS(set_tid_address),
    SCMP_SYS(exit),
    SCMP_SYS(exit_group),
    SCMP_SYS(sched_yield),
    SCMP_SYS(sched_getaffinity),
    SCMP_SYS(getrandom),
    SCMP_SYS(epoll_create1),
    SCMP_SYS(epoll_ctl),
    SCMP_SYS(epoll_wait),
    SCMP_SYS(epoll_pwait),
    SCMP_SYS(epoll_pwait2),
    SCMP_SYS(eventfd2),
    SCMP_SYS(poll),
    SCMP_SYS(ppoll),
    SCMP_SYS(select),
    SCMP_SYS(pselect6),
    SCMP_SYS(sendmsg),
    SCMP_SYS(recvmsg),
    SCMP_SYS(sendto),
    SCMP_SYS(recvfrom),
    SCMP_SYS(shutdown),
    SCMP_SYS(getsockopt),
    SCMP_SYS(setsockopt),
    SCMP_SYS(getsockname),
    SCMP_SYS(getpeername),
    SCMP_SYS(uname),
};

/* smtpd: accepts on the listeners it was given; no path (Landlock allows
 * none, openat stays so that a lazy open fails as EACCES in a log line);
 * seals the message files the queue hands it (fdatasync) and reads their
 * file system's free space (fstatfs); connects out for recipient probes of
 * verify_recipients routes and for DNS (bind: libunbound's source port). */
static const int sandbox_sys_smtpd[] = {
    SCMP_SYS(accept4),   SCMP_SYS(accept),  SCMP_SYS(openat), SCMP_SYS(connect),
    SCMP_SYS(bind),      SCMP_SYS(fsync),   SCMP_SYS(fdatasync), SCMP_SYS(fstatfs),
    SCMP_SYS(ftruncate),
};

/* http: accepts on the listener the master bound; no file, no socket of
 * its own, no connect (its queue link comes from the master). openat is
 * there so that a lazy open in a library fails with Landlock's EACCES in
 * a log line (as smtpd), never a file. */
static const int sandbox_sys_http[] = {
    SCMP_SYS(accept4),
    SCMP_SYS(accept),
    SCMP_SYS(openat),
    /* The sandbox's store (issue 13; Landlock allows only sandbox.dir and
     * the maildrop): SQLite's WAL index and journal, the message files,
     * a released message's drop file. Without a sandbox Landlock allows
     * no path, and these calls have nothing to act on. */
    SCMP_SYS(fsync),      SCMP_SYS(fdatasync),  SCMP_SYS(ftruncate), SCMP_SYS(fallocate),
    SCMP_SYS(unlink),     SCMP_SYS(unlinkat),   SCMP_SYS(rename),    SCMP_SYS(renameat),
    SCMP_SYS(renameat2),  SCMP_SYS(linkat),     SCMP_SYS(mkdir),     SCMP_SYS(mkdirat),
    SCMP_SYS(access),     SCMP_SYS(faccessat),  SCMP_SYS(faccessat2), SCMP_SYS(readlink),
    SCMP_SYS(readlinkat), SCMP_SYS(stat),       SCMP_SYS(lstat),     SCMP_SYS(getcwd),
    SCMP_SYS(open),
};

/* queue: the spool (create, fdatasync, rename, unlink, list; the
 * analytics store is a file in it), Maildir
 * (mkdir, fchmod), outbound SMTP/LMTP (connect), libunbound (bind of a
 * random UDP source port), the control socket (accept4). glibc on x86_64
 * still uses the old mkdir/rename/unlink/chmod/access calls. */
static const int sandbox_sys_queue[] = {
    SCMP_SYS(accept4),    SCMP_SYS(accept),     SCMP_SYS(connect),    SCMP_SYS(bind),
    SCMP_SYS(listen),     SCMP_SYS(socketpair), SCMP_SYS(openat),     SCMP_SYS(open),
    SCMP_SYS(fsync),      SCMP_SYS(fdatasync),  SCMP_SYS(rename),     SCMP_SYS(renameat),
    SCMP_SYS(renameat2),  SCMP_SYS(unlink),     SCMP_SYS(unlinkat),   SCMP_SYS(mkdir),
    SCMP_SYS(mkdirat),    SCMP_SYS(rmdir),      SCMP_SYS(getdents64), SCMP_SYS(fstatfs),
    SCMP_SYS(statfs),     SCMP_SYS(fchmod),     SCMP_SYS(chmod),      SCMP_SYS(fchmodat),
    SCMP_SYS(ftruncate),  SCMP_SYS(fallocate),  SCMP_SYS(access),     SCMP_SYS(faccessat),
    SCMP_SYS(faccessat2), SCMP_SYS(readlink),   SCMP_SYS(readlinkat), SCMP_SYS(stat),
    SCMP_SYS(lstat),      SCMP_SYS(utimensat),  SCMP_SYS(linkat),     SCMP_SYS(link),
    /* SQLite (the analytics store, <spool>/stats.db) makes a relative
     * spool_dir absolute; its other calls (pread64, pwrite64, fcntl locks,
     * mmap of the -shm file, fdatasync, unlink) are in the lists already. */
    SCMP_SYS(getcwd),
};

/* auth and keys compute on bytes master sent them: the base set only. */

/* What ASan, UBSan and LeakSanitizer do at run time and at exit: read
 * /proc/self/maps, and stop the world (clone a tracer process that ptraces every
 * thread, waits for it, lists /proc/PID/task). Test builds only. */
static const int sandbox_sys_asan[] = {
    SCMP_SYS(clone),
    SCMP_SYS(open),
    SCMP_SYS(openat),
    SCMP_SYS(readlink),
    SCMP_SYS(readlinkat),
    SCMP_SYS(getdents64),
    SCMP_SYS(getdents),
    SCMP_SYS(ptrace),
    SCMP_SYS(wait4),
    SCMP_SYS(waitid),
    SCMP_SYS(kill),
    SCMP_SYS(tgkill),
    SCMP_SYS(tkill),
    SCMP_SYS(prctl),
    SCMP_SYS(sysinfo),
    SCMP_SYS(access),
    SCMP_SYS(stat),
    SCMP_SYS(lstat),
    SCMP_SYS(process_vm_readv),
    SCMP_SYS(mincore),
    SCMP_SYS(prlimit64),
    SCMP_SYS(getrlimit),
    SCMP_SYS(setrlimit),
};

/* Never, in any mode: running programs, debugging others, the kernel's
 * administrative and namespace interfaces, identities. */
static const int sandbox_sys_never[] = {
    SCMP_SYS(execve),
    SCMP_SYS(execveat),
    SCMP_SYS(mount),
    SCMP_SYS(umount2),
    SCMP_SYS(pivot_root),
    SCMP_SYS(chroot),
    SCMP_SYS(kexec_load),
    SCMP_SYS(kexec_file_load),
    SCMP_SYS(bpf),
    SCMP_SYS(init_module),
    SCMP_SYS(finit_module),
    SCMP_SYS(delete_module),
    SCMP_SYS(reboot),
    SCMP_SYS(swapon),
    SCMP_SYS(swapoff),
    SCMP_SYS(unshare),
    SCMP_SYS(setns),
    SCMP_SYS(keyctl),
    SCMP_SYS(add_key),
    SCMP_SYS(request_key),
    SCMP_SYS(process_vm_writev),
    SCMP_SYS(perf_event_open),
    SCMP_SYS(userfaultfd),
    SCMP_SYS(open_by_handle_at),
    SCMP_SYS(name_to_handle_at),
    SCMP_SYS(personality),
    SCMP_SYS(acct),
    SCMP_SYS(iopl),
    SCMP_SYS(ioperm),
    SCMP_SYS(setuid),
    SCMP_SYS(setgid),
    SCMP_SYS(setreuid),
    SCMP_SYS(setregid),
    SCMP_SYS(setresuid),
    SCMP_SYS(setresgid),
    SCMP_SYS(setgroups),
    SCMP_SYS(ptrace),
};

#define SANDBOX_N(a) (sizeof(a) / sizeof((a)[0]))

/* Each returns 0 or libseccomp's negative errno. */
static int sandbox_sc_list(scmp_filter_ctx ctx, uint32_t action, const int *sys, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		/* A call unknown to this architecture's table is < 0: skip it. */
		int rc = sys[i] >= 0 ? seccomp_rule_add(ctx, action, sys[i], 0) : 0;
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* One rule per allowed value of argument argi. */
static int sandbox_sc_arg_in(scmp_filter_ctx ctx, int sys, unsigned argi, const uint64_t *vals,
                             size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct scmp_arg_cmp c = {argi, SCMP_CMP_EQ, vals[i], 0};
		int rc = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, sys, 1, &c);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* The calls allowed only with certain arguments. socket(): by domain
 * (smtpd and queue: AF_UNIX, AF_INET, AF_INET6; auth and keys: none).
 * ioctl(): FIONREAD (libevent's read size), FIONBIO, TCGETS and TIOCGWINSZ
 * (isatty() in stdio). prctl(): the thread name only. Signals: to this
 * process only (abort(), raise()); all children run as the same user, so an
 * unfiltered kill() could stop the others. getrlimit through prlimit64 with
 * no new limit. clone(): threads only (CLONE_THREAD), no fork; clone3()
 * passes its flags in memory a filter cannot read, so it fails with ENOSYS
 * and glibc (2.34+) falls back to clone(). */
static int sandbox_sc_args(scmp_filter_ctx ctx, enum sandbox_role role)
{
	static const uint64_t domains[] = {AF_UNIX, AF_INET, AF_INET6};
	static const uint64_t ioctls[] = {FIONREAD, FIONBIO, TCGETS, TIOCGWINSZ};
	static const uint64_t prctls[] = {PR_SET_NAME, PR_GET_NAME};
	const uint64_t self[] = {(uint64_t)getpid()};
	const struct scmp_arg_cmp getonly = {2, SCMP_CMP_EQ, 0, 0};
	int rc = 0;

	if (role == SANDBOX_SMTPD || role == SANDBOX_QUEUE)
		rc = sandbox_sc_arg_in(ctx, SCMP_SYS(socket), 0, domains, SANDBOX_N(domains));
	if (rc == 0)
		rc = sandbox_sc_arg_in(ctx, SCMP_SYS(ioctl), 1, ioctls, SANDBOX_N(ioctls));
	if (rc == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
	if (SANDBOX_ASAN)
		return rc; /* clone, prctl, kill, tgkill, prlimit64 are allowed whole */
	const struct scmp_arg_cmp thread = {0, SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD};
	if (rc == 0)
		rc = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1, &thread);
	if (rc == 0)
		rc = sandbox_sc_arg_in(ctx, SCMP_SYS(prctl), 0, prctls, SANDBOX_N(prctls));
	if (rc == 0)
		rc = sandbox_sc_arg_in(ctx, SCMP_SYS(kill), 0, self, 1);
	if (rc == 0)
		rc = sandbox_sc_arg_in(ctx, SCMP_SYS(tgkill), 0, self, 1);
	if (rc == 0)
		rc = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prlimit64), 1, &getonly);
	return rc;
}

/* In ENFORCE mode the default action already denies these; in LOG mode they
 * must stay denied. ptrace is on the ASan list (LeakSanitizer). */
static int sandbox_sc_never(scmp_filter_ctx ctx)
{
	for (size_t i = 0; i < SANDBOX_N(sandbox_sys_never); i++) {
		int s = sandbox_sys_never[i];
		if (s < 0 || (SANDBOX_ASAN && s == SCMP_SYS(ptrace)))
			continue;
		int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), s, 0);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int sandbox_sc_rules(scmp_filter_ctx ctx, enum sandbox_role role,
                            enum sandbox_seccomp_mode mode)
{
	int rc =
	    sandbox_sc_list(ctx, SCMP_ACT_ALLOW, sandbox_sys_base, SANDBOX_N(sandbox_sys_base));

	if (rc == 0 && role == SANDBOX_SMTPD)
		rc = sandbox_sc_list(ctx, SCMP_ACT_ALLOW, sandbox_sys_smtpd,
		                     SANDBOX_N(sandbox_sys_smtpd));
	if (rc == 0 && role == SANDBOX_HTTP)
		rc = sandbox_sc_list(ctx, SCMP_ACT_ALLOW, sandbox_sys_http,
		                     SANDBOX_N(sandbox_sys_http));
	if (rc == 0 && role == SANDBOX_QUEUE)
		rc = sandbox_sc_list(ctx, SCMP_ACT_ALLOW, sandbox_sys_queue,
		                     SANDBOX_N(sandbox_sys_queue));
	if (rc == 0 && SANDBOX_ASAN)
		rc = sandbox_sc_list(ctx, SCMP_ACT_ALLOW, sandbox_sys_asan,
		                     SANDBOX_N(sandbox_sys_asan));
	if (rc == 0)
		rc = sandbox_sc_args(ctx, role);
	if (rc == 0 && mode == SANDBOX_SECCOMP_LOG)
		rc = sandbox_sc_never(ctx);
	return rc;
}

int sandbox_seccomp(enum sandbox_role role, enum sandbox_seccomp_mode mode, char *err,
                    size_t errlen)
{
	uint32_t def = mode == SANDBOX_SECCOMP_LOG ? SCMP_ACT_LOG : SCMP_ACT_ERRNO(EPERM);
	scmp_filter_ctx ctx = seccomp_init(def);
	int rc;

	if (ctx == NULL)
		return fail(err, errlen, "seccomp_init failed");
	/* TSYNC: threads started before (the logger thread) get the filter too. */
	rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
	if (rc == 0)
		rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 1);
	/* The kernel also logs each EPERM it returns (audit "type=1326"), so a
	 * missing call can be found without switching to LOG mode. Kernels or
	 * libseccomp without it: the denial still shows as EPERM. */
	if (rc == 0 && mode == SANDBOX_SECCOMP_ENFORCE && seccomp_api_get() >= 3)
		(void)seccomp_attr_set(ctx, SCMP_FLTATR_CTL_LOG, 1);
	if (rc == 0)
		rc = sandbox_sc_rules(ctx, role, mode);
	if (rc == 0)
		rc = seccomp_load(ctx);
	seccomp_release(ctx);
	if (rc != 0) /* -ESRCH (or a thread id): a thread could not take the filter */
		return fail(err, errlen, "seccomp (%s): %s", sandbox_role_name(role),
		            rc < 0 ? strerror(-rc) : "cannot synchronize threads");
	return 0;
}

enum sandbox_seccomp_mode sandbox_seccomp_mode_env(void)
{
	const char *v = getenv("HIKYAKU_SECCOMP");

	return v != NULL && strcmp(v, "log") == 0 ? SANDBOX_SECCOMP_LOG : SANDBOX_SECCOMP_ENFORCE;
}

/* ---- all together ---- */

int sandbox_apply(const struct sandbox_conf *c, char *err, size_t errlen)
{
	bool root = geteuid() == 0;

	if (sandbox_drop(c->user, err, errlen) < 0)
		return -1;
	if (c->parent > 0 && sandbox_parent_watch(c->parent, err, errlen) < 0)
		return -1;
	if (sandbox_landlock(c->paths, c->npaths, c->landlock_flags, err, errlen) < 0)
		return -1;
	if (sandbox_seccomp(c->role, c->seccomp_mode, err, errlen) < 0)
		return -1;
	log_info("event=sandbox process=%s uid=%u gid=%u dropped=%s paths=%zu seccomp=%s",
	         sandbox_role_name(c->role), (unsigned)getuid(), (unsigned)getgid(),
	         root ? "yes" : "no", c->npaths,
	         c->seccomp_mode == SANDBOX_SECCOMP_LOG ? "log" : "enforce");
	return 0;
}
