/* mkfs.h — `ubtrfs mkfs`: the CLI entry point that creates a fresh btrfs filesystem. */
#ifndef UBT_TOOLS_MKFS_H
#define UBT_TOOLS_MKFS_H

#include <stdio.h>

/*
 * Run `ubtrfs mkfs [OPTIONS] DEVICE` (argv[0] is the subcommand name). Returns the process exit
 * status: 0 success, 1 failure (message printed), 2 usage error.
 */
int ubt_cmd_mkfs(int argc, char **argv);
/* Print the option summary of `ubtrfs mkfs` to @out. */
void ubt_mkfs_usage(FILE *out);

#endif
