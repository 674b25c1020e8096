/*
 * crc32c.c — raw CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) update, no pre/post inversion.
 * Uses the SSE4.2 crc32 instruction when the CPU has it (the aarch64 CRC extension when compiled in),
 * otherwise a slicing-by-8 table built once at first use.
 */
#include <pthread.h>

#include "csum.h"

#if defined(__x86_64__) || defined(__i386__)
#include <nmmintrin.h>
#define UBT_CRC_X86 1
#elif defined(__aarch64__) && defined(__ARM_FEATURE_CRC32)
#include <arm_acle.h>
#define UBT_CRC_ARM 1
#endif

#define CRC32C_POLY_REFLECTED 0x82F63B78u

static u32 crc_tab[8][256];
static pthread_once_t crc_tab_once = PTHREAD_ONCE_INIT;

static void crc_tab_build(void)
{
	for (u32 i = 0; i < 256; i++) {
		u32 c = i;

		for (int bit = 0; bit < 8; bit++)
			c = (c >> 1) ^ ((c & 1) ? CRC32C_POLY_REFLECTED : 0);
		crc_tab[0][i] = c;
	}
	/* crc_tab[k][i]: the update for byte i followed by k zero bytes. */
	for (u32 i = 0; i < 256; i++) {
		u32 c = crc_tab[0][i];

		for (int k = 1; k < 8; k++) {
			c = (c >> 8) ^ crc_tab[0][c & 0xff];
			crc_tab[k][i] = c;
		}
	}
}

static u32 crc32c_sw(u32 crc, const u8 *p, size_t len)
{
	pthread_once(&crc_tab_once, crc_tab_build);

	while (len && ((uintptr_t)p & 7)) {
		crc = (crc >> 8) ^ crc_tab[0][(crc ^ *p++) & 0xff];
		len--;
	}
	while (len >= 8) {
		/* Two little-endian words, so the byte order matches the bytewise loop on any host. */
		u32 lo = get_le32(p) ^ crc;
		u32 hi = get_le32(p + 4);

		crc = crc_tab[7][lo & 0xff] ^ crc_tab[6][(lo >> 8) & 0xff] ^ crc_tab[5][(lo >> 16) & 0xff] ^
		      crc_tab[4][lo >> 24] ^ crc_tab[3][hi & 0xff] ^ crc_tab[2][(hi >> 8) & 0xff] ^
		      crc_tab[1][(hi >> 16) & 0xff] ^ crc_tab[0][hi >> 24];
		p += 8;
		len -= 8;
	}
	while (len--)
		crc = (crc >> 8) ^ crc_tab[0][(crc ^ *p++) & 0xff];
	return crc;
}

#if defined(UBT_CRC_X86)
__attribute__((target("sse4.2"))) static u32 crc32c_hw(u32 crc, const u8 *p, size_t len)
{
	while (len && ((uintptr_t)p & 7)) {
		crc = _mm_crc32_u8(crc, *p++);
		len--;
	}
#if defined(__x86_64__)
	u64 c64 = crc;

	while (len >= 8) {
		u64 v;

		memcpy(&v, p, 8);
		c64 = _mm_crc32_u64(c64, v);
		p += 8;
		len -= 8;
	}
	crc = (u32)c64;
#endif
	while (len >= 4) {
		u32 v;

		memcpy(&v, p, 4);
		crc = _mm_crc32_u32(crc, v);
		p += 4;
		len -= 4;
	}
	while (len--)
		crc = _mm_crc32_u8(crc, *p++);
	return crc;
}

/* 0 = not probed yet, 1 = SSE4.2, 2 = software. */
static int crc_impl;

static bool crc32c_have_hw(void)
{
	int impl = __atomic_load_n(&crc_impl, __ATOMIC_RELAXED);

	if (!impl) {
		__builtin_cpu_init();
		impl = __builtin_cpu_supports("sse4.2") ? 1 : 2;
		__atomic_store_n(&crc_impl, impl, __ATOMIC_RELAXED);
	}
	return impl == 1;
}
#elif defined(UBT_CRC_ARM)
static u32 crc32c_hw(u32 crc, const u8 *p, size_t len)
{
	while (len >= 8) {
		u64 v;

		memcpy(&v, p, 8);
		crc = __crc32cd(crc, le64toh(v));
		p += 8;
		len -= 8;
	}
	while (len--)
		crc = __crc32cb(crc, *p++);
	return crc;
}

static bool crc32c_have_hw(void) { return true; }
#endif

u32 ubt_crc32c_sw(u32 seed, const void *data, size_t len)
{
	return crc32c_sw(seed, data, len);
}

u32 ubt_crc32c(u32 seed, const void *data, size_t len)
{
	if (!len)
		return seed;
#if defined(UBT_CRC_X86) || defined(UBT_CRC_ARM)
	if (crc32c_have_hw())
		return crc32c_hw(seed, data, len);
#endif
	return crc32c_sw(seed, data, len);
}
