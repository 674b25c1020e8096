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

#endif
