/*
 * umount.c — `ubtrfs umount DIR`: unmount (umount(8) as root, fusermount3 -u otherwise) and wait
 * until the daemon that served DIR has finished its exit path and released the image, so the
 * image can be copied or mounted again as soon as the command returns.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fuse/ubt_fuse.h"

#define UBTF_DEFAULT_UMOUNT_TIMEOUT 60.0

void ubtf_umount_usage(FILE *out)
{
	fprintf(out,
		"usage: ubtrfs umount [-t SECONDS] [-v] DIR\n"
		"\n"
		"Unmount the ubtrfs mount on DIR and wait until its daemon has exited.\n"
		"\n"
		"  -t SECONDS   how long to wait for the daemon (default 60)\n"
		"  -v           say what is being waited for\n");
}

/* Run @argv, wait for it; returns its exit status, or -errno if it could not run. */
static int run(char *const argv[])
{
	pid_t pid;
	int status;

	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		execvp(argv[0], argv);
		fprintf(stderr, "ubtrfs: cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

int ubtf_cmd_umount(int argc, char **argv)
{
	double timeout = UBTF_DEFAULT_UMOUNT_TIMEOUT;
	const char *dir = NULL;
	char *mnt_real = NULL;
	bool verbose = false;
	pid_t pid = 0;
	int status = UBTF_EXIT_FAIL;
	int ret;

	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];

		if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
			ubtf_umount_usage(stdout);
			return UBTF_EXIT_OK;
		} else if (!strcmp(arg, "-v")) {
			verbose = true;
		} else if (!strcmp(arg, "-t")) {
			char *end;

			if (i + 1 >= argc) {
				ubtf_err("umount: -t needs a number of seconds");
				return UBTF_EXIT_USAGE;
			}
			timeout = strtod(argv[++i], &end);
			if (*end || !(timeout >= 0 && timeout <= 86400)) {
				ubtf_err("umount: invalid timeout '%s'", argv[i]);
				return UBTF_EXIT_USAGE;
			}
		} else if (arg[0] == '-' && arg[1]) {
			ubtf_err("umount: unknown option '%s'", arg);
			fprintf(stderr, "Try 'ubtrfs help umount'.\n");
			return UBTF_EXIT_USAGE;
		} else if (dir) {
			ubtf_err("umount: too many arguments ('%s')", arg);
			return UBTF_EXIT_USAGE;
		} else {
			dir = arg;
		}
	}
	if (!dir) {
		ubtf_err("umount: expected DIR");
		fprintf(stderr, "Try 'ubtrfs help umount'.\n");
		return UBTF_EXIT_USAGE;
	}

	mnt_real = ubtf_mnt_realpath(dir, &ret);
	if (!mnt_real) {
		ubtf_err("cannot resolve %s: %s", dir, strerror(-ret));
		goto cleanup;
	}
	ret = ubtf_pidfile_lookup(mnt_real, &pid);
	if (ret && ret != -ENOENT)
		ubtf_err("warning: cannot read the daemon record for %s: %s", dir, strerror(-ret));

	if (geteuid() == 0) {
		char *const cmd[] = { "umount", mnt_real, NULL };

		ret = run(cmd);
	} else {
		char *const cmd[] = { "fusermount3", "-u", mnt_real, NULL };

		ret = run(cmd);
	}
	if (ret) {
		if (ret < 0)
			ubtf_err("cannot unmount %s: %s", dir, strerror(-ret));
		else
			ubtf_err("unmounting %s failed", dir);
		goto cleanup;
	}
	if (!pid) {
		if (verbose)
			fprintf(stderr, "ubtrfs: no running ubtrfs daemon recorded for %s; not waiting\n",
				dir);
		status = UBTF_EXIT_OK;
		goto cleanup;
	}
	if (verbose)
		fprintf(stderr, "ubtrfs: waiting for daemon %ld serving %s to exit\n", (long)pid, dir);
	ret = ubtf_pidfile_wait(mnt_real, pid, timeout);
	if (ret == -ETIMEDOUT) {
		ubtf_err("%s is unmounted, but its daemon (pid %ld) has not exited after %.0f s; the "
			 "image may still be in use", dir, (long)pid, timeout);
		goto cleanup;
	}
	if (ret) {
		ubtf_err("waiting for daemon %ld: %s", (long)pid, strerror(-ret));
		goto cleanup;
	}
	status = UBTF_EXIT_OK;
cleanup:
	free(mnt_real);
	return status;
}
