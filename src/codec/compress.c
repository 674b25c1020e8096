/*
 * compress.c — btrfs's compressed extent framings: zlib (a zlib stream; the reader, like the kernel,
 * checks the header and ignores the adler32 trailer), zstd (one or more frames, window <= 128 KiB when
 * writing), lzo (btrfs's segment framing around LZO1X, one segment per sector of input). Decoders are
 * bounds-safe on corrupt input. Per-thread workspaces keep the codec contexts between calls.
 */
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>

#include <lzo/lzo1x.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "compress.h"

/* Extent compression types (the same numbers as BTRFS_COMPRESS_* in format/; codec sits below it). */
enum {
	COMP_ZLIB = 1,
	COMP_LZO = 2,
	COMP_ZSTD = 3,
};

#define MAX_COMPRESSED (128u * 1024)  /* btrfs's limit on one compressed extent, both sides */
#define MIN_SECTORSIZE 512u
#define MAX_SECTORSIZE 65536u
#define ZLIB_DEFAULT_LEVEL 3
#define ZLIB_MAX_LEVEL 9
#define ZSTD_DEFAULT_LEVEL 3
#define ZSTD_MAX_LEVEL 15
#define ZSTD_MIN_LEVEL (-15)
#define ZSTD_WRITE_WINDOWLOG 17	 /* the kernel's zstd reader accepts windows up to 128 KiB */
#define ZSTD_READ_WINDOWLOG_MAX 20 /* a little lenient when reading, still bounded in memory */
#define LZO_HDR 4
/* LZO1X's worst case output for @n input bytes. */
#define LZO_WORST(n) ((n) + (n) / 16 + 64 + 3)

/* Per-thread codec state, created lazily and freed when the thread exits. */
struct codec_ws {
	ZSTD_CCtx *zstd_c;
	ZSTD_DCtx *zstd_d;
	z_stream deflate;
	int deflate_level; /* 0 = not initialised */
	z_stream inflate;
	bool inflate_ready;
	void *lzo_mem;	/* LZO1X_1_MEM_COMPRESS bytes */
	u8 *lzo_buf;	/* LZO_WORST(MAX_SECTORSIZE) bytes: one compressed or decompressed segment */
};

static pthread_key_t ws_key;
static pthread_once_t ws_once = PTHREAD_ONCE_INIT;
static int ws_key_status;
static int lzo_status;
static __thread struct codec_ws *tls_ws;

static void ws_free(void *arg)
{
	struct codec_ws *ws = arg;

	if (!ws)
		return;
	ZSTD_freeCCtx(ws->zstd_c);
	ZSTD_freeDCtx(ws->zstd_d);
	if (ws->deflate_level)
		deflateEnd(&ws->deflate);
	if (ws->inflate_ready)
		inflateEnd(&ws->inflate);
	free(ws->lzo_mem);
	free(ws->lzo_buf);
	free(ws);
}

static void ws_global_init(void)
{
	ws_key_status = pthread_key_create(&ws_key, ws_free);
	lzo_status = lzo_init();
}

static struct codec_ws *ws_get(void)
{
	struct codec_ws *ws = tls_ws;

	if (ws)
		return ws;
	pthread_once(&ws_once, ws_global_init);
	if (ws_key_status != 0)
		return NULL;
	ws = calloc(1, sizeof(*ws));
	if (!ws)
		return NULL;
	if (pthread_setspecific(ws_key, ws) != 0) {
		free(ws);
		return NULL;
	}
	tls_ws = ws;
	return ws;
}

static bool sectorsize_ok(u32 sectorsize)
{
	return sectorsize >= MIN_SECTORSIZE && sectorsize <= MAX_SECTORSIZE && !(sectorsize & (sectorsize - 1));
}

/* ---- zlib ---- */

static int zlib_decompress(struct codec_ws *ws, const u8 *src, size_t src_len, u8 *dst, size_t dst_len,
			   size_t *out_len)
{
	z_stream *zs = &ws->inflate;
	int ret;

	/* A zlib header: deflate method, window <= 32 KiB, check bits, no preset dictionary. */
	if (src_len < 2 || (src[0] & 0x0f) != Z_DEFLATED || (src[0] >> 4) > 7 ||
	    ((src[0] << 8) | src[1]) % 31 != 0 || (src[1] & 0x20))
		return -EUCLEAN;

	if (!ws->inflate_ready) {
		memset(zs, 0, sizeof(*zs));
		ret = inflateInit2(zs, -MAX_WBITS);
		if (ret != Z_OK)
			return ret == Z_MEM_ERROR ? -ENOMEM : -EIO;
		ws->inflate_ready = true;
	} else if (inflateReset(zs) != Z_OK) {
		return -EIO;
	}

	/* Raw inflate after the 2-byte header: the adler32 trailer is not required, as in the kernel. */
	zs->next_in = (Bytef *)(src + 2);
	zs->avail_in = (uInt)ubt_min(src_len - 2, (size_t)UINT_MAX);
	zs->next_out = dst;
	zs->avail_out = (uInt)dst_len;
	zs->total_out = 0;
	for (;;) {
		ret = inflate(zs, Z_NO_FLUSH);
		if (ret == Z_STREAM_END)
			break;
		if (ret == Z_OK) {
			if (!zs->avail_out)
				break; /* all of the extent's bytes are out */
			if (!zs->avail_in)
				return -EUCLEAN; /* truncated stream */
			continue;
		}
		if (ret == Z_MEM_ERROR)
			return -ENOMEM;
		if (ret == Z_BUF_ERROR && !zs->avail_out)
			break;
		return -EUCLEAN;
	}
	*out_len = dst_len - zs->avail_out;
	return 0;
}

static ssize_t zlib_compress(struct codec_ws *ws, int level, const u8 *src, size_t len, u8 *dst, size_t limit)
{
	z_stream *zs = &ws->deflate;
	int ret;

	if (level <= 0)
		level = ZLIB_DEFAULT_LEVEL;
	level = ubt_min(level, ZLIB_MAX_LEVEL);
	if (ws->deflate_level != level) {
		if (ws->deflate_level)
			deflateEnd(zs);
		ws->deflate_level = 0;
		memset(zs, 0, sizeof(*zs));
		ret = deflateInit(zs, level);
		if (ret != Z_OK)
			return ret == Z_MEM_ERROR ? -ENOMEM : -EIO;
		ws->deflate_level = level;
	} else if (deflateReset(zs) != Z_OK) {
		return -EIO;
	}

	zs->next_in = (Bytef *)src;
	zs->avail_in = (uInt)len;
	zs->next_out = dst;
	zs->avail_out = (uInt)ubt_min(limit, (size_t)UINT_MAX);
	ret = deflate(zs, Z_FINISH);
	if (ret == Z_STREAM_END)
		return (ssize_t)zs->total_out;
	if (ret == Z_OK || ret == Z_BUF_ERROR)
		return -E2BIG; /* did not fit under the limit */
	return ret == Z_MEM_ERROR ? -ENOMEM : -EIO;
}

/* ---- zstd ---- */

static bool zstd_frame_magic(const u8 *p, size_t avail)
{
	u32 magic;

	if (avail < 4)
		return false;
	magic = get_le32(p);
	return magic == ZSTD_MAGICNUMBER || (magic & ZSTD_MAGIC_SKIPPABLE_MASK) == ZSTD_MAGIC_SKIPPABLE_START;
}

static int zstd_error_to_errno(size_t zret)
{
	return ZSTD_getErrorCode(zret) == ZSTD_error_memory_allocation ? -ENOMEM : -EUCLEAN;
}

static int zstd_decompress(struct codec_ws *ws, const u8 *src, size_t src_len, u8 *dst, size_t dst_len,
			   size_t *out_len)
{
	ZSTD_inBuffer in = { .src = src, .size = src_len, .pos = 0 };
	ZSTD_outBuffer out = { .dst = dst, .size = dst_len, .pos = 0 };
	size_t zret;

	if (!zstd_frame_magic(src, src_len))
		return -EUCLEAN;
	if (!ws->zstd_d) {
		ws->zstd_d = ZSTD_createDCtx();
		if (!ws->zstd_d)
			return -ENOMEM;
	}
	ZSTD_DCtx_reset(ws->zstd_d, ZSTD_reset_session_and_parameters);
	zret = ZSTD_DCtx_setParameter(ws->zstd_d, ZSTD_d_windowLogMax, ZSTD_READ_WINDOWLOG_MAX);
	if (ZSTD_isError(zret))
		return -EIO;

	while (out.pos < out.size) {
		size_t in_before = in.pos, out_before = out.pos;

		zret = ZSTD_decompressStream(ws->zstd_d, &out, &in);
		if (ZSTD_isError(zret))
			return zstd_error_to_errno(zret);
		if (zret == 0) {
			/* A frame ended: go on only if another frame follows (the rest is sector padding). */
			if (!zstd_frame_magic(src + in.pos, in.size - in.pos))
				break;
			continue;
		}
		if (out.pos == out.size)
			break;
		if (in.pos == in.size)
			return -EUCLEAN; /* truncated frame */
		if (in.pos == in_before && out.pos == out_before)
			return -EUCLEAN;
	}
	*out_len = out.pos;
	return 0;
}

static ssize_t zstd_compress(struct codec_ws *ws, int level, const u8 *src, size_t len, u8 *dst, size_t limit)
{
	size_t zret;

	if (level == 0)
		level = ZSTD_DEFAULT_LEVEL;
	level = ubt_max(ubt_min(level, ZSTD_MAX_LEVEL), ZSTD_MIN_LEVEL);
	if (!ws->zstd_c) {
		ws->zstd_c = ZSTD_createCCtx();
		if (!ws->zstd_c)
			return -ENOMEM;
	}
	ZSTD_CCtx_reset(ws->zstd_c, ZSTD_reset_session_and_parameters);
	zret = ZSTD_CCtx_setParameter(ws->zstd_c, ZSTD_c_compressionLevel, level);
	if (!ZSTD_isError(zret))
		zret = ZSTD_CCtx_setParameter(ws->zstd_c, ZSTD_c_windowLog, ZSTD_WRITE_WINDOWLOG);
	if (ZSTD_isError(zret))
		return -EIO;
	zret = ZSTD_compress2(ws->zstd_c, dst, limit, src, len);
	if (ZSTD_isError(zret)) {
		if (ZSTD_getErrorCode(zret) == ZSTD_error_dstSize_tooSmall)
			return -E2BIG;
		return ZSTD_getErrorCode(zret) == ZSTD_error_memory_allocation ? -ENOMEM : -EIO;
	}
	return (ssize_t)zret;
}

/* ---- lzo ---- */

static int lzo_ws_ready(struct codec_ws *ws, bool compress)
{
	if (lzo_status != LZO_E_OK)
		return -EIO;
	if (!ws->lzo_buf) {
		ws->lzo_buf = malloc(LZO_WORST(MAX_SECTORSIZE));
		if (!ws->lzo_buf)
			return -ENOMEM;
	}
	if (compress && !ws->lzo_mem) {
		ws->lzo_mem = malloc(LZO1X_1_MEM_COMPRESS);
		if (!ws->lzo_mem)
			return -ENOMEM;
	}
	return 0;
}

/*
 * Layout: LE32 total length (this header included, trailing sector padding included), then
 * segments: LE32 payload length + LZO1X payload holding at most one sector of input. A segment
 * header never crosses a sector boundary; up to 3 zero bytes pad the end of a sector instead.
 */
static int lzo_decompress(struct codec_ws *ws, const u8 *src, size_t src_len, u8 *dst, size_t dst_len,
			  u32 sectorsize, size_t *out_len)
{
	size_t total, cur = LZO_HDR, out = 0;
	int ret;

	if (!sectorsize_ok(sectorsize))
		return -EINVAL;
	ret = lzo_ws_ready(ws, false);
	if (ret)
		return ret;
	if (src_len < LZO_HDR)
		return -EUCLEAN;
	total = get_le32(src);
	if (total < LZO_HDR || total > src_len || total > MAX_COMPRESSED)
		return -EUCLEAN;

	while (cur < total && out < dst_len) {
		size_t seg, left;
		lzo_uint seg_out = sectorsize;
		u8 *target;

		if (total - cur < LZO_HDR)
			return -EUCLEAN;
		if (sectorsize - cur % sectorsize < LZO_HDR)
			return -EUCLEAN; /* unreachable by construction; guards the framing rule */
		seg = get_le32(src + cur);
		cur += LZO_HDR;
		if (seg == 0 || seg > total - cur || seg > LZO_WORST(sectorsize))
			return -EUCLEAN;

		/* Straight into @dst when a whole sector fits there, else through the bounce buffer. */
		target = dst_len - out >= sectorsize ? dst + out : ws->lzo_buf;
		ret = lzo1x_decompress_safe(src + cur, seg, target, &seg_out, NULL);
		if (ret != LZO_E_OK)
			return -EUCLEAN;
		if (target == ws->lzo_buf)
			memcpy(dst + out, ws->lzo_buf, ubt_min((size_t)seg_out, dst_len - out));
		out += ubt_min((size_t)seg_out, dst_len - out);
		cur += seg;

		left = sectorsize - cur % sectorsize;
		if (left < LZO_HDR)
			cur += left;
	}
	*out_len = out;
	return 0;
}

static ssize_t lzo_compress(struct codec_ws *ws, const u8 *src, size_t len, u8 *dst, size_t limit,
			    u32 sectorsize)
{
	size_t cur_in = 0, cur_out = LZO_HDR;
	int ret;

	ret = lzo_ws_ready(ws, true);
	if (ret)
		return ret;
	if (limit < LZO_HDR)
		return -E2BIG;

	while (cur_in < len) {
		size_t in_len = ubt_min((size_t)sectorsize, len - cur_in), left;
		lzo_uint seg = 0;

		ret = lzo1x_1_compress(src + cur_in, in_len, ws->lzo_buf, &seg, ws->lzo_mem);
		if (ret != LZO_E_OK)
			return -EIO;
		if (cur_out + LZO_HDR + seg > limit)
			return -E2BIG;
		put_le32(dst + cur_out, (u32)seg);
		memcpy(dst + cur_out + LZO_HDR, ws->lzo_buf, seg);
		cur_out += LZO_HDR + seg;
		cur_in += in_len;

		left = sectorsize - cur_out % sectorsize;
		if (left < LZO_HDR) {
			if (cur_out + left > limit)
				return -E2BIG;
			memset(dst + cur_out, 0, left);
			cur_out += left;
		}
	}
	put_le32(dst, (u32)cur_out);
	return (ssize_t)cur_out;
}

/* ---- dispatch ---- */

int ubt_decompress(int type, const void *src, size_t src_len, void *dst, size_t dst_len, u32 sectorsize)
{
	struct codec_ws *ws;
	size_t out_len = 0;
	int ret;

	if (type != COMP_ZLIB && type != COMP_LZO && type != COMP_ZSTD)
		return -EOPNOTSUPP;
	if (dst_len > UINT_MAX || (!src && src_len) || (!dst && dst_len))
		return -EINVAL;
	if (!dst_len)
		return 0;
	ws = ws_get();
	if (!ws)
		return -ENOMEM;

	switch (type) {
	case COMP_ZLIB:
		ret = zlib_decompress(ws, src, src_len, dst, dst_len, &out_len);
		break;
	case COMP_LZO:
		ret = lzo_decompress(ws, src, src_len, dst, dst_len, sectorsize, &out_len);
		break;
	default:
		ret = zstd_decompress(ws, src, src_len, dst, dst_len, &out_len);
		break;
	}
	if (ret)
		return ret;
	if (out_len < dst_len)
		memset((u8 *)dst + out_len, 0, dst_len - out_len);
	return 0;
}

ssize_t ubt_compress(int type, int level, const void *src, size_t len, void *dst, size_t dst_cap, u32 sectorsize)
{
	struct codec_ws *ws;
	size_t limit;

	if (type != COMP_ZLIB && type != COMP_LZO && type != COMP_ZSTD)
		return -EOPNOTSUPP;
	if (!len || len > MAX_COMPRESSED || !src || !dst || !sectorsize_ok(sectorsize))
		return -EINVAL;
	/* The result must be strictly smaller than the sectors it would save, and fit in @dst. */
	limit = ubt_min(ALIGN_UP(len, (size_t)sectorsize) - 1, dst_cap);
	ws = ws_get();
	if (!ws)
		return -ENOMEM;

	switch (type) {
	case COMP_ZLIB:
		return zlib_compress(ws, level, src, len, dst, limit);
	case COMP_LZO:
		return lzo_compress(ws, src, len, dst, limit, sectorsize);
	default:
		return zstd_compress(ws, level, src, len, dst, limit);
	}
}
