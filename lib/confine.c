/*
 * confine: each role's seccomp filter (libseccomp) and its process title.
 * A role calls proc_confine() once its descriptors are open and its
 * privileges dropped, just before its event loop: from then on only the
 * system calls on its list are allowed.  A call outside the list raises
 * SIGSYS; the handler tells the parent which call it was (one datagram on
 * the parent channel, async-signal-safe) and the process dies of SIGSYS.
 * The parent logs it and restarts the role, as for any crash.
 *
 * The lists are in docs/ARCHITECTURE.md; they were drawn from the code and
 * checked by running the integration tests with every role confined.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <fcntl.h>
#include <ucontext.h>
#include <unistd.h>

#include <seccomp.h>

#include "lib/ipc.h"
#include "lib/log.h"
#include "lib/proc.h"
#include "lib/util.h"

/* The directory relative config paths are read against (the daemon's). */
const char *proc_basedir = "/";

/* Every role: memory, time, signals, its channels, its log. */
static const int confine_base[] = {
	SCMP_SYS(read), SCMP_SYS(write), SCMP_SYS(readv), SCMP_SYS(writev),
	SCMP_SYS(close), SCMP_SYS(recvmsg), SCMP_SYS(sendmsg),
	SCMP_SYS(recvfrom), SCMP_SYS(sendto), SCMP_SYS(epoll_wait),
	SCMP_SYS(epoll_pwait), SCMP_SYS(epoll_ctl), SCMP_SYS(poll),
	SCMP_SYS(ppoll), SCMP_SYS(clock_gettime), SCMP_SYS(gettimeofday),
	SCMP_SYS(time), SCMP_SYS(clock_nanosleep), SCMP_SYS(nanosleep),
	SCMP_SYS(getpid), SCMP_SYS(gettid), SCMP_SYS(brk), SCMP_SYS(mmap),
	SCMP_SYS(munmap), SCMP_SYS(mremap), SCMP_SYS(mprotect),
	SCMP_SYS(madvise), SCMP_SYS(exit), SCMP_SYS(exit_group),
	SCMP_SYS(rt_sigreturn), SCMP_SYS(rt_sigaction),
	SCMP_SYS(rt_sigprocmask), SCMP_SYS(tgkill), SCMP_SYS(fcntl),
	SCMP_SYS(futex), SCMP_SYS(getrandom), SCMP_SYS(restart_syscall),
	SCMP_SYS(fstat), SCMP_SYS(newfstatat), SCMP_SYS(lseek),
	SCMP_SYS(sched_yield), SCMP_SYS(sysinfo), SCMP_SYS(getuid),
	SCMP_SYS(geteuid), SCMP_SYS(getgid), SCMP_SYS(getegid),
	/* syslog(3) reconnects to /dev/log after an error (AF_UNIX only) */
	SCMP_SYS(connect),
};

/* The smtp process: sessions (TLS on our listeners needs nothing more:
 * its context is built from memory before the filter), the DNS client,
 * the SMTP/LMTP client, TLS as a client (CA certificates read on demand),
 * the aliases map (Berkeley DB). */
static const int confine_smtp[] = {
	SCMP_SYS(accept), SCMP_SYS(accept4), SCMP_SYS(socket),
	SCMP_SYS(bind), SCMP_SYS(getsockname), SCMP_SYS(getpeername),
	SCMP_SYS(getsockopt), SCMP_SYS(setsockopt), SCMP_SYS(shutdown),
	SCMP_SYS(ioctl), SCMP_SYS(openat), SCMP_SYS(open), SCMP_SYS(pread64),
	SCMP_SYS(pwrite64), SCMP_SYS(getdents64), SCMP_SYS(dup),
	SCMP_SYS(fsync), SCMP_SYS(fdatasync), SCMP_SYS(ftruncate),
	SCMP_SYS(uname), SCMP_SYS(access), SCMP_SYS(faccessat),
	SCMP_SYS(statfs), SCMP_SYS(fstatfs), SCMP_SYS(flock),
	SCMP_SYS(socketpair), SCMP_SYS(getrusage), SCMP_SYS(prlimit64),
	SCMP_SYS(getrlimit), SCMP_SYS(readlink), SCMP_SYS(readlinkat),
	/* the SPF worker threads (smtpd/policy.c) and libunbound in them */
	SCMP_SYS(clone), SCMP_SYS(clone3), SCMP_SYS(set_robust_list),
	SCMP_SYS(rseq), SCMP_SYS(epoll_create), SCMP_SYS(epoll_create1),
	SCMP_SYS(pipe2),
};

/* The queue process: the spool (create, sync, rename, remove), the
 * commit thread, the control socket, the aliases map and the accounts
 * (passwd, group) it resolves recipients with. */
static const int confine_queue[] = {
	SCMP_SYS(openat), SCMP_SYS(open), SCMP_SYS(unlink), SCMP_SYS(unlinkat),
	SCMP_SYS(rename), SCMP_SYS(renameat), SCMP_SYS(renameat2),
	SCMP_SYS(fsync), SCMP_SYS(fdatasync), SCMP_SYS(syncfs),
	SCMP_SYS(getdents64), SCMP_SYS(ftruncate), SCMP_SYS(fchmod),
	SCMP_SYS(pread64), SCMP_SYS(pwrite64), SCMP_SYS(accept),
	SCMP_SYS(accept4), SCMP_SYS(getsockopt), SCMP_SYS(setsockopt),
	SCMP_SYS(getsockname), SCMP_SYS(getpeername), SCMP_SYS(shutdown),
	SCMP_SYS(socket), SCMP_SYS(ioctl), SCMP_SYS(dup), SCMP_SYS(uname),
	SCMP_SYS(access), SCMP_SYS(faccessat), SCMP_SYS(statfs),
	SCMP_SYS(fstatfs), SCMP_SYS(flock), SCMP_SYS(utimensat),
	SCMP_SYS(clone), SCMP_SYS(clone3), SCMP_SYS(set_robust_list),
	SCMP_SYS(rseq), SCMP_SYS(getrusage), SCMP_SYS(readlink),
	SCMP_SYS(readlinkat),
};

/* The vault: its channels and nothing else (the base list). */
static const int confine_vault[] = { SCMP_SYS(shutdown) };

#if defined(__SANITIZE_ADDRESS__)
/* AddressSanitizer's report (symbolizing, /proc/self/maps) needs these;
 * only the sanitizer build allows them. */
static const int confine_asan[] = {
	SCMP_SYS(readlink), SCMP_SYS(readlinkat), SCMP_SYS(openat),
	SCMP_SYS(getdents64), SCMP_SYS(clone), SCMP_SYS(clone3),
	SCMP_SYS(execve), SCMP_SYS(wait4), SCMP_SYS(pipe2), SCMP_SYS(dup2),
	SCMP_SYS(dup3), SCMP_SYS(prctl), SCMP_SYS(sched_getaffinity),
	SCMP_SYS(sigaltstack), SCMP_SYS(getrlimit), SCMP_SYS(prlimit64),
	SCMP_SYS(ioctl), SCMP_SYS(set_robust_list), SCMP_SYS(rseq),
};
#endif

#define NELEM(a)	(sizeof(a) / sizeof((a)[0]))

/*
 * Development aid: with TERN_SECCOMP_LEARN=file in the environment, a
 * refused call is appended to file ("role nr") and fails with ENOSYS
 * instead of killing the process, so one test run lists what a change to
 * the code needs.  Never set in production.
 */
static int	confine_learnfd = -1;
static char	confine_role[16];

/* SIGSYS: tell the parent which call, then die of the signal. */
static void
confine_trap(int sig, siginfo_t *si, void *ctx)
{
	unsigned char m[4 + 5 + 8];
	uint64_t nr = (uint64_t)(unsigned)si->si_syscall;
	struct sigaction sa;
	int i;

#if defined(__x86_64__)
	if (confine_learnfd >= 0) {
		char line[48], *p = line + sizeof(line);
		size_t rl = strlen(confine_role);

		*--p = '\n';
		do
			*--p = (char)('0' + nr % 10);
		while ((nr /= 10) != 0 && p > line + rl + 1);
		*--p = ' ';
		p -= rl;
		memcpy(p, confine_role, rl);
		(void)!write(confine_learnfd, p, (size_t)(line + sizeof(line) - p));
		((ucontext_t *)ctx)->uc_mcontext.gregs[REG_RAX] = -ENOSYS;
		return;
	}
#endif
	m[0] = (unsigned char)(IMSG_P_SECCOMP >> 8);
	m[1] = (unsigned char)IMSG_P_SECCOMP;
	m[2] = m[3] = 0;
	m[4] = T_CODE;
	m[5] = m[6] = m[7] = 0;
	m[8] = 8;
	for (i = 7; i >= 0; i--, nr >>= 8)
		m[9 + i] = (unsigned char)nr;
	(void)!send(PROC_PARENT_FD, m, sizeof(m), MSG_NOSIGNAL | MSG_DONTWAIT);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	sigaction(SIGSYS, &sa, NULL);
	raise(SIGSYS);
}

static void
confine_add(scmp_filter_ctx ctx, const int *calls, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (calls[i] >= 0 &&
		    seccomp_rule_add(ctx, SCMP_ACT_ALLOW, calls[i], 0) != 0)
			fatalx("event=start result=error reason=\"seccomp: "
			    "cannot allow system call %d\"", calls[i]);
}

void
proc_confine(const char *role)
{
	struct sigaction sa;
	scmp_filter_ctx ctx;
	int rc;

	const char *learn = getenv("TERN_SECCOMP_LEARN");

	tzset();	/* reads /etc/localtime now, not under the filter */
	str_copy(confine_role, role, sizeof(confine_role));
	if (learn && *learn)
		confine_learnfd = open(learn, O_WRONLY | O_APPEND | O_CREAT |
		    O_CLOEXEC, 0666);
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = confine_trap;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGSYS, &sa, NULL);
	if ((ctx = seccomp_init(SCMP_ACT_TRAP)) == NULL)
		fatalx("event=start result=error reason=\"seccomp_init\"");
	/* Every thread (the queue's commit thread) and no new privileges. */
	seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
	seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 1);
	confine_add(ctx, confine_base, NELEM(confine_base));
	if (strcmp(role, "smtp") == 0)
		confine_add(ctx, confine_smtp, NELEM(confine_smtp));
	else if (strcmp(role, "queue") == 0)
		confine_add(ctx, confine_queue, NELEM(confine_queue));
	else
		confine_add(ctx, confine_vault, NELEM(confine_vault));
#if defined(__SANITIZE_ADDRESS__)
	confine_add(ctx, confine_asan, NELEM(confine_asan));
#endif
	/* The vault makes no sockets but AF_UNIX ones (syslog). */
	if (strcmp(role, "vault") == 0)
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
		    SCMP_A0(SCMP_CMP_EQ, AF_UNIX));
	else	/* account lookups: libnss_systemd reads the bounding set */
		rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1,
		    SCMP_A0(SCMP_CMP_EQ, PR_CAPBSET_READ));
	if (rc != 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1 ||
	    (rc = seccomp_load(ctx)) != 0)
		fatalx("event=start result=error reason=\"seccomp: cannot load "
		    "the %s filter: %s\"", role, strerror(rc < 0 ? -rc : errno));
	seccomp_release(ctx);
}

void
proc_title(int argc, char *argv[], const char *role)
{
	char title[64];
	char *start = argv[0], *end = argv[argc - 1] + strlen(argv[argc - 1]);
	size_t room = (size_t)(end - start);

	snprintf(title, sizeof(title), "ternd: %s", role);
	prctl(PR_SET_NAME, title, 0, 0, 0);
	/* The exec'd argv ("ternd", "-X", role) is longer than the title. */
	if (strlen(title) <= room) {
		memset(start, 0, room);
		memcpy(start, title, strlen(title));
	}
}
