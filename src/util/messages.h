/* messages.h — the library's log: error/warning/info/debug lines with a settable sink and level. */
#ifndef UBT_UTIL_MESSAGES_H
#define UBT_UTIL_MESSAGES_H

#include <stdarg.h>

enum ubt_log_level { UBT_LOG_ERROR = 0, UBT_LOG_WARN = 1, UBT_LOG_INFO = 2, UBT_LOG_DEBUG = 3 };

void ubt_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ubt_log_set_level(int level);
/* Sink receives a full line without trailing newline; NULL restores stderr. */
void ubt_log_set_sink(void (*sink)(int level, const char *line, void *ctx), void *ctx);

#define ubt_err(...) ubt_log(UBT_LOG_ERROR, __VA_ARGS__)
#define ubt_warn(...) ubt_log(UBT_LOG_WARN, __VA_ARGS__)
#define ubt_info(...) ubt_log(UBT_LOG_INFO, __VA_ARGS__)
#define ubt_debug(...) ubt_log(UBT_LOG_DEBUG, __VA_ARGS__)

#endif
