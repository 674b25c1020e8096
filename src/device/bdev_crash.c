/*
 * bdev_crash.c — the crash-recording device (the semantics of dm-log-writes, no code of it): a
 * read-only base image under an in-memory overlay of 4 KiB blocks; every write lands in the
 * overlay and in an ordered log (offset, data), every flush adds a numbered mark. A power loss at
 * flush point K is replayed into a new image file: the base plus the log up to the K-th mark,
 * optionally plus some of the writes that were still unflushed. Chosen writes can fail (-EIO).
 */
#include "bdev.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../util/messages.h"

#define CRASH_BLOCK 4096u

struct crash_entry {
	u64 off;
	u32 len;      /* 0: a flush mark */
	u8 *data;
};

struct ubt_crash_dev {
	pthread_mutex_t lock;
	int fd;               /* the base image, read-only */
	char *path;
	u64 size;
	u8 **blocks;          /* overlay, one slot per 4 KiB block, NULL = base */
	u64 nr_blocks;
	struct crash_entry *log;
	size_t nr_log, log_cap;
	u32 nr_flushes;
	u64 nr_writes;        /* write calls, failed ones included */
	u64 fail_first, fail_count;
	bool view_open;
};

static int pread_full(int fd, void *buf, size_t len, u64 off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0) { /* past the end of a short file: zeros */
			memset((char *)buf + done, 0, len - done);
			return 0;
		}
		done += (size_t)n;
	}
	return 0;
}

static int log_append(struct ubt_crash_dev *cd, u64 off, const void *data, u32 len)
{
	struct crash_entry *e;

	if (cd->nr_log == cd->log_cap) {
		size_t cap = cd->log_cap ? cd->log_cap * 2 : 1024;
		struct crash_entry *n = realloc(cd->log, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		cd->log = n;
		cd->log_cap = cap;
	}
	e = &cd->log[cd->nr_log];
	e->off = off;
	e->len = len;
	e->data = NULL;
	if (len) {
		e->data = malloc(len);
		if (!e->data)
			return -ENOMEM;
		memcpy(e->data, data, len);
	}
	cd->nr_log++;
	return 0;
}

static int crash_read(struct ubt_bdev *b, void *buf, size_t len, u64 off)
{
	struct ubt_crash_dev *cd = b->priv;
	int ret = 0;

	if (off > cd->size || len > cd->size - off)
		return -EIO;
	pthread_mutex_lock(&cd->lock);
	while (len) {
		u64 blk = off / CRASH_BLOCK;
		u32 in = (u32)(off % CRASH_BLOCK);
		size_t n = CRASH_BLOCK - in < len ? CRASH_BLOCK - in : len;

		if (cd->blocks[blk])
			memcpy(buf, cd->blocks[blk] + in, n);
		else if ((ret = pread_full(cd->fd, buf, n, off)))
			goto out;
		buf = (char *)buf + n;
		off += n;
		len -= n;
	}
out:
	pthread_mutex_unlock(&cd->lock);
	return ret;
}

static int crash_write(struct ubt_bdev *b, const void *buf, size_t len, u64 off)
{
	struct ubt_crash_dev *cd = b->priv;
	u64 no;
	int ret;

	if (off > cd->size || len > cd->size - off || len > UINT32_MAX)
		return -EIO;
	pthread_mutex_lock(&cd->lock);
	no = cd->nr_writes++;
	if (no >= cd->fail_first && no - cd->fail_first < cd->fail_count) {
		ret = -EIO;
		goto out;
	}
	ret = log_append(cd, off, buf, (u32)len);
	if (ret)
		goto out;
	while (len) {
		u64 blk = off / CRASH_BLOCK;
		u32 in = (u32)(off % CRASH_BLOCK);
		size_t n = CRASH_BLOCK - in < len ? CRASH_BLOCK - in : len;

		if (!cd->blocks[blk]) {
			u8 *p = malloc(CRASH_BLOCK);
			if (!p) {
				ret = -ENOMEM;
				goto out;
			}
			if (n < CRASH_BLOCK && (ret = pread_full(cd->fd, p, CRASH_BLOCK, blk * CRASH_BLOCK))) {
				free(p);
				goto out;
			}
			cd->blocks[blk] = p;
		}
		memcpy(cd->blocks[blk] + in, buf, n);
		buf = (const char *)buf + n;
		off += n;
		len -= n;
	}
out:
	pthread_mutex_unlock(&cd->lock);
	return ret;
}

static int crash_flush(struct ubt_bdev *b)
{
	struct ubt_crash_dev *cd = b->priv;
	int ret;

	pthread_mutex_lock(&cd->lock);
	ret = log_append(cd, 0, NULL, 0);
	if (!ret)
		cd->nr_flushes++;
	pthread_mutex_unlock(&cd->lock);
	return ret;
}

static void crash_close(struct ubt_bdev *b)
{
	struct ubt_crash_dev *cd = b->priv;

	pthread_mutex_lock(&cd->lock);
	cd->view_open = false;
	pthread_mutex_unlock(&cd->lock);
}

static const struct ubt_bdev_ops crash_bdev_ops = {
	.read = crash_read, .write = crash_write, .flush = crash_flush, .close = crash_close,
};

int ubt_crash_open(const char *path, struct ubt_crash_dev **out)
{
	struct ubt_crash_dev *cd;
	struct stat st;
	int ret;

	cd = calloc(1, sizeof(*cd));
	if (!cd)
		return -ENOMEM;
	cd->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (cd->fd < 0) {
		ret = -errno;
		ubt_err("cannot open %s: %s", path, strerror(errno));
		goto fail;
	}
	if (fstat(cd->fd, &st)) {
		ret = -errno;
		goto fail;
	}
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(cd->fd, BLKGETSIZE64, &cd->size)) {
			ret = -errno;
			goto fail;
		}
	} else {
		cd->size = (u64)st.st_size;
	}
	cd->nr_blocks = (cd->size + CRASH_BLOCK - 1) / CRASH_BLOCK;
	cd->blocks = calloc(cd->nr_blocks ? cd->nr_blocks : 1, sizeof(*cd->blocks));
	cd->path = strdup(path);
	if (!cd->blocks || !cd->path) {
		ret = -ENOMEM;
		goto fail;
	}
	pthread_mutex_init(&cd->lock, NULL);
	*out = cd;
	return 0;
fail:
	if (cd->fd >= 0)
		close(cd->fd);
	free(cd->blocks);
	free(cd->path);
	free(cd);
	return ret;
}

int ubt_crash_bdev(struct ubt_crash_dev *cd, struct ubt_bdev **out)
{
	struct ubt_bdev *b;
	size_t len = strlen(cd->path) + 8;

	if (cd->view_open)
		return -EBUSY;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->name = malloc(len);
	if (!b->name) {
		free(b);
		return -ENOMEM;
	}
	snprintf(b->name, len, "crash:%s", cd->path);
	b->ops = &crash_bdev_ops;
	b->priv = cd;
	b->size = cd->size;
	b->rdonly = false;
	cd->view_open = true;
	*out = b;
	return 0;
}

void ubt_crash_fail_writes(struct ubt_crash_dev *cd, u64 first, u64 count)
{
	pthread_mutex_lock(&cd->lock);
	cd->fail_first = first;
	cd->fail_count = count;
	pthread_mutex_unlock(&cd->lock);
}

u64 ubt_crash_nr_writes(struct ubt_crash_dev *cd)
{
	u64 n;

	pthread_mutex_lock(&cd->lock);
	n = cd->nr_writes;
	pthread_mutex_unlock(&cd->lock);
	return n;
}

u32 ubt_crash_nr_flushes(struct ubt_crash_dev *cd)
{
	u32 n;

	pthread_mutex_lock(&cd->lock);
	n = cd->nr_flushes;
	pthread_mutex_unlock(&cd->lock);
	return n;
}

/* Copy the base image into @fd: a reflink when the filesystem can, else its data ranges only. */
static int copy_base(struct ubt_crash_dev *cd, int fd)
{
	u8 *buf = NULL;
	off_t pos = 0;
	int ret = 0;

	if (ioctl(fd, FICLONE, cd->fd) == 0)
		return 0;
	if (ftruncate(fd, (off_t)cd->size))
		return -errno;
	buf = malloc(1 << 20);
	if (!buf)
		return -ENOMEM;
	while ((u64)pos < cd->size) {
		off_t data = lseek(cd->fd, pos, SEEK_DATA), hole;

		if (data < 0) {
			if (errno == ENXIO) /* only a hole is left */
				break;
			data = pos; /* no SEEK_DATA: copy everything */
			hole = (off_t)cd->size;
		} else {
			hole = lseek(cd->fd, data, SEEK_HOLE);
			if (hole < 0)
				hole = (off_t)cd->size;
		}
		for (pos = data; pos < hole;) {
			size_t n = (size_t)(hole - pos) < (1u << 20) ? (size_t)(hole - pos) : (1u << 20);

			ret = pread_full(cd->fd, buf, n, (u64)pos);
			if (!ret)
				ret = ubt_pwrite_all(fd, buf, n, (u64)pos);
			if (ret)
				goto out;
			pos += (off_t)n;
		}
	}
out:
	free(buf);
	return ret;
}

int ubt_crash_materialize(struct ubt_crash_dev *cd, u32 k, enum ubt_crash_mode mode, u64 seed,
			  const char *out_path, u64 *applied)
{
	u64 rng = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
	u64 count = 0;
	u32 flushes = 0;
	size_t i;
	int fd, ret;

	pthread_mutex_lock(&cd->lock);
	if (k > cd->nr_flushes) {
		ret = -EINVAL;
		goto unlock;
	}
	fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		ret = -errno;
		goto unlock;
	}
	ret = copy_base(cd, fd);
	if (ret)
		goto cleanup;
	for (i = 0; i < cd->nr_log; i++) {
		const struct crash_entry *e = &cd->log[i];

		if (!e->len) {
			if (++flushes > k)
				break;
			continue;
		}
		if (flushes == k && mode != UBT_CRASH_ALL) {
			/* Not yet flushed: on the disk or not. */
			if (mode == UBT_CRASH_FLUSHED)
				break;
			rng ^= rng << 13;
			rng ^= rng >> 7;
			rng ^= rng << 17;
			if (!(rng & 1))
				continue;
		}
		ret = ubt_pwrite_all(fd, e->data, e->len, e->off);
		if (ret)
			goto cleanup;
		count++;
	}
	if (applied)
		*applied = count;
cleanup:
	if (close(fd) && !ret)
		ret = -errno;
unlock:
	pthread_mutex_unlock(&cd->lock);
	return ret;
}

void ubt_crash_free(struct ubt_crash_dev *cd)
{
	if (!cd)
		return;
	for (u64 b = 0; b < cd->nr_blocks; b++)
		free(cd->blocks[b]);
	for (size_t i = 0; i < cd->nr_log; i++)
		free(cd->log[i].data);
	free(cd->blocks);
	free(cd->log);
	free(cd->path);
	close(cd->fd);
	pthread_mutex_destroy(&cd->lock);
	free(cd);
}
