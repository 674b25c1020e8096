/*
 * pidfile.c — runtime records of running daemons, so `ubtrfs umount` can wait for one to exit.
 *
 * One file per mountpoint, named by a hash of the mountpoint's real path, in /run/ubtrfs (root),
 * $XDG_RUNTIME_DIR/ubtrfs, or /tmp/ubtrfs-UID. It holds "PID\nMOUNTPOINT\nIMAGE\n". The daemon
 * holds an exclusive flock on it from mount until the very end of its exit path (after
 * ubt_unmount released the image), so a waiter that obtains the lock knows the daemon is done
 * even if it crashed and never removed the file.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fuse/ubt_fuse.h"

static double now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

char *ubtf_mnt_realpath(const char *dir, int *err)
{
	char *res = realpath(dir, NULL);
	char *copy = NULL, *parent = NULL, *slash, *out = NULL;
	const char *base;

	if (res || errno != ENOTCONN) {
		*err = res ? 0 : -errno;
		return res;
	}
	/* A disconnected FUSE mount cannot be stat'ed: resolve its parent and append the name. */
	copy = strdup(dir);
	if (!copy)
		goto nomem;
	while (strlen(copy) > 1 && copy[strlen(copy) - 1] == '/')
		copy[strlen(copy) - 1] = '\0';
	slash = strrchr(copy, '/');
	if (slash) {
		*slash = '\0';
		base = slash + 1;
		parent = realpath(*copy ? copy : "/", NULL);
	} else {
		base = copy;
		parent = realpath(".", NULL);
	}
	if (!parent) {
		*err = -errno;
		goto out;
	}
	if (asprintf(&out, "%s/%s", strcmp(parent, "/") ? parent : "", base) < 0) {
		out = NULL;
		goto nomem;
	}
	*err = 0;
	goto out;
nomem:
	*err = -ENOMEM;
out:
	free(copy);
	free(parent);
	return out;
}

static char *runtime_dir(void)
{
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	char *dir = NULL;
	int r;

	if (geteuid() == 0)
		r = asprintf(&dir, "/run/ubtrfs");
	else if (xdg && *xdg == '/')
		r = asprintf(&dir, "%s/ubtrfs", xdg);
	else
		r = asprintf(&dir, "/tmp/ubtrfs-%u", (unsigned)geteuid());
	return r < 0 ? NULL : dir;
}

static char *record_path(const char *mnt_real)
{
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
	char *dir = runtime_dir();
	char *path = NULL;

	if (!dir)
		return NULL;
	for (const unsigned char *p = (const unsigned char *)mnt_real; *p; p++) {
		h ^= *p;
		h *= 0x100000001b3ull;
	}
	if (asprintf(&path, "%s/%016llx.pid", dir, (unsigned long long)h) < 0)
		path = NULL;
	free(dir);
	return path;
}

int ubtf_pidfile_create(const char *mnt_real, const char *image_real, struct ubtf_pidfile *pf)
{
	double deadline = now_sec() + 5.0;
	char *dir = runtime_dir();
	struct stat a, b;
	int fd = -1;
	int ret;

	pf->fd = -1;
	pf->path = NULL;
	if (!dir)
		return -ENOMEM;
	if (mkdir(dir, 0755) && errno != EEXIST) {
		ret = -errno;
		goto cleanup;
	}
	pf->path = record_path(mnt_real);
	if (!pf->path) {
		ret = -ENOMEM;
		goto cleanup;
	}
	for (;;) {
		fd = open(pf->path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
		if (fd < 0) {
			ret = -errno;
			goto cleanup;
		}
		if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
			/* Still the file at that path (not one a previous daemon just removed)? */
			if (fstat(fd, &a) == 0 && stat(pf->path, &b) == 0 && a.st_ino == b.st_ino &&
			    a.st_dev == b.st_dev)
				break;
		} else if (errno != EWOULDBLOCK) {
			ret = -errno;
			goto cleanup;
		} else if (now_sec() > deadline) {
			ret = -EBUSY; /* a previous daemon on this mountpoint is still exiting */
			goto cleanup;
		} else {
			sleep_ms(50);
		}
		close(fd);
		fd = -1;
	}
	if (ftruncate(fd, 0) || dprintf(fd, "%ld\n%s\n%s\n", (long)getpid(), mnt_real,
					 image_real) < 0) {
		ret = -errno;
		unlink(pf->path);
		goto cleanup;
	}
	pf->fd = fd;
	fd = -1;
	ret = 0;
cleanup:
	if (fd >= 0)
		close(fd);
	if (ret) {
		free(pf->path);
		pf->path = NULL;
	}
	free(dir);
	return ret;
}

void ubtf_pidfile_remove(struct ubtf_pidfile *pf)
{
	if (pf->fd >= 0) {
		unlink(pf->path); /* while still locked: nobody reuses a stale record */
		close(pf->fd);
	}
	free(pf->path);
	pf->fd = -1;
	pf->path = NULL;
}

/* Open and parse the record; on success *@fd is open on it. */
static int open_record(const char *mnt_real, pid_t *pid, int *fdp)
{
	char *path = record_path(mnt_real);
	char buf[PATH_MAX * 2 + 64];
	char *nl, *mnt;
	ssize_t n;
	long v;
	int fd = -1;
	int ret;

	if (!path)
		return -ENOMEM;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		ret = -errno;
		goto cleanup;
	}
	n = pread(fd, buf, sizeof(buf) - 1, 0);
	if (n <= 0) {
		ret = -ENOENT;
		goto cleanup;
	}
	buf[n] = '\0';
	v = strtol(buf, &nl, 10);
	if (v <= 0 || *nl != '\n') {
		ret = -ENOENT;
		goto cleanup;
	}
	mnt = nl + 1;
	nl = strchr(mnt, '\n');
	if (!nl) {
		ret = -ENOENT;
		goto cleanup;
	}
	*nl = '\0';
	if (strcmp(mnt, mnt_real)) {
		ret = -ENOENT; /* a hash collision: not our record */
		goto cleanup;
	}
	*pid = (pid_t)v;
	*fdp = fd;
	fd = -1;
	ret = 0;
cleanup:
	if (fd >= 0)
		close(fd);
	free(path);
	return ret;
}

int ubtf_pidfile_lookup(const char *mnt_real, pid_t *pid)
{
	int fd = -1;
	int ret = open_record(mnt_real, pid, &fd);

	if (ret == 0) {
		/* Nobody holds the lock: the daemon is gone, the record is stale. */
		if (flock(fd, LOCK_SH | LOCK_NB) == 0)
			ret = -ENOENT;
		close(fd);
	}
	return ret;
}

/* A process that is gone or a zombie (its parent may never reap it) has exited. */
static bool pid_exited(pid_t pid)
{
	char path[64], buf[512];
	char *rp;
	FILE *f;
	bool gone = true;

	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	f = fopen(path, "re");
	if (!f)
		return true;
	if (fgets(buf, sizeof(buf), f)) {
		rp = strrchr(buf, ')');
		gone = rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X');
	}
	fclose(f);
	return gone;
}

int ubtf_pidfile_wait(const char *mnt_real, pid_t pid, double timeout)
{
	double deadline = now_sec() + timeout;
	pid_t rec_pid;
	int fd = -1;
	int ret;

	ret = open_record(mnt_real, &rec_pid, &fd);
	if (ret == 0 && rec_pid == pid) {
		while (flock(fd, LOCK_SH | LOCK_NB)) {
			if (errno != EWOULDBLOCK) {
				ret = -errno;
				goto cleanup;
			}
			if (now_sec() > deadline) {
				ret = -ETIMEDOUT;
				goto cleanup;
			}
			sleep_ms(20);
		}
	}
	/* The record is released (or already removed): wait for the process itself. */
	while (!pid_exited(pid)) {
		if (now_sec() > deadline) {
			ret = -ETIMEDOUT;
			goto cleanup;
		}
		sleep_ms(20);
	}
	ret = 0;
cleanup:
	if (fd >= 0)
		close(fd);
	return ret;
}
