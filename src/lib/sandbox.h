/* sandbox.h — hardening of an unprivileged process (issue 9): drop to the
 * service user, PR_SET_NO_NEW_PRIVS, Landlock rules for the paths the process
 * may touch, and a seccomp allow-list of the system calls its role makes.
 * Run once by each child of master (smtpd, queue, auth, keys) after it has
 * opened what it needs and before it reads its first hostile byte.
 *
 * Order (sandbox_apply() does it): sandbox_drop() (needs /etc/passwd, so
 * before Landlock; sets NO_NEW_PRIVS, which Landlock and seccomp need as a
 * non-root user), sandbox_parent_watch() (changing credentials cleared
 * PR_SET_PDEATHSIG), sandbox_landlock(), sandbox_seccomp() last (the
 * allow-lists do not contain the Landlock calls). Call it before the process
 * starts any thread (Landlock binds only the calling thread). All return 0,
 * or -1 with a message in err[errlen]. */
#ifndef HK_LIB_SANDBOX_H
#define HK_LIB_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

enum sandbox_role { SANDBOX_SMTPD, SANDBOX_QUEUE, SANDBOX_AUTH, SANDBOX_KEYS, SANDBOX_HTTP };

/* What a denied system call does. ENFORCE: fails with EPERM (logged by the
 * caller as an ordinary error, the process goes on). LOG: allowed but logged
 * by the kernel (audit / dmesg "type=1326"), to find a missing call; the
 * calls that are never allowed (execve, ptrace, mount, ...) stay denied. */
enum sandbox_seccomp_mode { SANDBOX_SECCOMP_ENFORCE, SANDBOX_SECCOMP_LOG };

enum sandbox_access { SANDBOX_RO, SANDBOX_RW };

struct sandbox_path {
	const char *path;           /* a directory (the rule covers its tree) or a file */
	enum sandbox_access access; /* RO: read files and list dirs; RW: also create,
	                               write, truncate, rename, remove */
	bool optional;              /* a missing path is skipped, not an error */
};

/* sandbox_landlock() flags, each used where the kernel's ABI knows it.
 * NO_TCP: no TCP bind() or connect() at all (ABI >= 4). SCOPE: no signals
 * to, no abstract unix sockets of, processes outside this sandbox (ABI >= 6). */
#define SANDBOX_LL_NO_TCP 0x1u
#define SANDBOX_LL_SCOPE 0x2u

/* As root: user is required (NULL or "" is refused: "running as root needs
 * user:"), must not be uid 0; supplementary groups are cleared, gid and uid
 * set (real, effective, saved), and setuid(0) must then fail. As non-root:
 * no change of ids (the development default; user is ignored). Then
 * PR_SET_NO_NEW_PRIVS in both cases. */
int sandbox_drop(const char *user, char *err, size_t errlen);

/* PR_SET_PDEATHSIG(SIGKILL), then check that getppid() still is parent (it
 * may have died before the call). */
int sandbox_parent_watch(pid_t parent, char *err, size_t errlen);

/* Restrict filesystem access to paths[0..n) (n == 0: no file can be opened,
 * created or removed at all), handling every access right the running
 * kernel's Landlock ABI knows. Without Landlock (old kernel, or disabled at
 * boot): one log_warn line and 0. Sets NO_NEW_PRIVS (Landlock needs it).
 * Refused once the process has a second thread: the rules bind only the
 * calling thread. */
int sandbox_landlock(const struct sandbox_path *paths, size_t n, unsigned flags, char *err,
                     size_t errlen);

/* The read-only system files the queue process needs after start: resolver
 * (/etc/resolv.conf, /etc/hosts, nsswitch, gai.conf), the CA store for
 * outbound TLS verification (/etc/ssl/certs, /usr/lib/ssl, $SSL_CERT_FILE,
 * $SSL_CERT_DIR), /etc/localtime, /dev/urandom. All optional. Writes at most
 * cap entries to out (SANDBOX_QUEUE_SYSTEM_MAX suffices); returns how many. */
#define SANDBOX_QUEUE_SYSTEM_MAX 12
size_t sandbox_paths_queue_system(struct sandbox_path *out, size_t cap);

/* glibc's iconv modules (<libc's directory>/gconv, or $GCONV_PATH's first
 * entry), which iconv_open() loads on first use of a charset other than
 * UTF-8/latin1: the processes that decode captured mail (queue, http with a
 * sandbox) may read them. NULL when it cannot be found. */
const char *sandbox_gconv_dir(void);

/* Install the role's allow-list. */
int sandbox_seccomp(enum sandbox_role role, enum sandbox_seccomp_mode mode, char *err,
                    size_t errlen);

/* HIKYAKU_SECCOMP=log in the environment selects SANDBOX_SECCOMP_LOG. */
enum sandbox_seccomp_mode sandbox_seccomp_mode_env(void);

const char *sandbox_role_name(enum sandbox_role role);

/* The Landlock flags each role can live with: all of them SANDBOX_LL_SCOPE;
 * auth, keys and http also SANDBOX_LL_NO_TCP (they never bind or connect:
 * http accepts on a socket the master bound). */
unsigned sandbox_role_landlock_flags(enum sandbox_role role);

struct sandbox_conf {
	enum sandbox_role role;
	const char *user;                 /* conf "user:", NULL or "" if unset */
	pid_t parent;                     /* master's pid; 0: no parent watch */
	const struct sandbox_path *paths; /* Landlock rules */
	size_t npaths;
	unsigned landlock_flags; /* SANDBOX_LL_* */
	enum sandbox_seccomp_mode seccomp_mode;
};

/* All four steps in order; logs one info line with what was applied. */
int sandbox_apply(const struct sandbox_conf *c, char *err, size_t errlen);

#endif
