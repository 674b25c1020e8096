/* messages.c — implementation of the library log (level filter, pluggable sink, thread-safe lines). */
#include "messages.h"

#include <pthread.h>
#include <stdio.h>

static int log_level = UBT_LOG_WARN;
static void (*log_sink)(int, const char *, void *);
static void *log_sink_ctx;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

void ubt_log_set_level(int level) { log_level = level; }

void ubt_log_set_sink(void (*sink)(int, const char *, void *), void *ctx)
{
	pthread_mutex_lock(&log_lock);
	log_sink = sink;
	log_sink_ctx = ctx;
	pthread_mutex_unlock(&log_lock);
}

void ubt_log(int level, const char *fmt, ...)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };
	char line[1024];
	va_list ap;

	if (level > log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&log_lock);
	if (log_sink)
		log_sink(level, line, log_sink_ctx);
	else
		fprintf(stderr, "ubtrfs: %s: %s\n", names[level < 0 ? 0 : level > 3 ? 3 : level], line);
	pthread_mutex_unlock(&log_lock);
}
