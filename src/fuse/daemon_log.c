/*
 * daemon_log.c — where the mount daemon's messages go. In the foreground: stderr, as before. In
 * the background (stdio is /dev/null there): syslog, as a kernel filesystem's messages go to the
 * kernel log. With logfile=PATH: also appended to PATH, one timestamped line per message. A fatal
 * signal (a crash) writes its name and a backtrace to the log file and stderr before the default
 * action runs, so a daemon that dies leaves a trace.
 */
#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "fuse/ubt_fuse.h"

static int log_fd = -1;      /* logfile=, or -1 */
static bool log_syslog;      /* in the background */
static bool log_stderr = true;

static void write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		buf += n;
		len -= (size_t)n;
	}
}

/* How a message shows on stderr: not at all, "ubtrfs: MSG", or "ubtrfs: LEVEL: MSG" (library). */
enum stderr_form { STDERR_NONE, STDERR_PLAIN, STDERR_LEVEL };

/* One message (no trailing newline) to every sink. level as the library's (0 error .. 3 debug). */
static void log_line(int level, enum stderr_form form, const char *msg)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };
	const char *name = names[level < 0 ? 0 : level > 3 ? 3 : level];
	char line[1400];
	int n;

	if (log_stderr && form != STDERR_NONE) {
		if (form == STDERR_LEVEL)
			n = snprintf(line, sizeof(line), "ubtrfs: %s: %s\n", name, msg);
		else
			n = snprintf(line, sizeof(line), "ubtrfs: %s\n", msg);
		write_all(STDERR_FILENO, line, n < 0 ? 0 : (size_t)n >= sizeof(line) ? sizeof(line) - 1 : (size_t)n);
	}
	if (log_fd >= 0) {
		struct timeval tv;
		struct tm tm;
		char stamp[32];

		gettimeofday(&tv, NULL);
		localtime_r(&tv.tv_sec, &tm);
		strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
		n = snprintf(line, sizeof(line), "%s.%03ld ubtrfs[%d]: %s: %s\n", stamp,
			     (long)(tv.tv_usec / 1000), (int)getpid(), name, msg);
		write_all(log_fd, line, n < 0 ? 0 : (size_t)n >= sizeof(line) ? sizeof(line) - 1 : (size_t)n);
	}
	if (log_syslog) {
		static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };

		syslog(prio[level < 0 ? 0 : level > 3 ? 3 : level], "%s: %s", name, msg);
	}
}

static void library_sink(int level, const char *line, void *ctx)
{
	(void)ctx;
	log_line(level, STDERR_LEVEL, line);
}

static void log_vline(int level, enum stderr_form form, const char *fmt, va_list ap)
{
	char msg[1024];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	log_line(level, form, msg);
}

void ubtf_err(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vline(0, STDERR_PLAIN, fmt, ap);
	va_end(ap);
}

/* Not on stderr: a foreground mount stays quiet, as FUSE programs do. */
void ubtf_note(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vline(2, STDERR_NONE, fmt, ap);
	va_end(ap);
}

static void crash_handler(int sig)
{
	void *frames[64];
	char head[96];
	int n, len;

	len = snprintf(head, sizeof(head), "ubtrfs[%d]: fatal signal %d (%s); backtrace:\n",
		       (int)getpid(), sig, sigabbrev_np(sig) ? sigabbrev_np(sig) : "?");
	n = backtrace(frames, 64);
	if (log_fd >= 0) {
		write_all(log_fd, head, (size_t)len);
		backtrace_symbols_fd(frames, n, log_fd);
	}
	if (log_stderr) {
		write_all(STDERR_FILENO, head, (size_t)len);
		backtrace_symbols_fd(frames, n, STDERR_FILENO);
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

int ubtf_log_open(const char *logfile)
{
	if (logfile) {
		log_fd = open(logfile, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
		if (log_fd < 0) {
			int err = errno;

			ubtf_err("logfile=%s: %s", logfile, strerror(err));
			return -err;
		}
	}
	/* backtrace() loads libgcc on first use: do it now, not inside a signal handler. */
	{
		void *frame;

		backtrace(&frame, 1);
	}
	ubt_set_log_sink(library_sink, NULL);
	return 0;
}

void ubtf_log_daemonize(void)
{
	openlog("ubtrfs", LOG_PID | LOG_NDELAY, LOG_DAEMON);
	log_syslog = true;
	log_stderr = false;
}

void ubtf_log_install_crash_handler(void)
{
	static const int sigs[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT };
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = crash_handler;
	sa.sa_flags = SA_RESETHAND | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
}

void ubtf_log_close(void)
{
	ubt_set_log_sink(NULL, NULL);
	if (log_syslog)
		closelog();
	log_syslog = false;
	log_stderr = true;
	if (log_fd >= 0)
		close(log_fd);
	log_fd = -1;
}
