/* bdev_file.c — the block device backed by an image file or a raw block device (pread/pwrite, flock). */
#include "bdev.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../util/messages.h"

struct file_bdev {
	int fd;
};

static int file_read(struct ubt_bdev *b, void *buf, size_t len, u64 off)
{
	struct file_bdev *f = b->priv;
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(f->fd, (char *)buf + done, len - done, (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO; /* past the end of the device */
		done += (size_t)n;
	}
	return 0;
}

int ubt_pwrite_all(int fd, const void *buf, size_t len, u64 off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pwrite(fd, (const char *)buf + done, len - done, (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		done += (size_t)n;
	}
	return 0;
}

static int file_write(struct ubt_bdev *b, const void *buf, size_t len, u64 off)
{
	struct file_bdev *f = b->priv;

	return ubt_pwrite_all(f->fd, buf, len, off);
}

static int file_flush(struct ubt_bdev *b)
{
	struct file_bdev *f = b->priv;
	return fdatasync(f->fd) ? -errno : 0;
}

static void file_close(struct ubt_bdev *b)
{
	struct file_bdev *f = b->priv;
	close(f->fd);
	free(f);
}

static const struct ubt_bdev_ops file_bdev_ops = {
	.read = file_read, .write = file_write, .flush = file_flush, .close = file_close,
};

int ubt_bdev_open_file(const char *path, bool rdonly, struct ubt_bdev **out)
{
	struct ubt_bdev *b = NULL;
	struct file_bdev *f = NULL;
	struct stat st;
	int fd, ret;

	fd = open(path, (rdonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		ubt_err("cannot open %s: %s", path, strerror(errno));
		return ret;
	}
	if (flock(fd, (rdonly ? LOCK_SH : LOCK_EX) | LOCK_NB)) {
		ret = errno == EWOULDBLOCK ? -EBUSY : -errno;
		ubt_err("%s is in use by another ubtrfs mount%s", path,
			rdonly ? " that writes to it" : "; a second writer would corrupt it");
		goto fail;
	}
	if (fstat(fd, &st)) {
		ret = -errno;
		goto fail;
	}
	b = calloc(1, sizeof(*b));
	f = calloc(1, sizeof(*f));
	if (!b || !f) {
		ret = -ENOMEM;
		goto fail;
	}
	if (S_ISBLK(st.st_mode)) {
		u64 sz;
		if (ioctl(fd, BLKGETSIZE64, &sz)) {
			ret = -errno;
			goto fail;
		}
		b->size = sz;
	} else if (S_ISREG(st.st_mode)) {
		b->size = (u64)st.st_size;
	} else {
		ubt_err("%s is neither a regular file nor a block device", path);
		ret = -ENODEV;
		goto fail;
	}
	f->fd = fd;
	b->ops = &file_bdev_ops;
	b->priv = f;
	b->rdonly = rdonly;
	b->name = strdup(path);
	if (!b->name) {
		ret = -ENOMEM;
		goto fail;
	}
	*out = b;
	return 0;
fail:
	free(b);
	free(f);
	close(fd);
	return ret;
}

void ubt_bdev_close(struct ubt_bdev *b)
{
	if (!b)
		return;
	b->ops->close(b);
	free(b->name);
	free(b);
}
