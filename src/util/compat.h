/* compat.h — basic types, ERR_PTR helpers, min/max, endian loads for the whole tree. */
#ifndef UBT_UTIL_COMPAT_H
#define UBT_UTIL_COMPAT_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <endian.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int64_t s64;

#define UBT_MAX_ERRNO 4095
static inline void *ERR_PTR(long err) { return (void *)err; }
static inline long PTR_ERR(const void *p) { return (long)p; }
static inline bool IS_ERR(const void *p) { return (unsigned long)p >= (unsigned long)-UBT_MAX_ERRNO; }
static inline bool IS_ERR_OR_NULL(const void *p) { return !p || IS_ERR(p); }

#define ubt_min(a, b) ({ __typeof__(a) _a = (a); __typeof__(b) _b = (b); _a < _b ? _a : _b; })
#define ubt_max(a, b) ({ __typeof__(a) _a = (a); __typeof__(b) _b = (b); _a > _b ? _a : _b; })
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define ALIGN_UP(x, a) (((x) + ((a) - 1)) & ~((__typeof__(x))(a) - 1))
#define ALIGN_DOWN(x, a) ((x) & ~((__typeof__(x))(a) - 1))
#define IS_ALIGNED(x, a) (((x) & ((__typeof__(x))(a) - 1)) == 0)
#define UBT_UNUSED __attribute__((unused))

/* Unaligned little-endian loads/stores: every on-disk field goes through these. */
static inline u16 get_le16(const void *p) { u16 v; memcpy(&v, p, 2); return le16toh(v); }
static inline u32 get_le32(const void *p) { u32 v; memcpy(&v, p, 4); return le32toh(v); }
static inline u64 get_le64(const void *p) { u64 v; memcpy(&v, p, 8); return le64toh(v); }
static inline void put_le16(void *p, u16 v) { v = htole16(v); memcpy(p, &v, 2); }
static inline void put_le32(void *p, u32 v) { v = htole32(v); memcpy(p, &v, 4); }
static inline void put_le64(void *p, u64 v) { v = htole64(v); memcpy(p, &v, 8); }

/* Internal invariant check (never for on-disk data: that returns -EUCLEAN). */
#ifdef UBT_DEBUG
#include <assert.h>
#define UBT_ASSERT(x) assert(x)
#else
#define UBT_ASSERT(x) ((void)0)
#endif

#endif
