/*
 * mount.c — `ubtrfs mount`: validate the arguments, the image and the mountpoint, open the image
 * with the library, mount the FUSE session and serve it with a multithreaded loop.
 *
 * Backgrounding: the process forks *before* the library opens the image (the library may start
 * threads, and its flock must belong to the daemon), but the parent does not return until the
 * child reports over a pipe that the image is open and the mount is in place. So every failure
 * (bad option, bad image, image in use, busy mountpoint) gives a message and a non-zero exit from
 * `ubtrfs mount`, and the failed child has already exited and been reaped: no daemon is left.
 *
 * Read-write is the default. The library locks the image (exclusively for read-write) and
 * commits in ubt_unmount, which runs in the session's destroy however the loop ends (umount,
 * fusermount3 -u, SIGTERM/SIGINT/SIGHUP); the daemon record is released only after that, so
 * `ubtrfs umount` returns with the image committed and free.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fuse/ubt_fuse.h"

/* Undo mountinfo's octal escapes (\040 for a space, ...) in place. */
static void unescape_mountinfo(char *s)
{
	char *w = s;

	for (char *r = s; *r; r++) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
		    r[3] >= '0' && r[3] <= '7') {
			*w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
			r += 3;
		} else {
			*w++ = *r;
		}
	}
	*w = '\0';
}

/* Is @path (a real path) a mount point? */
static bool is_mountpoint(const char *path)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL;
	size_t cap = 0;
	bool found = false;

	if (!f)
		return false;
	while (!found && getline(&line, &cap, f) > 0) {
		char *save = NULL, *tok = strtok_r(line, " ", &save);

		for (int i = 1; tok && i < 5; i++)
			tok = strtok_r(NULL, " ", &save);
		if (!tok)
			continue;
		unescape_mountinfo(tok);
		found = strcmp(tok, path) == 0;
	}
	free(line);
	fclose(f);
	return found;
}

/* Check the mountpoint; on success *@real is its canonical path. Prints the reason on failure. */
static int check_mountpoint(const char *dir, char **real)
{
	struct stat st;
	int err;

	*real = NULL;
	if (stat(dir, &st)) {
		err = errno;
		if (err == ENOTCONN)
			ubtf_err("mountpoint %s is a disconnected FUSE mount; run 'ubtrfs umount %s' first",
				 dir, dir);
		else if (err == ENOENT)
			ubtf_err("mountpoint %s does not exist", dir);
		else
			ubtf_err("cannot access mountpoint %s: %s", dir, strerror(err));
		return -err;
	}
	if (!S_ISDIR(st.st_mode)) {
		ubtf_err("mountpoint %s is not a directory", dir);
		return -ENOTDIR;
	}
	*real = realpath(dir, NULL);
	if (!*real) {
		err = errno;
		ubtf_err("cannot resolve mountpoint %s: %s", dir, strerror(err));
		return -err;
	}
	if (is_mountpoint(*real)) {
		ubtf_err("mountpoint %s is busy: something is already mounted there", dir);
		free(*real);
		*real = NULL;
		return -EBUSY;
	}
	return 0;
}

/* Check the image exists and is a file or block device. */
static int check_image(const char *image, char **real)
{
	struct stat st;
	int err;

	*real = realpath(image, NULL);
	if (!*real || stat(*real, &st)) {
		err = errno;
		ubtf_err("cannot open image %s: %s", image, strerror(err));
		free(*real);
		*real = NULL;
		return -err;
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		ubtf_err("%s is neither a regular file nor a block device", image);
		free(*real);
		*real = NULL;
		return -EINVAL;
	}
	return 0;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/*
 * Wait, silently, until the advisory lock the library takes on the image (shared for a
 * read-only mount, exclusive otherwise) could be had, or until @deadline_ms has passed.
 */
static void wait_for_image_lock(const char *image, bool ro, unsigned *waited_ms,
				unsigned limit_ms)
{
	int fd = open(image, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return;
	while (*waited_ms < limit_ms) {
		if (flock(fd, (ro ? LOCK_SH : LOCK_EX) | LOCK_NB) == 0) {
			flock(fd, LOCK_UN);
			break;
		}
		if (errno != EWOULDBLOCK)
			break;
		sleep_ms(50);
		*waited_ms += 50;
	}
	close(fd);
}

/* ubt_mount, retrying while the image is locked (a previous daemon may still be exiting). */
static int open_image(const char *image, const char *shown, const struct ubtf_mount_args *a,
		      ubt_fs **fs)
{
	struct ubt_mount_opts mo = {
		.flags = (a->ro ? UBT_MOUNT_RDONLY : 0) | (a->nologreplay ? UBT_MOUNT_NOLOGREPLAY : 0) |
			 (a->nodatacow ? UBT_MOUNT_NODATACOW : 0) | (a->nodatasum ? UBT_MOUNT_NODATASUM : 0),
		.subvol = a->subvol,
		.subvolid = a->subvolid,
		.cache_bytes = a->cache_bytes,
		.page_cache_bytes = a->page_cache_bytes,
		.commit_interval = a->commit_interval,
		.compress = a->compress,
		.compress_force = a->compress_force,
	};
	unsigned waited_ms = 0, limit_ms = (unsigned)(a->lock_timeout * 1000.0);
	int ret;

	for (;;) {
		ret = ubt_mount(image, &mo, fs);
		if (ret != -EBUSY || waited_ms >= limit_ms)
			break;
		if (waited_ms == 0 && limit_ms)
			ubtf_err("%s is in use; waiting up to %g s for it to be released", shown,
				 a->lock_timeout);
		wait_for_image_lock(image, a->ro, &waited_ms, limit_ms);
		sleep_ms(20);
		waited_ms += 20;
	}
	if (ret == -EBUSY)
		ubtf_err("cannot mount %s: the image is in use (locked by another ubtrfs mount or "
			 "program); unmount it first", shown);
	else if (ret == -ENOENT && a->subvol)
		ubtf_err("cannot mount %s: subvolume '%s' not found", shown, a->subvol);
	else if (ret == -ENOENT && a->subvolid)
		ubtf_err("cannot mount %s: subvolume id %llu not found", shown,
			 (unsigned long long)a->subvolid);
	else if (ret == -EROFS && !a->ro)
		ubtf_err("cannot mount %s read-write: %s (the reason is given above); mount it with "
			 "-o ro", shown, ubt_strerror(ret));
	else if (ret)
		ubtf_err("cannot mount %s: %s", shown, ubt_strerror(ret));
	return ret;
}

static int build_fuse_args(const struct ubtf_mount_args *a, const char *image_real,
			   struct fuse_args *args)
{
	char *opts = NULL;
	char *fsname = NULL;
	int ret = -ENOMEM;

	if (fuse_opt_add_arg(args, "ubtrfs"))
		goto cleanup;
	if (a->debug && fuse_opt_add_arg(args, "-d"))
		goto cleanup;
	if (fuse_opt_add_opt(&opts, "default_permissions"))
		goto cleanup;
	if (a->ro && fuse_opt_add_opt(&opts, "ro"))
		goto cleanup;
	if (!a->have_fsname) {
		if (asprintf(&fsname, "fsname=%s", image_real) < 0) {
			fsname = NULL;
			goto cleanup;
		}
		if (fuse_opt_add_opt_escaped(&opts, fsname))
			goto cleanup;
	}
	if (!a->have_subtype && fuse_opt_add_opt(&opts, "subtype=ubtrfs"))
		goto cleanup;
	if (a->fuse_opts && fuse_opt_add_opt(&opts, a->fuse_opts))
		goto cleanup;
	if (fuse_opt_add_arg(args, "-o") || fuse_opt_add_arg(args, opts))
		goto cleanup;
	ret = 0;
cleanup:
	free(opts);
	free(fsname);
	return ret;
}

/* Tell the waiting parent how startup went (an exit status), once. */
static void report(int *fd, int status)
{
	unsigned char c = (unsigned char)status;

	if (*fd < 0)
		return;
	if (write(*fd, &c, 1) != 1) {
		/* the parent is gone; nothing to tell */
	}
	close(*fd);
	*fd = -1;
}

/* The parent side of backgrounding: wait for the child's verdict and return it. */
static int wait_for_child(pid_t child, int rfd)
{
	unsigned char c;
	ssize_t n;
	int status;

	do {
		n = read(rfd, &c, 1);
	} while (n < 0 && errno == EINTR);
	close(rfd);
	if (n == 1 && c == UBTF_EXIT_OK)
		return UBTF_EXIT_OK;
	while (waitpid(child, &status, 0) < 0 && errno == EINTR)
		;
	if (n == 1)
		return c;
	ubtf_err("the daemon exited during startup");
	return UBTF_EXIT_FAIL;
}

static void detach_stdio(void)
{
	int fd = open("/dev/null", O_RDWR | O_CLOEXEC);

	if (fd < 0)
		return;
	dup2(fd, STDIN_FILENO);
	dup2(fd, STDOUT_FILENO);
	dup2(fd, STDERR_FILENO);
	if (fd > STDERR_FILENO)
		close(fd);
}

int ubtf_cmd_mount(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct ubtf_pidfile pf = { .fd = -1 };
	struct fuse_loop_config *loop_cfg = NULL;
	struct fuse_session *se = NULL;
	struct ubtf_mount_args a;
	struct ubtf_ctx ctx;
	char *image_real = NULL, *mnt_real = NULL;
	bool mounted = false, handlers = false;
	int status_fd = -1;
	int status = UBTF_EXIT_FAIL;
	int ret;

	memset(&ctx, 0, sizeof(ctx));
	if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		ubtf_mount_usage(stdout);
		return UBTF_EXIT_OK;
	}
	if (ubtf_parse_mount_args(argc, argv, &a)) {
		fprintf(stderr, "Try 'ubtrfs help mount'.\n");
		ubtf_mount_args_free(&a);
		return UBTF_EXIT_USAGE;
	}
	if (a.subvol && a.subvolid) {
		ubtf_err("give subvol= or subvolid=, not both");
		status = UBTF_EXIT_USAGE;
		goto cleanup;
	}
	if (ubtf_log_open(a.logfile)) {
		status = UBTF_EXIT_USAGE;
		goto cleanup;
	}
	if (check_image(a.image, &image_real) || check_mountpoint(a.mntpoint, &mnt_real))
		goto cleanup;
	if (build_fuse_args(&a, image_real, &args)) {
		ubtf_err("out of memory");
		goto cleanup;
	}

	ctx.entry_timeout = a.entry_timeout;
	ctx.attr_timeout = a.attr_timeout;
	ctx.negative_timeout = a.negative_timeout;
	ctx.rdonly = a.ro;
	ctx.acl = a.acl;
	ctx.writeback_cache = a.writeback_cache && !a.ro;
	ctx.debug = a.debug;
	/* Validates the FUSE options; opens nothing yet. */
	se = fuse_session_new(&args, &ubtf_ops, sizeof(ubtf_ops), &ctx);
	ctx.se = se;
	if (!se) {
		ubtf_err("invalid FUSE mount options");
		status = UBTF_EXIT_USAGE;
		goto cleanup;
	}

	if (!a.foreground) {
		int pfd[2];
		pid_t child;

		fflush(NULL);
		if (pipe2(pfd, O_CLOEXEC)) {
			ubtf_err("pipe: %s", strerror(errno));
			goto cleanup;
		}
		child = fork();
		if (child < 0) {
			ubtf_err("fork: %s", strerror(errno));
			close(pfd[0]);
			close(pfd[1]);
			goto cleanup;
		}
		if (child > 0) {
			close(pfd[1]);
			status = wait_for_child(child, pfd[0]);
			goto cleanup;
		}
		close(pfd[0]);
		status_fd = pfd[1];
		setsid();
		signal(SIGPIPE, SIG_IGN); /* the parent may be gone when we report */
	}

	ubtf_log_install_crash_handler();
	ubt_set_log_level(a.debug ? 3 : 1);
	ret = open_image(image_real, a.image, &a, &ctx.fs);
	if (ret)
		goto cleanup;
	if (fuse_set_signal_handlers(se)) {
		ubtf_err("cannot install signal handlers");
		goto cleanup;
	}
	handlers = true;
	if (fuse_session_mount(se, mnt_real)) {
		ubtf_err("cannot mount on %s (see the message above)", a.mntpoint);
		goto cleanup;
	}
	mounted = true;
	ret = ubtf_pidfile_create(mnt_real, image_real, &pf);
	if (ret)
		ubtf_err("warning: cannot write the daemon record (%s); 'ubtrfs umount' will not "
			 "wait for this daemon", strerror(-ret));

	if (chdir("/")) {
		/* not fatal */
	}
	if (!a.foreground) {
		report(&status_fd, UBTF_EXIT_OK);
		detach_stdio();
		ubtf_log_daemonize();
	}
	ubtf_note("mounted %s on %s (%s)", image_real, mnt_real, a.ro ? "read-only" : "read-write");

	loop_cfg = fuse_loop_cfg_create();
	if (!loop_cfg) {
		ubtf_err("out of memory");
		goto cleanup;
	}
	fuse_loop_cfg_set_max_threads(loop_cfg, a.max_threads);
	ret = fuse_session_loop_mt(se, loop_cfg);
	status = (ret == 0 || ret == SIGINT || ret == SIGTERM || ret == SIGHUP) ? UBTF_EXIT_OK
										 : UBTF_EXIT_FAIL;

cleanup:
	if (mounted)
		fuse_session_unmount(se);
	if (handlers)
		fuse_remove_signal_handlers(se);
	if (se)
		fuse_session_destroy(se); /* runs op_destroy -> ubt_unmount when init happened */
	if (ctx.fs) {
		ctx.unmount_ret = ubt_unmount(ctx.fs);
		ctx.fs = NULL;
		if (ctx.unmount_ret)
			ubtf_err("unmount: %s", ubt_strerror(ctx.unmount_ret));
	}
	if (ctx.unmount_ret)
		status = UBTF_EXIT_FAIL;
	if (mounted)
		ubtf_note("unmounted %s (%s)", mnt_real, status == UBTF_EXIT_OK ? "clean" : "with errors");
	/* Last: releasing the record tells `ubtrfs umount` the image is free. */
	ubtf_pidfile_remove(&pf);
	report(&status_fd, status);
	if (loop_cfg)
		fuse_loop_cfg_destroy(loop_cfg);
	fuse_opt_free_args(&args);
	free(image_real);
	free(mnt_real);
	ubtf_mount_args_free(&a);
	ubtf_log_close();
	return status;
}
