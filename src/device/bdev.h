/*
 * bdev.h — the block device seam: an image file or a raw device behind an ops table, so tests can
 * put fault-injecting and crash-recording devices in its place.
 */
#ifndef UBT_DEVICE_BDEV_H
#define UBT_DEVICE_BDEV_H

#include <sys/types.h>

#include "../util/compat.h"

struct ubt_bdev;

struct ubt_bdev_ops {
	/* Read/write exactly @len bytes at @off; return 0 or a negative errno (-EIO on short). */
	int (*read)(struct ubt_bdev *bdev, void *buf, size_t len, u64 off);
	int (*write)(struct ubt_bdev *bdev, const void *buf, size_t len, u64 off);
	int (*flush)(struct ubt_bdev *bdev);
	void (*close)(struct ubt_bdev *bdev);
};

struct ubt_bdev {
	const struct ubt_bdev_ops *ops;
	void *priv;
	u64 size;     /* bytes */
	bool rdonly;
	char *name;   /* path, for messages */
};

/*
 * Open an image file or block device. Takes an advisory lock on it: shared for read-only, exclusive
 * for read-write, so that a second writer is refused with -EBUSY (message logged).
 */
int ubt_bdev_open_file(const char *path, bool rdonly, struct ubt_bdev **out);

static inline int ubt_bdev_read(struct ubt_bdev *b, void *buf, size_t len, u64 off)
{
	return b->ops->read(b, buf, len, off);
}
static inline int ubt_bdev_write(struct ubt_bdev *b, const void *buf, size_t len, u64 off)
{
	return b->rdonly ? -EROFS : b->ops->write(b, buf, len, off);
}
static inline int ubt_bdev_flush(struct ubt_bdev *b)
{
	return b->ops->flush(b);
}
void ubt_bdev_close(struct ubt_bdev *b);
/* pwrite(2) all of @len bytes at @off, retrying short writes and EINTR: 0 or -errno. */
int ubt_pwrite_all(int fd, const void *buf, size_t len, u64 off);

/*
 * The crash-recording device (bdev_crash.c), after dm-log-writes: reads and writes go to an
 * in-memory overlay over a read-only image (the image is never written), and every write
 * (offset, data) and every flush is logged in order. The log replays the image as a power loss
 * would leave it at any flush point. It can also fail chosen writes with -EIO (dm-error-like).
 */
struct ubt_crash_dev;

enum ubt_crash_mode {
	UBT_CRASH_FLUSHED,  /* only the writes before flush K */
	UBT_CRASH_RANDOM,   /* plus a seeded random subset of the writes between flush K and K+1 */
	UBT_CRASH_ALL,      /* plus every write between flush K and K+1 */
};

/* Open the recorder over the image @path (opened read-only). */
int ubt_crash_open(const char *path, struct ubt_crash_dev **out);
/* A device view of @cd for mounting; closing it leaves the recorder and its log alone. */
int ubt_crash_bdev(struct ubt_crash_dev *cd, struct ubt_bdev **out);
/* Fail the write calls numbered [@first, @first + @count) (0-based, over all calls) with -EIO. */
void ubt_crash_fail_writes(struct ubt_crash_dev *cd, u64 first, u64 count);
/* Write calls so far (failed ones included) and flushes logged so far. */
u64 ubt_crash_nr_writes(struct ubt_crash_dev *cd);
u32 ubt_crash_nr_flushes(struct ubt_crash_dev *cd);
/*
 * Write to @out_path the image as a power loss at flush point @k leaves it: the base image plus
 * every write logged before the @k-th flush (k = 0: none; k = nr_flushes: every write before the
 * last flush), plus per @mode the writes after it that had not been flushed yet. *@applied (may
 * be NULL) gets the number of writes applied. -EINVAL when @k is past the last flush.
 */
int ubt_crash_materialize(struct ubt_crash_dev *cd, u32 k, enum ubt_crash_mode mode, u64 seed,
			  const char *out_path, u64 *applied);
/* Free the recorder (its device view must be closed). */
void ubt_crash_free(struct ubt_crash_dev *cd);

#endif
