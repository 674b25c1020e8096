/*
 * main.c — the `ubtrfs` command-line program: a table of subcommands (mount, umount, help,
 * version; mkfs and dump-tree will join it) and the exit-status convention: 0 success,
 * 1 failure, 2 usage error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuse/ubt_fuse.h"
#include "tools/mkfs.h"
#include "ubtrfs.h"

struct ubt_cmd {
	const char *name;
	const char *alias;
	int (*run)(int argc, char **argv); /* argv[0] is the subcommand name */
	void (*usage)(FILE *out);
	const char *summary;
};

static int cmd_help(int argc, char **argv);
static int cmd_version(int argc, char **argv);

static const struct ubt_cmd cmds[] = {
	{ "mount", NULL, ubtf_cmd_mount, ubtf_mount_usage, "mount a btrfs image through FUSE" },
	{ "umount", "unmount", ubtf_cmd_umount, ubtf_umount_usage,
	  "unmount and wait for the daemon to exit" },
	{ "mkfs", NULL, ubt_cmd_mkfs, ubt_mkfs_usage, "create a btrfs filesystem" },
	{ "help", NULL, cmd_help, NULL, "show help for a command" },
	{ "version", NULL, cmd_version, NULL, "print the version" },
};

static const struct ubt_cmd *find_cmd(const char *name)
{
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		if (!strcmp(cmds[i].name, name) || (cmds[i].alias && !strcmp(cmds[i].alias, name)))
			return &cmds[i];
	}
	return NULL;
}

static void usage(FILE *out)
{
	fprintf(out, "usage: ubtrfs COMMAND [ARGS...]\n\nbtrfs in userspace, version %s.\n\n"
		     "Commands:\n", UBT_VERSION);
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		fprintf(out, "  %-10s %s\n", cmds[i].name, cmds[i].summary);
	fprintf(out, "\nRun 'ubtrfs help COMMAND' for a command's options.\n");
}

static int cmd_help(int argc, char **argv)
{
	const struct ubt_cmd *c;

	if (argc < 2) {
		usage(stdout);
		return UBTF_EXIT_OK;
	}
	c = find_cmd(argv[1]);
	if (!c) {
		ubtf_err("unknown command '%s'", argv[1]);
		return UBTF_EXIT_USAGE;
	}
	if (c->usage)
		c->usage(stdout);
	else
		printf("ubtrfs %s: %s\n", c->name, c->summary);
	return UBTF_EXIT_OK;
}

static int cmd_version(int argc, char **argv)
{
	printf("ubtrfs %s (FUSE %d.%d)\n", UBT_VERSION, FUSE_MAJOR_VERSION, FUSE_MINOR_VERSION);
	return UBTF_EXIT_OK;
}

int main(int argc, char **argv)
{
	const struct ubt_cmd *c;

	if (argc < 2) {
		usage(stderr);
		return UBTF_EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V"))
		return cmd_version(argc - 1, argv + 1);
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
		return cmd_help(1, argv + 1);
	c = find_cmd(argv[1]);
	if (!c) {
		ubtf_err("unknown command '%s'", argv[1]);
		usage(stderr);
		return UBTF_EXIT_USAGE;
	}
	return c->run(argc - 1, argv + 1);
}
